//! The Linux x86 boot protocol's zero page (`boot_params`): the setup
//! header (from the bzImage, or a minimal one for an ELF), command line,
//! initrd and the e820 map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};

use crate::arch::x86_64::e820::E820Entry;

/// "Other" boot loader.
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// "HdrS".
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;

/// Builds the zero page. `header` is the bzImage's setup header, or `None`
/// for an ELF kernel entered at `startup_64`.
pub fn build(
    header: Option<setup_header>,
    cmdline_addr: u64,
    cmdline_size: u32,
    initrd: Option<(u64, u64)>,
    map: &[E820Entry],
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = cmdline_addr as u32;
    params.ext_cmd_line_ptr = (cmdline_addr >> 32) as u32;
    params.hdr.cmdline_size = cmdline_size;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    let n = map.len().min(params.e820_table.len());
    for (slot, e) in params.e820_table.iter_mut().zip(&map[..n]) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = n as u8;
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::e820::memory_map;

    #[test]
    fn elf_zero_page() {
        let map = memory_map(128 << 20);
        let p = build(None, 0x20000, 100, Some((0x7e0_0000, 0x1000)), &map);
        let hdr = p.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!({ hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ hdr.cmdline_size }, 100);
        assert_eq!({ hdr.ramdisk_image }, 0x7e0_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x1000);
        assert_eq!(p.e820_entries as usize, map.len());
        let last = p.e820_table[map.len() - 1];
        assert_eq!({ last.addr } + { last.size }, 128 << 20);
        assert_eq!({ last.r#type }, 1);
    }

    #[test]
    fn bzimage_header_is_kept() {
        let h = setup_header {
            version: 0x020f,
            setup_sects: 30,
            init_size: 0x123_4000,
            ..Default::default()
        };
        let p = build(Some(h), 0x20000, 10, None, &memory_map(64 << 20));
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.hdr.setup_sects }, 30);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }
}
