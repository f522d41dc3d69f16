//! The TAP backend: a TAP interface opened by name with virtio-net headers
//! (IFF_VNET_HDR), so checksum and segmentation offloads pass through.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

// From <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// TUNSETOFFLOAD bits: what the TAP may hand us (= what the guest accepts).
pub mod offload {
    #![allow(missing_docs)]
    pub const CSUM: u32 = 0x01;
    pub const TSO4: u32 = 0x02;
    pub const TSO6: u32 = 0x04;
    pub const TSO_ECN: u32 = 0x08;
}

/// Size of `virtio_net_hdr_v1` (virtio 1.x always includes num_buffers).
pub const VNET_HDR_LEN: usize = 12;

/// Why a TAP cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// /dev/net/tun cannot be opened.
    #[error("open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    /// TUNSETIFF refused (no such TAP and no right to create it, busy, ...).
    #[error("TAP {name}: TUNSETIFF: {source}")]
    SetIff {
        /// Interface name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// Another TAP ioctl failed.
    #[error("TAP {name}: {what}: {source}")]
    Ioctl {
        /// Interface name.
        name: String,
        /// The ioctl.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// An open TAP queue.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ioctl_ptr<T>(fd: RawFd, req: libc::c_ulong, arg: *const T) -> io::Result<()> {
    // SAFETY: `fd` is an open TUN fd and `arg` points to a live value of the
    // type the ioctl expects (checked by each caller); the kernel copies it.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Tap {
    /// Attaches to TAP `name` (created if missing and allowed; netd normally
    /// creates persistent TAPs), non-blocking, with 12-byte vnet headers.
    pub fn open(name: &str) -> Result<Self, TapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(TapError::SetIff {
                name: name.into(),
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..bytes.len()].copy_from_slice(bytes);
        ioctl_ptr(file.as_raw_fd(), TUNSETIFF, &req).map_err(|source| TapError::SetIff {
            name: name.into(),
            source,
        })?;
        let hdr = VNET_HDR_LEN as libc::c_int;
        ioctl_ptr(file.as_raw_fd(), TUNSETVNETHDRSZ, &hdr).map_err(|source| TapError::Ioctl {
            name: name.into(),
            what: "TUNSETVNETHDRSZ",
            source,
        })?;
        Ok(Self {
            file,
            name: name.into(),
        })
    }

    /// Tells the TAP which offloads the guest accepts (TUNSETOFFLOAD).
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // TUNSETOFFLOAD takes the flags by value, not by pointer.
        // SAFETY: plain integer argument on an open TUN fd.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD as _,
                flags as libc::c_ulong,
            )
        };
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what: "TUNSETOFFLOAD",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Another handle on the same queue.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }

    /// Reads one frame (vnet header first); WouldBlock when none is queued.
    pub fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    /// Writes one frame (vnet header first).
    pub fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
