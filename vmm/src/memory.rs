//! Guest physical memory: the layout every other module uses, and the
//! `GuestMemoryMmap` that backs it.
//!
//! All fixed guest-physical addresses live here, so that a reader can see the
//! whole map at once:
//!
//! ```text
//! 0x0000_0500  GDT (boot)                 0x0000_0520  IDT (boot, empty)
//! 0x0000_6000  PVH hvm_start_info         0x0000_6040  PVH module list
//! 0x0000_6100  PVH memory map             0x0000_7000  Linux zero page
//! 0x0000_8ff0  boot stack (grows down)    0x0000_9000  PML4, 0xa000 PDPT, 0xb000 PD
//! 0x0002_0000  kernel command line        0x0009_fc00  EBDA: MP table
//! 0x0010_0000  kernel (high memory)       ...          initrd at the top of low RAM
//! 0xc000_0000  MMIO gap up to 4 GiB: virtio-mmio at 0xd000_0000,
//!              IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000
//! 0x1_0000_0000  RAM above the gap, when memory exceeds 3 GiB
//! ```

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Guest memory as the VMM uses it (no dirty-page tracking).
pub type GuestMemory = GuestMemoryMmap<()>;

/// GDT used at boot.
pub const BOOT_GDT_START: u64 = 0x500;
/// IDT used at boot (one null entry: any exception triple-faults).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Linux boot protocol zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit Linux entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Boot page tables: PML4.
pub const PML4_START: u64 = 0x9000;
/// Boot page tables: page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Boot page tables: page directory (512 x 2 MiB = the first 1 GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Longest command line, with its NUL (Linux's x86 COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the EBDA; the MP table lives in its first KiB, where Linux looks.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where the kernel is loaded and high memory starts.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap; RAM beyond it continues at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Reserved for virtio-mmio devices (next issue): one 4 KiB window each.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of the virtio-mmio region.
pub const VIRTIO_MMIO_SIZE: u64 = 0x10_0000;
/// IOAPIC registers (in-kernel irqchip).
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers (in-kernel irqchip).
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's TSS (needed by VMX; harmless elsewhere): three pages below the
/// IOAPIC window's neighbourhood, inside the MMIO gap.
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// Smallest guest memory accepted.
pub const MIN_MEMORY: u64 = 32 << 20;

// The fixed regions must not collide; checked at compile time.
const _: () = {
    assert!(PVH_MEMMAP_START + 24 * 8 <= ZERO_PAGE_START);
    assert!(ZERO_PAGE_START + 4096 <= BOOT_STACK_POINTER);
    assert!(PDE_START + 4096 <= CMDLINE_START);
    assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    assert!(VIRTIO_MMIO_START >= MMIO_GAP_START);
    assert!(VIRTIO_MMIO_START + VIRTIO_MMIO_SIZE <= IOAPIC_START);
};

/// The guest RAM ranges for `mem_size` bytes: one range below the MMIO gap
/// and, for large guests, the rest from 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<(GuestAddress, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), mem_size - MMIO_GAP_START),
        ]
    }
}

/// End (exclusive) of the RAM below the MMIO gap.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

/// Error creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A range does not fit in the host's address space.
    #[error("guest memory of {0} bytes does not fit in this host's address space")]
    TooLarge(u64),
    /// mmap failed.
    #[error("cannot map {size} bytes of guest memory: {source}")]
    Mmap {
        /// Requested size.
        size: u64,
        /// What vm-memory said.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Maps (lazily: nothing is touched) `mem_size` bytes of guest RAM.
pub fn create_guest_memory(mem_size: u64) -> Result<GuestMemory, MemoryError> {
    let ranges = ram_ranges(mem_size)
        .into_iter()
        .map(|(a, s)| usize::try_from(s).map(|s| (a, s)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| MemoryError::TooLarge(mem_size))?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Mmap {
        size: mem_size,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guests_have_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        assert_eq!(low_ram_end(128 << 20), 128 << 20);
    }

    #[test]
    fn large_guests_skip_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(
            r[1],
            (GuestAddress(MMIO_GAP_END), (4 << 30) - MMIO_GAP_START)
        );
        assert_eq!(low_ram_end(4 << 30), MMIO_GAP_START);
    }

    #[test]
    fn creates_memory() {
        let m = create_guest_memory(MIN_MEMORY).unwrap();
        use vm_memory::GuestMemoryBackend;
        assert_eq!(m.last_addr(), GuestAddress(MIN_MEMORY - 1));
    }
}
