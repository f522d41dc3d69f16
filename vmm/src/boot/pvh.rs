//! The PVH boot ABI: `hvm_start_info` (magic, command line, modules = the
//! initrd, memory map) at a fixed address handed over in RBX.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

use super::BootError;
use crate::arch::x86_64::e820::E820Entry;
use crate::memory::{GuestMemory, PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START};

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// Version 1 carries the memory map.
const PVH_VERSION: u32 = 1;

/// The memory map in PVH form.
pub fn memmap(map: &[E820Entry]) -> Vec<hvm_memmap_table_entry> {
    map.iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect()
}

/// The start_info for a guest with `memmap_entries` map entries and,
/// if `has_initrd`, one module (the initrd) at [`PVH_MODLIST_START`].
pub fn start_info(cmdline_addr: u64, memmap_entries: u32, has_initrd: bool) -> hvm_start_info {
    hvm_start_info {
        magic: PVH_MAGIC,
        version: PVH_VERSION,
        flags: 0,
        nr_modules: u32::from(has_initrd),
        modlist_paddr: if has_initrd { PVH_MODLIST_START } else { 0 },
        cmdline_paddr: cmdline_addr,
        rsdp_paddr: 0,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries,
        reserved: 0,
    }
}

/// Writes start_info, the module list and the memory map.
pub fn write(
    mem: &GuestMemory,
    map: &[E820Entry],
    cmdline_addr: u64,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let table = memmap(map);
    for (i, e) in table.iter().enumerate() {
        let addr = PVH_MEMMAP_START + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(*e, GuestAddress(addr))
            .map_err(|_| BootError::Write("PVH memory map"))?;
    }
    if let Some((paddr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            cmdline_paddr: 0,
            reserved: 0,
        };
        mem.write_obj(module, GuestAddress(PVH_MODLIST_START))
            .map_err(|_| BootError::Write("PVH module list"))?;
    }
    let info = start_info(cmdline_addr, table.len() as u32, initrd.is_some());
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(|_| BootError::Write("PVH start_info"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::e820::memory_map;
    use crate::memory::{create_guest_memory, CMDLINE_START};

    #[test]
    fn start_info_fields() {
        let s = start_info(0x20000, 3, true);
        assert_eq!(s.magic, PVH_MAGIC);
        assert_eq!(s.version, 1);
        assert_eq!(s.nr_modules, 1);
        assert_eq!(s.modlist_paddr, PVH_MODLIST_START);
        assert_eq!(s.cmdline_paddr, 0x20000);
        assert_eq!((s.memmap_paddr, s.memmap_entries), (PVH_MEMMAP_START, 3));
        let s = start_info(0x20000, 3, false);
        assert_eq!((s.nr_modules, s.modlist_paddr), (0, 0));
    }

    #[test]
    fn written_to_guest_memory() {
        let mem = create_guest_memory(64 << 20).unwrap();
        let map = memory_map(64 << 20);
        write(&mem, &map, CMDLINE_START, Some((0x300_0000, 12345))).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, PVH_MAGIC);
        assert_eq!(info.memmap_entries as usize, map.len());
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!((m.paddr, m.size), (0x300_0000, 12345));
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(PVH_MEMMAP_START + 24 * (map.len() as u64 - 1)))
            .unwrap();
        assert_eq!(last.addr + last.size, 64 << 20);
        assert_eq!(last.type_, 1);
    }
}
