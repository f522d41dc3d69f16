//! The virtio-blk device: configuration space, features, and the worker
//! thread started at DRIVER_OK.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

use super::event_handler::BlockWorker;
use super::request::{ID_BYTES, SECTOR_SIZE};
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::worker::Worker;
use crate::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, TYPE_BLOCK,
};

/// VIRTIO_BLK_F_SEG_MAX: `seg_max` is valid.
pub const F_SEG_MAX: u64 = 1 << 2;
/// VIRTIO_BLK_F_RO: the disk is read-only.
pub const F_RO: u64 = 1 << 5;
/// VIRTIO_BLK_F_BLK_SIZE: `blk_size` is valid.
pub const F_BLK_SIZE: u64 = 1 << 6;
/// VIRTIO_BLK_F_FLUSH: FLUSH requests are honoured.
pub const F_FLUSH: u64 = 1 << 9;

/// Queue size (one queue).
pub const QUEUE_SIZE: u16 = 256;
/// Data buffers per request the driver may use (header and status take two
/// more descriptors).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;

/// A disk as the user configured it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse writes (and tell the guest so).
    pub read_only: bool,
    /// GET_ID answer (at most 20 bytes).
    pub serial: Option<String>,
    /// Cap in bytes per second.
    pub bandwidth: Option<u64>,
    /// Cap in requests per second.
    pub iops: Option<u64>,
}

/// Why a disk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image cannot be opened.
    #[error("disk {path}: cannot open{mode}: {source}")]
    Open {
        /// Image path.
        path: PathBuf,
        /// " read-write" or "".
        mode: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The image is not a regular file.
    #[error("disk {0}: not a regular file")]
    NotAFile(PathBuf),
    /// The size is not a whole number of sectors.
    #[error("disk {path}: size {size} bytes is not a multiple of 512 (resize it, e.g. `truncate -s %512 {path}`)")]
    Size {
        /// Image path.
        path: PathBuf,
        /// Size in bytes.
        size: u64,
    },
    /// The image is empty.
    #[error("disk {0}: image is empty")]
    Empty(PathBuf),
    /// The serial is longer than virtio's 20 bytes.
    #[error("disk {path}: id {serial:?} is longer than {ID_BYTES} bytes")]
    Serial {
        /// Image path.
        path: PathBuf,
        /// The serial given.
        serial: String,
    },
}

/// The virtio-blk device.
pub struct Block {
    config: BlockConfig,
    file: File,
    capacity: u64,
    config_space: [u8; 24],
    worker: Option<Worker>,
}

impl Block {
    /// Opens and checks the image (size a positive multiple of 512, serial
    /// at most 20 bytes).
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        if let Some(s) = &config.serial {
            if s.len() > ID_BYTES {
                return Err(BlockError::Serial {
                    path: config.path.clone(),
                    serial: s.clone(),
                });
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!config.read_only)
            .open(&config.path)
            .map_err(|source| BlockError::Open {
                path: config.path.clone(),
                mode: if config.read_only { "" } else { " read-write" },
                source,
            })?;
        let meta = file.metadata().map_err(|source| BlockError::Open {
            path: config.path.clone(),
            mode: "",
            source,
        })?;
        if !meta.is_file() {
            return Err(BlockError::NotAFile(config.path.clone()));
        }
        let size = meta.len();
        if size == 0 {
            return Err(BlockError::Empty(config.path.clone()));
        }
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(BlockError::Size {
                path: config.path.clone(),
                size,
            });
        }
        let capacity = size / SECTOR_SIZE;
        let mut cs = [0u8; 24];
        cs[0..8].copy_from_slice(&capacity.to_le_bytes());
        cs[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        cs[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        Ok(Self {
            config,
            file,
            capacity,
            config_space: cs,
            worker: None,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.config.read_only { F_RO } else { 0 };
        F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC | ro
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let host = |what| move |source| ActivateError::Host { what, source };
        let file = self.file.try_clone().map_err(host("dup disk fd"))?;
        let mut queues = ctx.queues.into_iter();
        let mut events = ctx.queue_events.into_iter();
        let (Some(queue), Some(queue_event)) = (queues.next(), events.next()) else {
            return Err(ActivateError::BadQueue("virtio-blk needs one queue".into()));
        };
        let worker = BlockWorker {
            mem: ctx.mem,
            queue,
            queue_event,
            interrupt: ctx.interrupt,
            file,
            read_only: self.config.read_only,
            serial: self.config.serial.clone().unwrap_or_default().into_bytes(),
            capacity: self.capacity,
            limiter: RateLimiter::new(self.config.bandwidth, self.config.iops),
        };
        let name = format!(
            "virtio-blk {}",
            self.config
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let name: String = name.chars().take(15).collect();
        self.worker = Some(
            Worker::spawn(name, move |kill| worker.run(kill))
                .map_err(host("spawn virtio-blk thread"))?,
        );
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops and joins its thread.
        self.worker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn image(len: usize) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(len)
    }

    mod tempfile_path {
        use std::path::PathBuf;
        pub struct TempPath(pub PathBuf);
        impl TempPath {
            pub fn with(len: usize) -> Self {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let p =
                    std::env::temp_dir().join(format!("nimbus-blkdev-{}-{n}", std::process::id()));
                let mut f = std::fs::File::create(&p).unwrap();
                super::Write::write_all(&mut f, &vec![0u8; len]).unwrap();
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn size_not_multiple_of_512_is_refused() {
        let img = image(1000);
        let err = Block::new(BlockConfig {
            path: img.0.clone(),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("not a multiple of 512"), "{err}");
        let empty = image(0);
        assert!(Block::new(BlockConfig {
            path: empty.0.clone(),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn config_space_and_features() {
        let img = image(4096);
        let b = Block::new(BlockConfig {
            path: img.0.clone(),
            read_only: true,
            serial: Some("s".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(b.capacity(), 8);
        let mut cap = [0u8; 8];
        b.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
        assert_ne!(b.features() & F_RO, 0);
        let mut beyond = [0xffu8; 4];
        b.read_config(1000, &mut beyond);
        assert_eq!(beyond, [0; 4]);
    }

    #[test]
    fn long_serial_is_refused() {
        let img = image(512);
        assert!(Block::new(BlockConfig {
            path: img.0.clone(),
            serial: Some("x".repeat(21)),
            ..Default::default()
        })
        .is_err());
    }
}
