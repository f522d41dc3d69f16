//! Persistent TAP devices through the TUN ioctls, the way a VMM expects
//! them: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, persistent, owned by the
//! uid that runs the VMM so it can open the TAP without root.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use crate::error::NetError;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates persistent TAP `name` (at most 15 bytes), owned by `owner`.
pub fn create(name: &str, owner: Option<u32>) -> Result<(), NetError> {
    let what = || format!("creating TAP {name}");
    if name.len() >= libc::IFNAMSIZ {
        return Err(NetError::host(what(), "name longer than 15 bytes"));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| NetError::host(what(), format!("/dev/net/tun: {e}")))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let fd = tun.as_raw_fd();
    // SAFETY: `fd` is an open /dev/net/tun descriptor and `req` is a
    // properly sized, initialized `struct ifreq` that outlives the call.
    if unsafe { libc::ioctl(fd, TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(NetError::host(what(), std::io::Error::last_os_error()));
    }
    if let Some(uid) = owner {
        // SAFETY: TUNSETOWNER takes the uid by value on a tun descriptor
        // attached to a device by the TUNSETIFF above.
        if unsafe { libc::ioctl(fd, TUNSETOWNER, libc::c_ulong::from(uid)) } < 0 {
            return Err(NetError::host(what(), std::io::Error::last_os_error()));
        }
    }
    // SAFETY: TUNSETPERSIST takes an integer flag by value; the device
    // outlives this descriptor once persistent.
    if unsafe { libc::ioctl(fd, TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(NetError::host(what(), std::io::Error::last_os_error()));
    }
    Ok(())
}
