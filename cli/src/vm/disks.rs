//! Per-VM disks: new sparse data disks (formatted ext4 so the guest agent
//! can mount them), the VM's own copy of a root file system, and the guest
//! device names they get.

use std::path::Path;
use std::process::Command;

use super::error::{io_err, VmError};

/// Creates a sparse raw disk of `size_mib` at `path` and formats it ext4
/// (`mkfs.ext4` works on a plain file, no root or loop device needed).
pub fn create_data_disk(vm: &str, path: &Path, size_mib: u64) -> Result<(), VmError> {
    let f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(vm, "create disk", path))?;
    f.set_len(size_mib << 20)
        .map_err(io_err(vm, "size disk", path))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "nimbus-data", "-E", "nodiscard"])
        .arg(path)
        .output()
        .map_err(io_err(vm, "run mkfs.ext4 (e2fsprogs) for", path))?;
    if !out.status.success() {
        return Err(VmError::Image {
            vm: vm.to_string(),
            field: "disk",
            path: path.to_path_buf(),
            reason: format!(
                "mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Copies a root file system image for one VM, keeping it sparse.
pub fn copy_root(vm: &str, from: &Path, to: &Path) -> Result<(), VmError> {
    let out = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto", "--"])
        .arg(from)
        .arg(to)
        .output()
        .map_err(io_err(vm, "run cp for", to))?;
    if !out.status.success() {
        return Err(VmError::Image {
            vm: vm.to_string(),
            field: "rootfs",
            path: from.to_path_buf(),
            reason: format!(
                "cannot copy: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// The guest device of virtio disk `index` (0 = /dev/vda).
pub fn guest_device(index: usize) -> String {
    let mut name = String::new();
    let mut n = index;
    loop {
        name.insert(0, char::from(b'a' + (n % 26) as u8));
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    format!("/dev/vd{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(guest_device(0), "/dev/vda");
        assert_eq!(guest_device(1), "/dev/vdb");
        assert_eq!(guest_device(25), "/dev/vdz");
        assert_eq!(guest_device(26), "/dev/vdaa");
    }

    #[test]
    fn new_disk_is_sparse_ext4_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("nimbus-disks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.raw");
        let _ = std::fs::remove_file(&p);
        create_data_disk("t", &p, 64).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 32 << 20, "not sparse");
        let sb = std::fs::read(&p).unwrap();
        assert_eq!(&sb[0x438..0x43a], &[0x53, 0xef], "no ext4 superblock magic");
        assert!(create_data_disk("t", &p, 64).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
