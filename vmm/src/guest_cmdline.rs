//! Default guest kernel command line for each KVM backend.
//!
//! The `nimbus` CLI composes the whole command line from these defaults and
//! passes it to `nimbus-vmm --cmdline` verbatim.

use crate::host::KvmBackend;

/// Parameters every guest gets: serial console, reboot through the i8042,
/// reboot at once on panic (the VMM sees it end), the agent as init.
pub const COMMON: &[&str] = &["console=ttyS0", "reboot=k", "panic=-1", "rdinit=/init"];

/// Added on kvm-pvm hosts, where guest ring 0 runs in KVM's instruction
/// emulator. CPUID masking alone does not hide features from the guest
/// there, so the kernel is told directly not to use what the emulator cannot
/// execute: XSAVE (`xrstor`), CX16 (`cmpxchg16b`), SMAP (`clac`/`stac`),
/// POPCNT, RDRAND/RDSEED, PCID/INVPCID, FSGSBASE, PKU. The rest are measured
/// boot-time savings (figures from guest-images/kernel, QEMU microvm and
/// nimbus alike): `lpj` skips calibration and keeps udelay loops short
/// (serial8250_init 3-9 s -> 0.4 s), `cpu_init_udelay=0` drops the 10 ms
/// INIT delay that the emulator stretches to ~55 s per AP,
/// `percpu_alloc=page` avoids zeroing a 2 MiB embed unit (4 s -> 0.06 s),
/// `noreplace-smp` skips lock-prefix patching (4-6 s -> 1.5 s).
/// `pvm_emulated_ring0` switches on our kernel patches (SYSCALL trampoline,
/// skipped int3 self-test and fwait). [`defaults`] adds `tsc_early_khz`.
pub const PVM: &[&str] = &[
    "nofsgsbase",
    "clearcpuid=xsave,cx16,smap,pku,rdrand,rdseed,invpcid,pcid,fsgsbase,popcnt",
    "lpj=500000",
    "tsc=reliable",
    "no_timer_check",
    "cpu_init_udelay=0",
    "percpu_alloc=page",
    "noreplace-smp",
    "pvm_emulated_ring0",
];

/// The default parameters for `backend`, in order. On kvm-pvm, `tsc_khz`
/// (from [`crate::host::guest_tsc_khz`]) becomes `tsc_early_khz=`: the
/// emulator cannot calibrate the TSC against the PIT, and without a TSC the
/// guest clock falls back to jiffies, the periodic tick never stops, and an
/// idle guest keeps a third of a host core busy (measured: 33 % of a core
/// before, 1 % with it).
pub fn defaults(backend: KvmBackend, tsc_khz: Option<u32>) -> Vec<String> {
    let mut v: Vec<String> = COMMON.iter().map(|p| p.to_string()).collect();
    if backend.is_pvm() {
        v.extend(PVM.iter().map(|p| p.to_string()));
        if let Some(khz) = tsc_khz {
            v.push(format!("tsc_early_khz={khz}"));
        }
    }
    v
}

/// [`defaults`] for this host (backend and TSC frequency detected).
pub fn host_defaults() -> Vec<String> {
    let backend = KvmBackend::detect();
    let tsc = if backend.is_pvm() {
        crate::host::guest_tsc_khz()
    } else {
        None
    };
    defaults(backend, tsc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_adds_its_switches_after_the_common_ones() {
        let hw = defaults(KvmBackend::HardwareAssisted, Some(2_000_000));
        assert_eq!(hw, COMMON);
        let pvm = defaults(KvmBackend::Pvm, Some(2_445_410));
        assert_eq!(&pvm[..COMMON.len()], COMMON);
        assert!(pvm.iter().any(|p| p == "pvm_emulated_ring0"));
        assert_eq!(
            pvm.last().map(String::as_str),
            Some("tsc_early_khz=2445410")
        );
        let unknown_tsc = defaults(KvmBackend::Pvm, None);
        assert!(!unknown_tsc.iter().any(|p| p.starts_with("tsc_early_khz")));
    }
}
