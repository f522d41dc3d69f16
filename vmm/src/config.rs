//! The VM's configuration, parsed once and validated before anything runs.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::arch::x86_64::mptable;
use crate::boot::KernelFormat;
use crate::memory::{CMDLINE_MAX_SIZE, MIN_MEMORY};

/// Most vCPUs a VM may have (bounded by what the MP table can describe).
pub const MAX_VCPUS: u8 = 32;
const _: () = assert!(MAX_VCPUS <= mptable::max_vcpus());

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialOutput {
    /// The VMM's stdout (and stdin forwarded when it is a terminal).
    #[default]
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

/// Everything needed to run one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// ELF vmlinux (PVH) or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// The whole guest kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Serial console destination.
    pub serial: SerialOutput,
    /// virtio-blk disks, in order (/dev/vda, /dev/vdb, ...).
    pub disks: Vec<devices::virtio::block::BlockConfig>,
    /// virtio-net NICs, in order (eth0, eth1, ...).
    pub nics: Vec<devices::virtio::net::NetConfig>,
}

/// Why a configuration is invalid. Each message names the field, the
/// value and the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A file cannot be opened.
    #[error("{field} {path}: cannot be read: {reason}")]
    Unreadable {
        /// "kernel" or "initrd".
        field: &'static str,
        /// The path given.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A path is not a regular file.
    #[error("{field} {path}: not a regular file")]
    NotAFile {
        /// "kernel" or "initrd".
        field: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// The kernel is neither an ELF nor a bzImage.
    #[error("kernel {0}: not an ELF vmlinux nor a bzImage (no ELF magic, no \"HdrS\" at 0x202)")]
    KernelFormat(PathBuf),
    /// vCPU count out of range.
    #[error("cpus {0}: must be between 1 and {MAX_VCPUS}")]
    Vcpus(u64),
    /// Memory below the minimum.
    #[error("memory {0} MiB: must be at least {min} MiB", min = MIN_MEMORY >> 20)]
    MemoryTooSmall(u64),
    /// Memory above what the host has free.
    #[error("memory {requested} MiB: more than the host's available memory ({available} MiB)")]
    MemoryTooLarge {
        /// Requested MiB.
        requested: u64,
        /// MemAvailable in MiB.
        available: u64,
    },
    /// A memory size string that cannot be parsed.
    #[error("memory {0:?}: not a size (use MiB, or a number with K, M, G or T)")]
    MemorySyntax(String),
    /// The command line is too long or contains a NUL.
    #[error("cmdline: {0}")]
    Cmdline(String),
    /// The serial output file cannot be created.
    #[error("serial-output {path}: cannot be created: {reason}")]
    SerialOutput {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A disk image cannot be used.
    #[error("{0}")]
    Disk(String),
    /// More devices than IRQs.
    #[error("{0} disks and NICs: at most {max} virtio devices", max = crate::virtio_devices::VIRTIO_IRQS.len())]
    TooManyDevices(usize),
    /// /dev/kvm is missing or not usable.
    #[error("/dev/kvm: cannot be opened read-write: {0}")]
    Kvm(String),
    /// /dev/kvm opens but does not answer as KVM with the stable API.
    #[error("/dev/kvm: not a usable KVM device: {0}")]
    KvmApi(String),
}

/// The only KVM API version there has ever been (KVM_GET_API_VERSION).
const KVM_API_VERSION: i32 = 12;

/// Asks /dev/kvm for its API version: catches a path that opens but is not
/// KVM (a stand-in device node, a broken container setup) before the VMM
/// reports a confusing missing capability.
fn check_kvm_api() -> Result<(), ConfigError> {
    let kvm = kvm_ioctls::Kvm::new_with_path(c"/dev/kvm")
        .map_err(|e| ConfigError::KvmApi(e.to_string()))?;
    match kvm.get_api_version() {
        KVM_API_VERSION => Ok(()),
        v if v < 0 => Err(ConfigError::KvmApi(format!(
            "KVM_GET_API_VERSION failed: {}",
            std::io::Error::last_os_error()
        ))),
        v => Err(ConfigError::KvmApi(format!(
            "API version {v}, nimbus needs {KVM_API_VERSION}"
        ))),
    }
}

/// Parses a memory size: a plain number is MiB; `K`, `M`, `G`, `T`
/// suffixes (optionally followed by `i`/`iB`/`B`) are binary units.
/// Returns MiB; sizes that are not whole MiB are refused.
pub fn parse_memory_mib(s: &str) -> Result<u64, ConfigError> {
    let err = || ConfigError::MemorySyntax(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let bytes = match unit {
        "" | "M" => n.checked_mul(1 << 20),
        "K" => n.checked_mul(1 << 10),
        "G" => n.checked_mul(1 << 30),
        "T" => n.checked_mul(1 << 40),
        _ => None,
    }
    .ok_or_else(err)?;
    if bytes % (1 << 20) != 0 {
        return Err(err());
    }
    Ok(bytes >> 20)
}

fn check_file(field: &'static str, path: &Path) -> Result<File, ConfigError> {
    let f = File::open(path).map_err(|e| ConfigError::Unreadable {
        field,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let meta = f.metadata().map_err(|e| ConfigError::Unreadable {
        field,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            field,
            path: path.to_path_buf(),
        });
    }
    Ok(f)
}

impl VmConfig {
    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib.saturating_mul(1 << 20)
    }

    /// Checks everything that can be checked before the VM is built: files
    /// exist and are readable, the kernel format, vCPU and memory bounds
    /// (against the host's MemAvailable), the command line, /dev/kvm.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(crate::host::mem_available_bytes(), Path::new("/dev/kvm"))?;
        check_kvm_api()
    }

    /// [`VmConfig::validate`] with the host facts given (for tests).
    pub fn validate_with(
        &self,
        mem_available: Option<u64>,
        kvm_path: &Path,
    ) -> Result<(), ConfigError> {
        let mut kernel = check_file("kernel", &self.kernel)?;
        match KernelFormat::detect(&mut kernel) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(ConfigError::KernelFormat(self.kernel.clone())),
            Err(e) => {
                return Err(ConfigError::Unreadable {
                    field: "kernel",
                    path: self.kernel.clone(),
                    reason: e.to_string(),
                })
            }
        }
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(u64::from(self.vcpus)));
        }
        if self.memory_bytes() < MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall(self.memory_mib));
        }
        if let Some(avail) = mem_available {
            if self.memory_bytes() > avail {
                return Err(ConfigError::MemoryTooLarge {
                    requested: self.memory_mib,
                    available: avail >> 20,
                });
            }
        }
        let devices = self.disks.len() + self.nics.len();
        if devices > crate::virtio_devices::VIRTIO_IRQS.len() {
            return Err(ConfigError::TooManyDevices(devices));
        }
        for disk in &self.disks {
            devices::virtio::block::Block::new(disk.clone())
                .map_err(|e| ConfigError::Disk(e.to_string()))?;
        }
        if self.cmdline.len() + 1 > CMDLINE_MAX_SIZE {
            return Err(ConfigError::Cmdline(format!(
                "{} bytes; the limit is {} bytes",
                self.cmdline.len(),
                CMDLINE_MAX_SIZE - 1
            )));
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::Cmdline("contains a NUL byte".into()));
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(kvm_path)
            .map_err(|e| ConfigError::Kvm(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A fresh file per call: the tests run in parallel threads of one
    /// process, and two of them rewriting one shared path raced (a reader
    /// saw the file truncated between create and write).
    fn tmp(name: &str, content: &[u8]) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("nimbus-cfg-{}-{n}-{name}", std::process::id()));
        File::create(&p).unwrap().write_all(content).unwrap();
        p
    }

    fn good() -> VmConfig {
        VmConfig {
            kernel: tmp("vmlinux", b"\x7fELF\x02\x01\x01\0"),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            vcpus: 1,
            memory_mib: 128,
            serial: SerialOutput::Stdout,
            disks: vec![],
            nics: vec![],
        }
    }

    // /dev/null stands in for /dev/kvm: openable read-write.
    fn check(c: &VmConfig) -> Result<(), ConfigError> {
        c.validate_with(Some(1 << 34), Path::new("/dev/null"))
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mib("256").unwrap(), 256);
        assert_eq!(parse_memory_mib("256M").unwrap(), 256);
        assert_eq!(parse_memory_mib("1G").unwrap(), 1024);
        assert_eq!(parse_memory_mib("2GiB").unwrap(), 2048);
        assert_eq!(parse_memory_mib("1048576K").unwrap(), 1024);
        assert_eq!(parse_memory_mib("512mb").unwrap(), 512);
        for bad in ["", "M", "1.5G", "12Q", "-5", "1023K", "99999999999999T"] {
            assert!(parse_memory_mib(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accepts_a_good_config() {
        check(&good()).unwrap();
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let c = VmConfig {
            kernel: tmp("bz", &bz),
            ..good()
        };
        check(&c).unwrap();
    }

    #[test]
    fn names_what_is_wrong() {
        let c = VmConfig {
            kernel: "/nonexistent/vmlinux".into(),
            ..good()
        };
        let e = check(&c).unwrap_err().to_string();
        assert!(e.contains("kernel /nonexistent/vmlinux"), "{e}");

        let c = VmConfig {
            kernel: tmp("txt", b"hello"),
            ..good()
        };
        assert!(matches!(check(&c), Err(ConfigError::KernelFormat(_))));

        let c = VmConfig {
            kernel: std::env::temp_dir(),
            ..good()
        };
        assert!(matches!(check(&c), Err(ConfigError::NotAFile { .. })));

        let c = VmConfig {
            initrd: Some("/nonexistent/initrd".into()),
            ..good()
        };
        assert!(check(&c)
            .unwrap_err()
            .to_string()
            .starts_with("initrd /nonexistent/initrd"));

        assert_eq!(
            check(&VmConfig { vcpus: 0, ..good() }),
            Err(ConfigError::Vcpus(0))
        );
        assert_eq!(
            check(&VmConfig {
                vcpus: 33,
                ..good()
            }),
            Err(ConfigError::Vcpus(33))
        );
        assert_eq!(
            check(&VmConfig {
                memory_mib: 16,
                ..good()
            }),
            Err(ConfigError::MemoryTooSmall(16))
        );
        let big = VmConfig {
            memory_mib: 1 << 20,
            ..good()
        };
        assert!(matches!(
            big.validate_with(Some(1 << 30), Path::new("/dev/null")),
            Err(ConfigError::MemoryTooLarge {
                requested: 1048576,
                available: 1024
            })
        ));
        let long = VmConfig {
            cmdline: "x".repeat(3000),
            ..good()
        };
        assert!(matches!(check(&long), Err(ConfigError::Cmdline(_))));
        let e = good()
            .validate_with(None, Path::new("/nonexistent/kvm"))
            .unwrap_err();
        assert!(e.to_string().starts_with("/dev/kvm"));
    }
}
