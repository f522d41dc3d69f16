//! Disk commands with O_DIRECT: the device moves the data straight into
//! or out of the agent's buffer, so the figures measure the virtio-blk
//! path and not the guest kernel's page-cache copies (on kvm-pvm those run
//! in the instruction emulator and would dominate). Timed inside the guest.
//!
//! * `dread PATH`       read the whole file or device in 1 MiB blocks
//!   -> `OK bytes=N secs=S mib_s=X`
//! * `dwrite PATH N`    write N bytes (rounded up to 4 KiB) in 1 MiB blocks,
//!   then fdatasync -> `OK bytes=N secs=S mib_s=X`
//! * `randread PATH N`  N reads of 4 KiB at random 4 KiB-aligned offsets
//!   -> `OK ops=N secs=S iops=X`

use std::fs::{File, OpenOptions};
use std::io::{self, Seek};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

const PAGE: usize = 4096;
const BLOCK: usize = 1 << 20;

/// A buffer of `len` bytes aligned to 4 KiB, as O_DIRECT requires.
struct Aligned {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + PAGE];
        let offset = storage.as_ptr().align_offset(PAGE);
        Aligned {
            storage,
            offset,
            len,
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

fn open(path: &str, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .create(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Size of a file or block device (whose metadata length is 0).
fn size(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len > 0 {
        return Ok(len);
    }
    let end = file.seek(io::SeekFrom::End(0))?;
    file.seek(io::SeekFrom::Start(0))?;
    Ok(end)
}

fn rate(bytes: u64, start: Instant) -> String {
    let secs = start.elapsed().as_secs_f64();
    let mib_s = if secs > 0.0 {
        bytes as f64 / f64::from(1u32 << 20) / secs
    } else {
        0.0
    };
    format!("OK bytes={bytes} secs={secs:.3} mib_s={mib_s:.2}")
}

/// `dread PATH`.
pub fn read(path: &str) -> io::Result<String> {
    let mut file = open(path, false)?;
    let total = size(&mut file)?;
    let mut buf = Aligned::new(BLOCK);
    let start = Instant::now();
    let mut at = 0u64;
    while at < total {
        let n = file.read_at(buf.as_mut(), at)?;
        if n == 0 {
            break;
        }
        at += n as u64;
    }
    Ok(rate(at, start))
}

/// `dwrite PATH N`.
pub fn write(path: &str, bytes: u64) -> io::Result<String> {
    let file = open(path, true)?;
    let mut buf = Aligned::new(BLOCK);
    nimbus_agent::stream_check::Pattern::new().fill(buf.as_mut());
    let total = bytes.div_ceil(PAGE as u64) * PAGE as u64;
    let start = Instant::now();
    let mut at = 0u64;
    while at < total {
        let n = (total - at).min(BLOCK as u64) as usize;
        file.write_all_at(&buf.as_mut()[..n], at)?;
        at += n as u64;
    }
    file.sync_data()?;
    Ok(rate(at, start))
}

/// `randread PATH N`.
pub fn random_read(path: &str, ops: u64) -> io::Result<String> {
    let mut file = open(path, false)?;
    let blocks = size(&mut file)? / PAGE as u64;
    if blocks == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "smaller than one 4 KiB block",
        ));
    }
    let mut buf = Aligned::new(PAGE);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let start = Instant::now();
    for _ in 0..ops {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        file.read_exact_at(buf.as_mut(), (x % blocks) * PAGE as u64)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let iops = if secs > 0.0 { ops as f64 / secs } else { 0.0 };
    Ok(format!("OK ops={ops} secs={secs:.3} iops={iops:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned() {
        for len in [PAGE, BLOCK] {
            let mut b = Aligned::new(len);
            let s = b.as_mut();
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % PAGE, 0);
        }
    }

    #[test]
    fn reads_writes_and_random_reads_a_file() {
        // tmpfs refuses O_DIRECT: use the crate's directory, on a disk.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!(".direct-io-test-{}", std::process::id()));
        let p = path.to_string_lossy().into_owned();
        let written = write(&p, 3 * BLOCK as u64 + 100);
        let back = read(&p);
        let random = random_read(&p, 50);
        let _ = std::fs::remove_file(&path);
        let answer = written.unwrap_or_else(|e| panic!("dwrite: {e}"));
        assert!(answer.starts_with("OK bytes=3149824 "), "{answer}");
        let back = back.unwrap_or_else(|e| panic!("dread: {e}"));
        assert!(back.starts_with("OK bytes=3149824 "), "{back}");
        let r = random.unwrap_or_else(|e| panic!("randread: {e}"));
        assert!(r.starts_with("OK ops=50 "), "{r}");
    }
}
