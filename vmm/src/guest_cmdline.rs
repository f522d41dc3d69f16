//! Default guest kernel command line for each KVM backend.
//!
//! The `nimbus` CLI composes the whole command line from these defaults and
//! passes it to `nimbus-vmm --cmdline` verbatim.

use crate::host::KvmBackend;

/// Parameters every guest gets: serial console, reboot through the i8042,
/// reboot at once on panic (the VMM sees it end), the agent as init.
pub const COMMON: &[&str] = &["console=ttyS0", "reboot=k", "panic=-1", "rdinit=/init"];

/// Added on kvm-pvm hosts. CPUID masking alone does not hide features from
/// the guest there, so the kernel is told directly: no XSAVE (`xrstor`),
/// no CX16 (`cmpxchg16b`), no SMAP (`clac`/`stac`), no POPCNT, ... — all
/// instructions the emulator that runs guest ring 0 cannot execute.
pub const PVM: &[&str] = &[
    "noxsave",
    "nofsgsbase",
    "nopku",
    "clearcpuid=cx16,smap,pku,rdrand,rdseed,invpcid,pcid,fsgsbase,popcnt",
    "nokaslr",
    "lpj=5000000",
    "tsc=reliable",
    "no_timer_check",
    "pvm_emulated_ring0",
];

/// The default parameters for `backend`, in order.
pub fn defaults(backend: KvmBackend) -> Vec<&'static str> {
    let mut v = COMMON.to_vec();
    if backend.is_pvm() {
        v.extend_from_slice(PVM);
    }
    v
}

/// [`defaults`] joined with spaces.
pub fn default_string(backend: KvmBackend) -> String {
    defaults(backend).join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_adds_its_switches_after_the_common_ones() {
        let hw = defaults(KvmBackend::HardwareAssisted);
        assert_eq!(hw, COMMON);
        let pvm = defaults(KvmBackend::Pvm);
        assert_eq!(&pvm[..COMMON.len()], COMMON);
        assert!(pvm.contains(&"noxsave"));
        assert!(default_string(KvmBackend::Pvm).starts_with("console=ttyS0 reboot=k"));
    }
}
