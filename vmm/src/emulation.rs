//! Emulation failures: naming the instruction KVM could not emulate and,
//! where the VMM can deliver its architectural effect itself, doing so.
//!
//! On kvm-pvm a guest's ring 0 runs in KVM's instruction emulator, which
//! lacks a few instructions Linux executes. For some of them the effect is
//! simple enough to deliver from here and resume the guest:
//!
//! | instruction | bytes | assist |
//! | --- | --- | --- |
//! | `int3` | `CC` | inject #BP (a trap: RIP past the instruction) |
//! | `fwait` | `9B` | skip, if no unmasked x87 exception is pending |
//! | `fnclex` | `DB E2` | clear FSW's exception bits, skip |
//! | `clac` / `stac` | `0F 01 CA` / `CB` | clear / set RFLAGS.AC, skip |
//!
//! Anything else (`xrstor`, `cmpxchg16b`, `popcnt`, ...) is named in the
//! report and ends the VM with exit code 5. The decoder is pure and tested
//! here; fetching the bytes and applying an assist need the vCPU.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemory;

/// Longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// Instructions the decoder recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insn {
    /// `int3` (CC).
    Int3,
    /// `fwait` (9B).
    Fwait,
    /// `fnclex` (DB E2).
    Fnclex,
    /// `clac` (0F 01 CA).
    Clac,
    /// `stac` (0F 01 CB).
    Stac,
    /// `xrstor` (0F AE /5, memory operand).
    Xrstor,
    /// `xsave` (0F AE /4, memory operand).
    Xsave,
    /// `cmpxchg16b` (REX.W 0F C7 /1).
    Cmpxchg16b,
    /// `cmpxchg8b` (0F C7 /1).
    Cmpxchg8b,
    /// `popcnt` (F3 0F B8).
    Popcnt,
    /// Not one of the above.
    Unknown,
}

impl Insn {
    /// The mnemonic.
    pub fn name(&self) -> &'static str {
        match self {
            Insn::Int3 => "int3",
            Insn::Fwait => "fwait",
            Insn::Fnclex => "fnclex",
            Insn::Clac => "clac",
            Insn::Stac => "stac",
            Insn::Xrstor => "xrstor",
            Insn::Xsave => "xsave",
            Insn::Cmpxchg16b => "cmpxchg16b",
            Insn::Cmpxchg8b => "cmpxchg8b",
            Insn::Popcnt => "popcnt",
            Insn::Unknown => "unknown",
        }
    }
}

/// A decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Which instruction.
    pub insn: Insn,
    /// Its length including prefixes, when known (the assisted ones).
    pub len: Option<usize>,
}

/// Decodes the instruction at the start of `bytes`. `long_mode` decides
/// whether 0x40-0x4F are REX prefixes.
pub fn decode(bytes: &[u8], long_mode: bool) -> Decoded {
    let unknown = Decoded {
        insn: Insn::Unknown,
        len: None,
    };
    let mut i = 0;
    let mut rep = false;
    let mut rex_w = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            0xf3 => rep = true,
            0xf0 | 0xf2 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0x66 | 0x67 => {}
            _ => break,
        }
        i += 1;
        if i >= MAX_INSN_LEN {
            return unknown;
        }
    }
    if long_mode {
        if let Some(&b) = bytes.get(i) {
            if (0x40..=0x4f).contains(&b) {
                rex_w = b & 0x08 != 0;
                i += 1;
            }
        }
    }
    let at = |k: usize| bytes.get(i + k).copied();
    let modrm = |k: usize| at(k).map(|m| (m >> 6, (m >> 3) & 7));
    let found = |insn, n: usize| Decoded {
        insn,
        len: Some(i + n),
    };
    match (at(0), at(1), at(2)) {
        (Some(0xcc), _, _) => found(Insn::Int3, 1),
        (Some(0x9b), _, _) => found(Insn::Fwait, 1),
        (Some(0xdb), Some(0xe2), _) => found(Insn::Fnclex, 2),
        (Some(0x0f), Some(0x01), Some(0xca)) => found(Insn::Clac, 3),
        (Some(0x0f), Some(0x01), Some(0xcb)) => found(Insn::Stac, 3),
        (Some(0x0f), Some(0xb8), _) if rep => Decoded {
            insn: Insn::Popcnt,
            len: None,
        },
        (Some(0x0f), Some(0xae), _) => match modrm(2) {
            Some((md, 5)) if md != 3 => Decoded {
                insn: Insn::Xrstor,
                len: None,
            },
            Some((md, 4)) if md != 3 => Decoded {
                insn: Insn::Xsave,
                len: None,
            },
            _ => unknown,
        },
        (Some(0x0f), Some(0xc7), _) => match modrm(2) {
            Some((md, 1)) if md != 3 => Decoded {
                insn: if rex_w {
                    Insn::Cmpxchg16b
                } else {
                    Insn::Cmpxchg8b
                },
                len: None,
            },
            _ => unknown,
        },
        _ => unknown,
    }
}

/// What the VMM does for a failed instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assist {
    /// Inject #BP with RIP advanced by `len` (int3 is a trap).
    InjectBreakpoint {
        /// Instruction length.
        len: usize,
    },
    /// Advance RIP by `len`.
    Skip {
        /// Instruction length.
        len: usize,
    },
    /// Set (`true`) or clear RFLAGS.AC, advance RIP by `len`.
    SetAc {
        /// New AC value.
        set: bool,
        /// Instruction length.
        len: usize,
    },
    /// Clear the x87 exception flags in FSW, advance RIP by `len`.
    ClearFpuExceptions {
        /// Instruction length.
        len: usize,
    },
}

/// FSW bit 7: an unmasked x87 exception is pending (`fwait` would raise #MF).
const FSW_ES: u16 = 1 << 7;
/// What FNCLEX clears: PE UE OE ZE DE IE (0-5), SF (6), ES (7), B (15).
pub const FSW_FNCLEX_MASK: u16 = 0x80ff;
const RFLAGS_AC: u64 = 1 << 18;

/// The assist for `d`, if the VMM can deliver its effect. `fsw` is the x87
/// status word (needed for `fwait`).
pub fn plan(d: Decoded, fsw: u16) -> Option<Assist> {
    let len = d.len?;
    match d.insn {
        Insn::Int3 => Some(Assist::InjectBreakpoint { len }),
        Insn::Fwait if fsw & FSW_ES == 0 => Some(Assist::Skip { len }),
        Insn::Fnclex => Some(Assist::ClearFpuExceptions { len }),
        Insn::Clac => Some(Assist::SetAc { set: false, len }),
        Insn::Stac => Some(Assist::SetAc { set: true, len }),
        _ => None,
    }
}

/// RFLAGS after `clac`/`stac`.
pub fn rflags_with_ac(rflags: u64, set: bool) -> u64 {
    if set {
        rflags | RFLAGS_AC
    } else {
        rflags & !RFLAGS_AC
    }
}

/// Lower-case hex, space separated.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How many times each assist ran.
#[derive(Debug, Default)]
pub struct AssistCounters {
    /// `int3` -> #BP injected.
    pub int3: AtomicU64,
    /// `fwait` skipped.
    pub fwait: AtomicU64,
    /// `fnclex` done.
    pub fnclex: AtomicU64,
    /// `clac` done.
    pub clac: AtomicU64,
    /// `stac` done.
    pub stac: AtomicU64,
}

impl AssistCounters {
    /// Counts one assist for `insn`.
    pub fn count(&self, insn: Insn) {
        let c = match insn {
            Insn::Int3 => &self.int3,
            Insn::Fwait => &self.fwait,
            Insn::Fnclex => &self.fnclex,
            Insn::Clac => &self.clac,
            Insn::Stac => &self.stac,
            _ => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Total assists.
    pub fn total(&self) -> u64 {
        [
            &self.int3,
            &self.fwait,
            &self.fnclex,
            &self.clac,
            &self.stac,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

impl fmt::Display for AssistCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "int3={} fwait={} fnclex={} clac={} stac={}",
            l(&self.int3),
            l(&self.fwait),
            l(&self.fnclex),
            l(&self.clac),
            l(&self.stac)
        )
    }
}

/// Reads up to [`MAX_INSN_LEN`] bytes at the guest's CS:RIP by translating
/// the linear address page by page (KVM_TRANSLATE). Returns what could be
/// read (possibly nothing).
pub fn fetch_at_rip(
    vcpu: &VcpuFd,
    mem: &GuestMemory,
    regs: &kvm_regs,
    sregs: &kvm_sregs,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_INSN_LEN);
    let mut linear = sregs.cs.base.wrapping_add(regs.rip);
    while out.len() < MAX_INSN_LEN {
        let Ok(t) = vcpu.translate_gva(linear) else {
            break;
        };
        if t.valid == 0 {
            break;
        }
        let in_page = 4096 - (linear & 0xfff) as usize;
        let n = in_page.min(MAX_INSN_LEN - out.len());
        let mut buf = [0u8; MAX_INSN_LEN];
        if mem
            .read_slice(&mut buf[..n], GuestAddress(t.physical_address))
            .is_err()
        {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        linear = linear.wrapping_add(n as u64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: &[u8]) -> Decoded {
        decode(b, true)
    }

    #[test]
    fn names_known_instructions() {
        assert_eq!(
            d(&[0xcc, 0x90]),
            Decoded {
                insn: Insn::Int3,
                len: Some(1)
            }
        );
        assert_eq!(
            d(&[0x9b]),
            Decoded {
                insn: Insn::Fwait,
                len: Some(1)
            }
        );
        assert_eq!(
            d(&[0xdb, 0xe2]),
            Decoded {
                insn: Insn::Fnclex,
                len: Some(2)
            }
        );
        assert_eq!(
            d(&[0x0f, 0x01, 0xca]),
            Decoded {
                insn: Insn::Clac,
                len: Some(3)
            }
        );
        assert_eq!(
            d(&[0x0f, 0x01, 0xcb]),
            Decoded {
                insn: Insn::Stac,
                len: Some(3)
            }
        );
        // xrstor64 (%rdi): 48 0f ae 2f
        assert_eq!(d(&[0x48, 0x0f, 0xae, 0x2f]).insn, Insn::Xrstor);
        // xrstor (%rsi) with a 32-bit operand: 0f ae 2e
        assert_eq!(d(&[0x0f, 0xae, 0x2e]).insn, Insn::Xrstor);
        // lfence (0f ae e8) is not xrstor.
        assert_eq!(d(&[0x0f, 0xae, 0xe8]).insn, Insn::Unknown);
        // xsave (%rdi): 0f ae 27
        assert_eq!(d(&[0x0f, 0xae, 0x27]).insn, Insn::Xsave);
        // lock cmpxchg16b (%rsi): f0 48 0f c7 0e
        assert_eq!(d(&[0xf0, 0x48, 0x0f, 0xc7, 0x0e]).insn, Insn::Cmpxchg16b);
        assert_eq!(d(&[0xf0, 0x0f, 0xc7, 0x0e]).insn, Insn::Cmpxchg8b);
        // popcnt %rdi,%rax: f3 48 0f b8 c7
        assert_eq!(d(&[0xf3, 0x48, 0x0f, 0xb8, 0xc7]).insn, Insn::Popcnt);
        // Without the F3 prefix 0f b8 is jmpe, not popcnt.
        assert_eq!(d(&[0x0f, 0xb8, 0xc7]).insn, Insn::Unknown);
    }

    #[test]
    fn prefixes_count_in_the_length() {
        assert_eq!(d(&[0x66, 0x0f, 0x01, 0xca]).len, Some(4));
        assert_eq!(d(&[0x2e, 0xcc]).len, Some(2));
        // In 32-bit code 0x48 is `dec eax`, not a prefix.
        assert_eq!(decode(&[0x48, 0xcc], false).insn, Insn::Unknown);
    }

    #[test]
    fn garbage_is_unknown_and_never_panics() {
        assert_eq!(d(&[]).insn, Insn::Unknown);
        assert_eq!(d(&[0x0f]).insn, Insn::Unknown);
        assert_eq!(d(&[0x0f, 0xae]).insn, Insn::Unknown);
        assert_eq!(d(&[0x66; 20]).insn, Insn::Unknown);
        assert_eq!(d(&[0x48]).insn, Insn::Unknown);
        for b in 0..=255u8 {
            let _ = d(&[b, b, b]);
        }
    }

    #[test]
    fn assists() {
        let p = |b: &[u8], fsw| plan(d(b), fsw);
        assert_eq!(p(&[0xcc], 0), Some(Assist::InjectBreakpoint { len: 1 }));
        assert_eq!(p(&[0x9b], 0), Some(Assist::Skip { len: 1 }));
        assert_eq!(p(&[0x9b], 0x0081), None, "pending x87 exception");
        assert_eq!(
            p(&[0xdb, 0xe2], 0x80ff),
            Some(Assist::ClearFpuExceptions { len: 2 })
        );
        assert_eq!(
            p(&[0x0f, 0x01, 0xca], 0),
            Some(Assist::SetAc { set: false, len: 3 })
        );
        assert_eq!(
            p(&[0x0f, 0x01, 0xcb], 0),
            Some(Assist::SetAc { set: true, len: 3 })
        );
        assert_eq!(p(&[0x0f, 0xae, 0x2e], 0), None);
        assert_eq!(p(&[0x90], 0), None);
        assert_eq!(rflags_with_ac(0x2, true), 0x40002);
        assert_eq!(rflags_with_ac(0x40246, false), 0x246);
        assert_eq!(0x80ffu16 & !FSW_FNCLEX_MASK, 0);
        assert_eq!(0x3800u16 & !FSW_FNCLEX_MASK, 0x3800, "TOP survives");
    }

    #[test]
    fn counters_and_hex() {
        let c = AssistCounters::default();
        c.count(Insn::Int3);
        c.count(Insn::Clac);
        c.count(Insn::Xrstor);
        assert_eq!(c.total(), 2);
        assert_eq!(c.to_string(), "int3=1 fwait=0 fnclex=0 clac=1 stac=0");
        assert_eq!(hex(&[0x0f, 0x01, 0xca]), "0f 01 ca");
    }
}
