//! The Intel MultiProcessor Specification (1.4) table, which tells Linux
//! how many CPUs there are, where the IOAPIC is and how ISA IRQs reach it.
//!
//! Hand-written: no maintained standalone crate builds MP tables
//! (Firecracker and Cloud Hypervisor each keep their own copy inside their
//! `arch` crates). The table is serialised byte by byte, little endian, so
//! no packed structs or `unsafe` are needed.
//!
//! Layout at [`EBDA_START`] (the first KiB of the EBDA, where Linux scans):
//! the 16-byte floating pointer, then the configuration table: header,
//! one processor entry per vCPU, the ISA bus, the IOAPIC, one I/O interrupt
//! entry per ISA IRQ 0-15 (IRQ n -> IOAPIC pin n, as KVM's in-kernel irqchip
//! routes GSIs) and two local interrupt entries (LINT0 ExtINT, LINT1 NMI).

use vm_memory::{Bytes, GuestAddress};

use crate::memory::{GuestMemory, APIC_START, EBDA_START, IOAPIC_START};

const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const PROCESSOR_ENTRY_LEN: usize = 20;
const SMALL_ENTRY_LEN: usize = 8;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const SPEC_REVISION: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Family 6 signature, FPU and APIC feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const ISA_BUS_ID: u8 = 0;
/// ISA IRQs described to the guest.
pub const ISA_IRQS: u8 = 16;
/// End of the window the table must fit in.
const MPTABLE_LIMIT: u64 = 0xa_0000;

/// Error building the MP table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MptableError {
    /// No vCPUs, or more than fit in the EBDA window.
    #[error("an MP table cannot describe {0} vCPUs (1..={max})", max = max_vcpus())]
    VcpuCount(u8),
    /// Guest memory does not cover the table.
    #[error("cannot write the MP table to guest memory at {0:#x}")]
    Write(u64),
}

/// The most vCPUs whose MP table fits in the first KiB of the EBDA.
pub const fn max_vcpus() -> u8 {
    let fixed = FLOATING_POINTER_LEN + HEADER_LEN + SMALL_ENTRY_LEN * (2 + ISA_IRQS as usize + 2);
    ((MPTABLE_LIMIT as usize - EBDA_START as usize - fixed) / PROCESSOR_ENTRY_LEN) as u8
}

/// The IOAPIC's ID: the first one after the vCPUs' APIC IDs.
pub fn ioapic_id(vcpus: u8) -> u8 {
    vcpus
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer and the table for `vcpus` vCPUs, to be
/// placed at guest address `base`.
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    if vcpus == 0 || vcpus > max_vcpus() {
        return Err(MptableError::VcpuCount(vcpus));
    }
    let table_addr = base + FLOATING_POINTER_LEN as u64;
    let ioapic = ioapic_id(vcpus);

    let mut entries: Vec<u8> = Vec::with_capacity(512);
    let mut count: u16 = 0;
    for cpu in 0..vcpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, CPU_ENABLED]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for irq in 0..ISA_IRQS {
        // Flags 0: polarity and trigger conform to the ISA bus.
        entries.extend_from_slice(&[
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            0,
            0,
            ISA_BUS_ID,
            irq,
            ioapic,
            irq,
        ]);
        count += 1;
    }
    // LINT0 of the BSP carries the 8259's ExtINT; LINT1 of every CPU the NMI.
    entries.extend_from_slice(&[
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_EXTINT,
        0,
        0,
        ISA_BUS_ID,
        0,
        0,
        0,
    ]);
    entries.extend_from_slice(&[
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_NMI,
        0,
        0,
        ISA_BUS_ID,
        0,
        0xff,
        1,
    ]);
    count += 2;

    let table_len = HEADER_LEN + entries.len();
    let mut table = Vec::with_capacity(FLOATING_POINTER_LEN + table_len);
    // Floating pointer structure.
    table.extend_from_slice(b"_MP_");
    table.extend_from_slice(&(table_addr as u32).to_le_bytes());
    table.extend_from_slice(&[1, SPEC_REVISION, 0, 0, 0, 0, 0, 0]);
    table[10] = checksum(&table[..FLOATING_POINTER_LEN]);
    // Configuration table header.
    let h = table.len();
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.extend_from_slice(&[SPEC_REVISION, 0]);
    table.extend_from_slice(b"NIMBUS  ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[h + 7] = checksum(&table[h..]);

    if base + table.len() as u64 > MPTABLE_LIMIT {
        return Err(MptableError::VcpuCount(vcpus));
    }
    Ok(table)
}

/// Writes the MP table for `vcpus` vCPUs at [`EBDA_START`].
pub fn write(mem: &GuestMemory, vcpus: u8) -> Result<(), MptableError> {
    let table = build(vcpus, EBDA_START)?;
    mem.write_slice(&table, GuestAddress(EBDA_START))
        .map_err(|_| MptableError::Write(EBDA_START))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    fn check(vcpus: u8) -> Vec<u8> {
        let t = build(vcpus, EBDA_START).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
        let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        assert_eq!(ptr, EBDA_START + 16);
        let hdr = &t[16..];
        assert_eq!(&hdr[..4], b"PCMP");
        let len = u16::from_le_bytes([hdr[4], hdr[5]]) as usize;
        assert_eq!(len, hdr.len());
        assert_eq!(sum(hdr), 0, "table checksum");
        let count = u16::from_le_bytes([hdr[34], hdr[35]]);
        assert_eq!(count as usize, vcpus as usize + 1 + 1 + 16 + 2);

        // Walk the entries and count each type.
        let mut off = HEADER_LEN;
        let mut types = [0usize; 5];
        let mut bsp = 0;
        while off < len {
            let ty = hdr[off] as usize;
            types[ty] += 1;
            if ty == 0 {
                assert_eq!(hdr[off + 1] as usize, types[0] - 1, "APIC IDs in order");
                if hdr[off + 3] & CPU_BOOTSTRAP != 0 {
                    bsp += 1;
                }
                off += PROCESSOR_ENTRY_LEN;
            } else {
                if ty == 3 {
                    assert_eq!(hdr[off + 5], hdr[off + 7], "IRQ n -> pin n");
                    assert_eq!(hdr[off + 6], vcpus, "to the IOAPIC");
                }
                off += SMALL_ENTRY_LEN;
            }
        }
        assert_eq!(off, len);
        assert_eq!(types, [vcpus as usize, 1, 1, 16, 2]);
        assert_eq!(bsp, 1);
        t
    }

    #[test]
    fn one_vcpu() {
        check(1);
    }

    #[test]
    fn four_vcpus() {
        let t = check(4);
        assert_eq!(t.len(), 16 + 44 + 4 * 20 + 20 * 8);
    }

    #[test]
    fn vcpu_limits() {
        assert!(max_vcpus() >= 32);
        check(max_vcpus());
        assert_eq!(build(0, EBDA_START), Err(MptableError::VcpuCount(0)));
        let too_many = max_vcpus() + 1;
        assert_eq!(
            build(too_many, EBDA_START),
            Err(MptableError::VcpuCount(too_many))
        );
    }

    #[test]
    fn writes_into_guest_memory() {
        let mem = crate::memory::create_guest_memory(32 << 20).unwrap();
        write(&mem, 2).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
