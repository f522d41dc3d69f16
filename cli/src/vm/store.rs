//! The state directory: everything nimbus knows about VMs is here, so a
//! crashed CLI loses nothing (the rest is derived from live processes).
//!
//! ```text
//! <state>/vms/.lock              flock: creating and deleting VMs
//! <state>/vms/<name>/vm.json     the stored VM (spec + resolved boot files, NICs, disks)
//! <state>/vms/<name>/.lock       flock: start/stop/delete of this VM
//! <state>/vms/<name>/run.json    the running VMM: pid + its start time (pid reuse)
//! <state>/vms/<name>/exit.json   how the last VMM ended (vmm::exit_record)
//! <state>/vms/<name>/api.sock    the VMM's API
//! <state>/vms/<name>/console.sock, console.log (console.log.1: the run before)
//! <state>/vms/<name>/vmm.log     the VMM's stderr
//! <state>/vms/<name>/root.ext4, data<N>.raw   per-VM disks
//! ```
//!
//! JSON files are written atomically (temp + fsync + rename).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{io_err, VmError};
use super::spec::VmSpec;

/// Where the state lives unless `--state-dir` / `NIMBUS_STATE_DIR` say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nimbus";

/// Longest Unix socket path (sun_path is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

/// A netd NIC as the VM uses it (resolved from netd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicBinding {
    /// netd's NIC name.
    pub name: String,
    /// The TAP.
    pub tap: String,
    /// MAC address.
    pub mac: String,
    /// Private IP.
    pub ip: String,
    /// Subnet prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<String>,
}

/// A disk as the VMM gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskBinding {
    /// Image file.
    pub path: PathBuf,
    /// Read-only.
    pub read_only: bool,
    /// Where the guest mounts it, if anywhere.
    pub mount: Option<String>,
    /// Whether it lives in the VM's directory (deleted with the VM).
    pub owned: bool,
}

/// A created VM: the spec and what it was resolved to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredVm {
    /// What was asked for.
    pub spec: VmSpec,
    /// Kernel.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Root disk (/dev/vda), the VM's own copy.
    pub root_disk: Option<PathBuf>,
    /// Data disks, in order after the root disk.
    pub disks: Vec<DiskBinding>,
    /// NICs: eth0, eth1, ...
    pub nics: Vec<NicBinding>,
    /// When it was created (Unix seconds).
    pub created_at_unix_s: f64,
}

/// The VMM process of the current (or last) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Its pid.
    pub pid: u32,
    /// Its start time (field 22 of /proc/PID/stat): a different process
    /// that got the same pid later has another.
    pub start_time: u64,
    /// When it was started (Unix seconds).
    pub started_at_unix_s: f64,
}

/// An exclusive flock, released when dropped.
pub struct Lock {
    _file: File,
}

impl Lock {
    fn take(path: &Path, vm: &str) -> Result<Lock, VmError> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(vm, "open lock", path))?;
        // SAFETY: flock on a descriptor we own; blocks until granted.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(vm, "lock", path)(std::io::Error::last_os_error()));
        }
        Ok(Lock { _file: f })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(vm: &str, path: &Path) -> Result<Option<T>, VmError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| VmError::Io {
                vm: vm.to_string(),
                what: "parse",
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(vm, "read", path)(e)),
    }
}

fn write_json<T: Serialize>(vm: &str, path: &Path, value: &T) -> Result<(), VmError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| VmError::Io {
        vm: vm.to_string(),
        what: "encode",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    vmm::exit_record::write_atomic(path, &bytes).map_err(io_err(vm, "write", path))
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// Its path.
    #[allow(dead_code)] // library API (topology engine)
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state>/vms`.
    pub fn vms_dir(&self) -> PathBuf {
        self.root.join("vms")
    }

    /// Creates `<state>/vms` if needed and locks it (create/delete).
    pub fn lock(&self) -> Result<Lock, VmError> {
        let dir = self.vms_dir();
        std::fs::create_dir_all(&dir).map_err(io_err("-", "create", &dir))?;
        Lock::take(&dir.join(".lock"), "-")
    }

    /// The directory of VM `name` (which may not exist).
    pub fn vm(&self, name: &str) -> VmDir {
        VmDir {
            name: name.to_string(),
            path: self.vms_dir().join(name),
        }
    }

    /// Names of every VM, sorted.
    pub fn names(&self) -> Result<Vec<String>, VmError> {
        let dir = self.vms_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("-", "list", &dir)(e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join("vm.json").is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// One VM's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDir {
    /// The VM's name.
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
}

impl VmDir {
    /// vm.json.
    pub fn vm_file(&self) -> PathBuf {
        self.path.join("vm.json")
    }
    /// run.json.
    pub fn run_file(&self) -> PathBuf {
        self.path.join("run.json")
    }
    /// exit.json.
    pub fn exit_file(&self) -> PathBuf {
        self.path.join("exit.json")
    }
    /// api.sock.
    pub fn api_socket(&self) -> PathBuf {
        self.path.join("api.sock")
    }
    /// console.sock.
    pub fn console_socket(&self) -> PathBuf {
        self.path.join("console.sock")
    }
    /// console.log.
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }
    /// vmm.log.
    pub fn vmm_log(&self) -> PathBuf {
        self.path.join("vmm.log")
    }
    /// Whether the VM exists.
    pub fn exists(&self) -> bool {
        self.vm_file().is_file()
    }

    /// Checks that the socket paths fit in sun_path.
    pub fn check_socket_paths(&self) -> Result<(), VmError> {
        let longest = self.console_socket();
        let len = longest.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(VmError::Invalid {
                vm: self.name.clone(),
                field: "state-dir",
                reason: format!(
                    "socket path {} is {len} bytes; Unix sockets allow {MAX_SOCKET_PATH}: use a shorter --state-dir or name",
                    longest.display()
                ),
            });
        }
        Ok(())
    }

    /// Locks this VM (start, stop, delete).
    pub fn lock(&self) -> Result<Lock, VmError> {
        Lock::take(&self.path.join(".lock"), &self.name)
    }

    /// Reads vm.json.
    pub fn load(&self) -> Result<StoredVm, VmError> {
        read_json(&self.name, &self.vm_file())?.ok_or_else(|| VmError::NotFound(self.name.clone()))
    }

    /// Writes vm.json atomically.
    pub fn save(&self, vm: &StoredVm) -> Result<(), VmError> {
        write_json(&self.name, &self.vm_file(), vm)
    }

    /// Reads run.json.
    pub fn run_record(&self) -> Result<Option<RunRecord>, VmError> {
        read_json(&self.name, &self.run_file())
    }

    /// Writes run.json atomically.
    pub fn save_run_record(&self, r: &RunRecord) -> Result<(), VmError> {
        write_json(&self.name, &self.run_file(), r)
    }

    /// Reads exit.json (a broken one reads as none: the VMM died writing
    /// it, which the atomic write makes all but impossible).
    pub fn exit_record(&self) -> Option<vmm::exit_record::ExitRecord> {
        vmm::exit_record::ExitRecord::read(&self.exit_file())
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("nimbus-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn round_trip_atomic_and_listing() {
        let root = tmp("rt");
        let state = StateDir::new(&root);
        assert!(state.names().unwrap().is_empty());
        let _l = state.lock().unwrap();
        let dir = state.vm("web-1");
        std::fs::create_dir_all(&dir.path).unwrap();
        assert!(matches!(dir.load(), Err(VmError::NotFound(_))));
        let vm = StoredVm {
            spec: VmSpec::new("web-1"),
            kernel: "/k".into(),
            initrd: Some("/i".into()),
            root_disk: None,
            disks: vec![DiskBinding {
                path: dir.path.join("data0.raw"),
                read_only: false,
                mount: Some("/mnt/data0".into()),
                owned: true,
            }],
            nics: vec![NicBinding {
                name: "n".into(),
                tap: "nt-1".into(),
                mac: "02:00:00:00:00:01".into(),
                ip: "10.0.0.4".into(),
                prefix: 24,
                gateway: Some("10.0.0.1".into()),
            }],
            created_at_unix_s: 1.0,
        };
        dir.save(&vm).unwrap();
        assert_eq!(dir.load().unwrap(), vm);
        let r = RunRecord {
            pid: 42,
            start_time: 7,
            started_at_unix_s: 2.0,
        };
        assert_eq!(dir.run_record().unwrap(), None);
        dir.save_run_record(&r).unwrap();
        assert_eq!(dir.run_record().unwrap(), Some(r));
        // Only complete files, no temporaries, are left.
        let mut files: Vec<String> = std::fs::read_dir(&dir.path)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["run.json", "vm.json"]);
        // A directory without vm.json (a create that died) is not a VM.
        std::fs::create_dir_all(state.vm("half").path).unwrap();
        assert_eq!(state.names().unwrap(), ["web-1"]);
        // A corrupt file is an error that names the file.
        std::fs::write(dir.vm_file(), b"{").unwrap();
        let e = dir.load().unwrap_err().to_string();
        assert!(e.contains("vm.json"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn socket_paths_must_fit() {
        let state = StateDir::new(format!("/tmp/{}", "x".repeat(80)));
        let e = state.vm("a-rather-long-vm-name").check_socket_paths();
        assert!(e.unwrap_err().to_string().contains("shorter --state-dir"));
        StateDir::new("/var/lib/nimbus")
            .vm(&"v".repeat(63))
            .check_socket_paths()
            .unwrap();
    }
}
