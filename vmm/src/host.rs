//! Facts about the host the VM runs on: which KVM backend, how much memory.

use std::path::Path;

/// The kind of KVM this host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmBackend {
    /// kvm-pvm: no VMX/SVM; a guest's ring 0 runs in KVM's instruction
    /// emulator, so the VMM adds command-line switches, CPUID masks and
    /// emulation assists.
    Pvm,
    /// kvm-intel or kvm-amd: hardware-assisted, any standard kernel boots.
    HardwareAssisted,
    /// No KVM module recognised (KVM may still work).
    Unknown,
}

impl KvmBackend {
    /// Looks at `/sys/module` for the loaded KVM vendor module.
    pub fn detect() -> KvmBackend {
        Self::detect_in(Path::new("/sys/module"))
    }

    /// As [`KvmBackend::detect`], with the sysfs module directory given
    /// (for tests).
    pub fn detect_in(sys_module: &Path) -> KvmBackend {
        if sys_module.join("kvm_pvm").exists() {
            KvmBackend::Pvm
        } else if sys_module.join("kvm_intel").exists() || sys_module.join("kvm_amd").exists() {
            KvmBackend::HardwareAssisted
        } else {
            KvmBackend::Unknown
        }
    }

    /// Whether this backend runs guest ring 0 in the instruction emulator.
    pub fn is_pvm(&self) -> bool {
        matches!(self, KvmBackend::Pvm)
    }
}

/// The TSC frequency KVM gives a new vCPU, in kHz (KVM_GET_TSC_KHZ on a
/// throw-away VM), or `None` when KVM cannot say.
pub fn guest_tsc_khz() -> Option<u32> {
    let kvm = kvm_ioctls::Kvm::new().ok()?;
    let vm = kvm.create_vm().ok()?;
    let vcpu = vm.create_vcpu(0).ok()?;
    vcpu.get_tsc_khz().ok().filter(|khz| *khz > 0)
}

/// The host's `MemAvailable` in bytes, if /proc/meminfo says.
pub fn mem_available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&meminfo)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let m = "MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(m), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn detects_backend_from_module_dir() {
        let dir = std::env::temp_dir().join(format!("nimbus-host-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(KvmBackend::detect_in(&dir), KvmBackend::Unknown);
        std::fs::create_dir_all(dir.join("kvm_amd")).unwrap();
        assert_eq!(KvmBackend::detect_in(&dir), KvmBackend::HardwareAssisted);
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert_eq!(KvmBackend::detect_in(&dir), KvmBackend::Pvm);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
