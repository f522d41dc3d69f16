//! The guest's physical memory map, as both boot protocols report it
//! (e820 in the zero page, the PVH memmap table).

use crate::memory::{ram_ranges, EBDA_START, HIMEM_START};

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// One memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The memory map of a guest with `mem_size` bytes of RAM: base memory up
/// to the EBDA (which holds the MP table and is reserved), the legacy
/// hole 0xa0000..1 MiB left out, then high memory around the MMIO gap.
pub fn memory_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: 0xa_0000 - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    for (start, size) in ram_ranges(mem_size) {
        let start = start.0;
        let end = start + size;
        let start = start.max(HIMEM_START);
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MMIO_GAP_END, MMIO_GAP_START};

    #[test]
    fn small_guest_map() {
        let m = memory_map(128 << 20);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0],
            E820Entry {
                addr: 0,
                size: 0x9_fc00,
                kind: E820_RAM
            }
        );
        assert_eq!(m[1].kind, E820_RESERVED);
        assert_eq!(
            m[2],
            E820Entry {
                addr: 0x10_0000,
                size: (128 << 20) - 0x10_0000,
                kind: E820_RAM
            }
        );
    }

    #[test]
    fn large_guest_map_skips_gap() {
        let m = memory_map(6 << 30);
        assert_eq!(m.len(), 4);
        assert_eq!(m[2].addr + m[2].size, MMIO_GAP_START);
        assert_eq!(m[3].addr, MMIO_GAP_END);
        let ram: u64 = m
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Only the legacy hole and the EBDA are missing from RAM.
        assert_eq!(ram, (6 << 30) - (0x10_0000 - 0x9_fc00));
    }

    #[test]
    fn entries_are_sorted_and_disjoint() {
        for size in [32u64 << 20, 3 << 30, (3 << 30) + 4096, 8 << 30] {
            let m = memory_map(size);
            for w in m.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr, "{size}: {w:?}");
            }
        }
    }
}
