//! Boot-time register state: GDT and segments, control registers for
//! 32-bit protected mode (PVH) and long mode (64-bit Linux boot), the
//! identity-mapped page tables long mode needs, general registers, FPU.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::memory::{
    GuestMemory, BOOT_GDT_START, BOOT_IDT_START, PDE_START, PDPTE_START, PML4_START,
};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Error writing boot structures into guest memory.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {what} to guest memory at {addr:#x}")]
pub struct WriteError {
    /// Which structure.
    pub what: &'static str,
    /// Where.
    pub addr: u64,
}

/// The CPU mode the boot vCPU starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// 32-bit protected mode, paging off (PVH entry).
    Protected32,
    /// 64-bit long mode with identity-mapped page tables (Linux 64-bit boot).
    Long64,
}

/// Builds a GDT descriptor from `flags` (access byte in bits 0-7, flags
/// nibble in bits 12-15), a 32-bit base and a 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT for `mode`: null, code, data, TSS.
pub fn boot_gdt(mode: BootMode) -> [u64; 4] {
    match mode {
        BootMode::Long64 => [
            gdt_entry(0, 0, 0),
            gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code
            gdt_entry(0xc093, 0, 0xfffff), // data
            gdt_entry(0x808b, 0, 0xfffff), // TSS
        ],
        BootMode::Protected32 => [
            gdt_entry(0, 0, 0),
            gdt_entry(0xc09b, 0, 0xffff_ffff), // 32-bit flat code
            gdt_entry(0xc093, 0, 0xffff_ffff), // 32-bit flat data
            gdt_entry(0x008b, 0, 0x67),        // TSS
        ],
    }
}

/// The KVM segment register value for GDT entry `entry` at `index`.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

/// Identity-maps the first 1 GiB with 2 MiB pages: PML4[0] -> PDPT,
/// PDPT[0] -> PD, PD[i] -> i * 2 MiB (present, writable, page size).
pub fn write_page_tables(mem: &GuestMemory) -> Result<(), WriteError> {
    let err = |what, addr| WriteError { what, addr };
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))
        .map_err(|_| err("PML4", PML4_START))?;
    mem.write_obj(PDE_START | 0x03, GuestAddress(PDPTE_START))
        .map_err(|_| err("PDPT", PDPTE_START))?;
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_START + i * 8))
            .map_err(|_| err("PD", PDE_START))?;
    }
    Ok(())
}

/// Writes the boot GDT and an empty IDT, and fills `sregs` with segments and
/// control registers for `mode`. Long mode also gets the page tables.
pub fn setup_sregs(
    mem: &GuestMemory,
    mode: BootMode,
    sregs: &mut kvm_sregs,
) -> Result<(), WriteError> {
    let gdt = boot_gdt(mode);
    for (i, e) in gdt.iter().enumerate() {
        let addr = BOOT_GDT_START + (i as u64) * 8;
        mem.write_obj(*e, GuestAddress(addr))
            .map_err(|_| WriteError { what: "GDT", addr })?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| WriteError {
            what: "IDT",
            addr: BOOT_IDT_START,
        })?;

    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        BootMode::Protected32 => {
            // The PVH ABI: protected mode, paging off, CR4 clear.
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootMode::Long64 => {
            write_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    Ok(())
}

/// General registers at entry: RFLAGS has only its reserved bit 1 set.
/// `rbx` carries the PVH start_info, `rsi` the zero page.
pub fn boot_regs(rip: u64, rsp: u64, rbx: u64, rsi: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip,
        rsp,
        rbp: rsp,
        rbx,
        rsi,
        ..Default::default()
    }
}

/// FPU state at reset: x87 control word 0x37f, MXCSR 0x1f80.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    #[test]
    fn gdt_entries_round_trip() {
        let code = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(code.selector, 8);
        assert_eq!(
            (code.l, code.db, code.g, code.present, code.s),
            (1, 0, 1, 1, 1)
        );
        assert_eq!(code.type_, 0xb);
        assert_eq!(code.limit, 0xffff_ffff);
        let tss = segment_from_gdt(gdt_entry(0x008b, 0, 0x67), 3);
        assert_eq!((tss.limit, tss.g, tss.s, tss.type_), (0x67, 0, 0, 0xb));
        let null = segment_from_gdt(0, 0);
        assert_eq!(null.unusable, 1);
        let based = segment_from_gdt(gdt_entry(0xc093, 0x1234_5678, 0xfffff), 2);
        assert_eq!(based.base, 0x1234_5678);
    }

    #[test]
    fn page_tables_identity_map_first_gib() {
        let mem = create_guest_memory(32 << 20).unwrap();
        write_page_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pdpt: u64 = mem.read_obj(GuestAddress(PDPTE_START)).unwrap();
        assert_eq!(pdpt, PDE_START | 3);
        for i in [0u64, 1, 255, 511] {
            let pde: u64 = mem.read_obj(GuestAddress(PDE_START + i * 8)).unwrap();
            assert_eq!(pde, (i << 21) | 0x83, "PD[{i}]");
        }
        // Nothing beyond the first GiB is mapped.
        let pdpt1: u64 = mem.read_obj(GuestAddress(PDPTE_START + 8)).unwrap();
        assert_eq!(pdpt1, 0);
    }

    #[test]
    fn long_mode_sregs() {
        let mem = create_guest_memory(32 << 20).unwrap();
        let mut s = kvm_sregs::default();
        setup_sregs(&mem, BootMode::Long64, &mut s).unwrap();
        assert_eq!(s.cr3, PML4_START);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_ne!(s.cr4 & X86_CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cs.l, 1);
        let gdt1: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(gdt1, gdt_entry(0xa09b, 0, 0xfffff));
    }

    #[test]
    fn protected_mode_sregs_have_paging_off() {
        let mem = create_guest_memory(32 << 20).unwrap();
        let mut s = kvm_sregs::default();
        setup_sregs(&mem, BootMode::Protected32, &mut s).unwrap();
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_ne!(s.cr0 & X86_CR0_PE, 0);
        assert_eq!(s.cs.db, 1);
        assert_eq!(s.cs.l, 0);
        assert_eq!(s.efer, 0);
    }
}
