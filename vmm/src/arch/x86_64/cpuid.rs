//! The CPUID the guest sees: KVM_GET_SUPPORTED_CPUID, adjusted per vCPU.
//!
//! Per vCPU: APIC ID (leaf 1 EBX[31:24], leaf 0xB EDX, AMD leaf
//! 0x8000_001E), the topology (one thread per core, all vCPUs in one
//! socket), the hypervisor bit. On kvm-pvm, features whose instructions the
//! emulator that runs guest ring 0 cannot execute are hidden too. On that
//! backend the guest sees the host's CPUID for many leaves anyway, so the
//! kernel command line repeats the same list (see `guest_cmdline`).

use kvm_bindings::kvm_cpuid_entry2;

/// KVM_CPUID_FLAG_SIGNIFICANT_INDEX: the entry depends on ECX.
const SIGNIFICANT_INDEX: u32 = 1;

// Leaf 1 ECX.
const ECX_CX16: u32 = 1 << 13;
const ECX_PCID: u32 = 1 << 17;
const ECX_POPCNT: u32 = 1 << 23;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_RDRAND: u32 = 1 << 30;
const ECX_HYPERVISOR: u32 = 1 << 31;
// Leaf 1 EDX.
const EDX_HTT: u32 = 1 << 28;
// Leaf 7.0 EBX.
const EBX_FSGSBASE: u32 = 1 << 0;
const EBX_INVPCID: u32 = 1 << 10;
const EBX_RDSEED: u32 = 1 << 18;
const EBX_SMAP: u32 = 1 << 20;
// Leaf 7.0 ECX.
const ECX7_PKU: u32 = 1 << 3;
const ECX7_OSPKE: u32 = 1 << 4;

/// Leaf 1 ECX bits hidden on kvm-pvm: XSAVE (`xrstor`), CX16
/// (`cmpxchg16b`), POPCNT, PCID, RDRAND.
pub const PVM_HIDDEN_LEAF1_ECX: u32 =
    ECX_CX16 | ECX_PCID | ECX_POPCNT | ECX_XSAVE | ECX_OSXSAVE | ECX_RDRAND;
/// Leaf 7.0 EBX bits hidden on kvm-pvm: FSGSBASE, INVPCID, RDSEED, SMAP
/// (`clac`/`stac`).
pub const PVM_HIDDEN_LEAF7_EBX: u32 = EBX_FSGSBASE | EBX_INVPCID | EBX_RDSEED | EBX_SMAP;
/// Leaf 7.0 ECX bits hidden on kvm-pvm: PKU, OSPKE.
pub const PVM_HIDDEN_LEAF7_ECX: u32 = ECX7_PKU | ECX7_OSPKE;

/// Which vCPU the CPUID is for.
#[derive(Debug, Clone, Copy)]
pub struct CpuidTarget {
    /// This vCPU's index, also its APIC ID.
    pub vcpu_id: u8,
    /// How many vCPUs the VM has.
    pub vcpu_count: u8,
    /// Hide what kvm-pvm's emulator cannot run.
    pub pvm: bool,
}

/// Bits needed to number `count` items (the APIC-ID shift for a level).
fn id_bits(count: u8) -> u32 {
    u32::from(count.max(1)).next_power_of_two().trailing_zeros()
}

fn topology_entry(index: u32, t: CpuidTarget) -> kvm_cpuid_entry2 {
    let (eax, ebx, level_type) = match index {
        // SMT level: one thread per core.
        0 => (0, 1, 1),
        // Core level: all vCPUs in one package.
        1 => (id_bits(t.vcpu_count), u32::from(t.vcpu_count), 2),
        _ => (0, 0, 0),
    };
    kvm_cpuid_entry2 {
        function: 0xb,
        index,
        flags: SIGNIFICANT_INDEX,
        eax,
        ebx,
        ecx: (level_type << 8) | index,
        edx: u32::from(t.vcpu_id),
        ..Default::default()
    }
}

/// Adjusts KVM's supported CPUID `entries` for vCPU `t`.
pub fn filter(entries: &[kvm_cpuid_entry2], t: CpuidTarget) -> Vec<kvm_cpuid_entry2> {
    let apic_id = u32::from(t.vcpu_id);
    let count = u32::from(t.vcpu_count.max(1));
    let mut out: Vec<kvm_cpuid_entry2> = Vec::with_capacity(entries.len() + 3);
    let mut has_topology_leaf = false;
    for e in entries {
        let mut e = *e;
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((count & 0xff) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                }
                if t.pvm {
                    e.ecx &= !PVM_HIDDEN_LEAF1_ECX;
                }
            }
            0x4 => {
                // Deterministic cache parameters: cores per package in
                // EAX[31:26]; L1/L2 private, L3 shared by all vCPUs.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
            }
            0x7 if e.index == 0 && t.pvm => {
                e.ebx &= !PVM_HIDDEN_LEAF7_EBX;
                e.ecx &= !PVM_HIDDEN_LEAF7_ECX;
            }
            0xb => {
                // Rebuilt below, whatever KVM reported.
                has_topology_leaf = true;
                continue;
            }
            0x8000_0008 => {
                // AMD: NC = cores - 1, ApicIdCoreIdSize.
                e.ecx = (e.ecx & !0xf0ff) | ((count - 1) & 0xff) | (id_bits(t.vcpu_count) << 12);
            }
            0x8000_001e => {
                // AMD extended APIC ID; one thread per compute unit, node 0.
                e.eax = apic_id;
                e.ebx = apic_id & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
        out.push(e);
    }
    if has_topology_leaf {
        out.extend((0..3).map(|i| topology_entry(i, t)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn host() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0x1, 0, [0x00a00f11, 0x0010_0800, 0xfef8_3203, 0x178b_fbff]),
            entry(0x7, 0, [0, 0x219c_97a9, 0x0040_069c, 0]),
            entry(0xb, 0, [1, 2, 0x100, 7]),
            entry(0x8000_001e, 0, [7, 0x100, 0x300, 0]),
        ]
    }

    fn find(v: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *v.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    #[test]
    fn apic_id_and_count_per_vcpu() {
        let t = CpuidTarget {
            vcpu_id: 3,
            vcpu_count: 4,
            pvm: false,
        };
        let v = filter(&host(), t);
        let l1 = find(&v, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_eq!(find(&v, 0xb, 0).edx, 3);
        assert_eq!(find(&v, 0xb, 1).ebx, 4);
        assert_eq!(find(&v, 0xb, 1).eax, 2);
        assert_eq!(find(&v, 0xb, 1).ecx, 0x201);
        assert_eq!(find(&v, 0xb, 2).ecx >> 8, 0);
        assert_eq!(find(&v, 0x8000_001e, 0).eax, 3);
        // Features a hardware host can run are left alone.
        assert_ne!(l1.ecx & ECX_XSAVE, 0);
    }

    #[test]
    fn pvm_hides_what_the_emulator_cannot_run() {
        let t = CpuidTarget {
            vcpu_id: 0,
            vcpu_count: 1,
            pvm: true,
        };
        let v = filter(&host(), t);
        let l1 = find(&v, 1, 0);
        assert_eq!(l1.ecx & PVM_HIDDEN_LEAF1_ECX, 0);
        assert_eq!(l1.edx & EDX_HTT, host()[0].edx & EDX_HTT);
        let l7 = find(&v, 7, 0);
        assert_eq!(l7.ebx & PVM_HIDDEN_LEAF7_EBX, 0);
        assert_eq!(l7.ecx & PVM_HIDDEN_LEAF7_ECX, 0);
        // Other leaf-7 features survive.
        assert_ne!(l7.ebx, 0);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
    }
}
