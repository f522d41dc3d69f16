//! The pseudo file systems PID 1 mounts at boot, and the data disks asked for
//! with `nimbus.disk=`.
//!
//! Each mount is tried first and its directory created only when the mount
//! says it is missing, so the usual case costs one syscall per mount.

use std::ffi::{CStr, CString};
use std::fs::DirBuilder;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::cmdline::DiskMount;
use crate::console::Console;

struct PseudoFs {
    source: &'static CStr,
    target: &'static CStr,
    fstype: &'static CStr,
    flags: libc::c_ulong,
    data: Option<&'static CStr>,
}

const PSEUDO_FILESYSTEMS: [PseudoFs; 3] = [
    PseudoFs {
        source: c"proc",
        target: c"/proc",
        fstype: c"proc",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    },
    PseudoFs {
        source: c"sysfs",
        target: c"/sys",
        fstype: c"sysfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    },
    PseudoFs {
        source: c"devtmpfs",
        target: c"/dev",
        fstype: c"devtmpfs",
        flags: libc::MS_NOSUID,
        data: Some(c"mode=0755"),
    },
];

/// Mounts proc, sysfs and devtmpfs. A failure is reported and the others are
/// still tried; one that is already mounted (EBUSY, e.g. the kernel's own
/// devtmpfs automount on a disk root) counts as done.
pub fn mount_pseudo_filesystems(console: &mut Console) {
    for fs in &PSEUDO_FILESYSTEMS {
        match mount_creating_dir(fs.source, fs.target, fs.fstype, fs.flags, fs.data) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {}
            Err(err) => console.error(&format!("mount {}", fs.target.to_string_lossy()), err),
        }
    }
}

/// Mounts a data disk (ext4) on its mount point, creating the directory.
pub fn mount_disk(disk: &DiskMount) -> io::Result<()> {
    let source = path_cstring(&disk.device)?;
    let target = path_cstring(&disk.mountpoint)?;
    mount_creating_dir(&source, &target, c"ext4", libc::MS_NOATIME, None)
}

fn path_cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn mount_creating_dir(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    match mount(source, target, fstype, flags, data) {
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
            let dir = Path::new(std::ffi::OsStr::from_bytes(target.to_bytes()));
            DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
            mount(source, target, fstype, flags, data)
        }
        other => other,
    }
}

fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: every pointer is a NUL-terminated string (or null for `data`)
    // that outlives the call; mount(2) only reads them.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
