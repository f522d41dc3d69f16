//! Loading the guest kernel, initrd and command line, and the register
//! state the boot vCPU starts with.
//!
//! * ELF `vmlinux` with a PVH note: the PVH entry ([`pvh`]), 32-bit
//!   protected mode, paging off, RBX = `hvm_start_info`.
//! * bzImage, or an ELF without the PVH note: the 64-bit Linux boot
//!   protocol ([`zero_page`]), long mode with identity-mapped page tables,
//!   RSI = zero page.

pub mod initrd;
pub mod pvh;
pub mod zero_page;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::{
    load_cmdline, BzImage, Cmdline, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability,
};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::e820::memory_map;
use crate::arch::x86_64::regs::BootMode;
use crate::memory::{
    low_ram_end, GuestMemory, BOOT_STACK_POINTER, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START,
    PVH_INFO_START, ZERO_PAGE_START,
};

/// Offset of the 64-bit entry point (`startup_64`) in a bzImage's
/// protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// setup_header.xloadflags bit: the kernel has a 64-bit entry point.
const XLF_KERNEL_64: u16 = 1;

/// The kernel image formats nimbus boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// ELF `vmlinux`.
    Elf,
    /// bzImage (Linux boot protocol, "HdrS" at 0x202).
    BzImage,
}

impl KernelFormat {
    /// Recognises a kernel by its magic numbers, or `None`.
    pub fn detect(file: &mut (impl Read + Seek)) -> std::io::Result<Option<KernelFormat>> {
        let mut head = [0u8; 0x206];
        file.seek(SeekFrom::Start(0))?;
        let mut filled = 0;
        while filled < head.len() {
            match file.read(&mut head[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        file.seek(SeekFrom::Start(0))?;
        Ok(Self::from_header(&head[..filled]))
    }

    /// Recognises a kernel from its first bytes.
    pub fn from_header(head: &[u8]) -> Option<KernelFormat> {
        if head.starts_with(b"\x7fELF") {
            Some(KernelFormat::Elf)
        } else if head.get(0x202..0x206) == Some(b"HdrS") {
            Some(KernelFormat::BzImage)
        } else {
            None
        }
    }

    /// Detects the format of the file at `path`.
    pub fn of_path(path: &Path) -> std::io::Result<Option<KernelFormat>> {
        Self::detect(&mut File::open(path)?)
    }
}

/// Error loading the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Reading a file failed.
    #[error("cannot read {what} {path}: {source}")]
    Io {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel is neither ELF nor bzImage.
    #[error("kernel {0}: not an ELF vmlinux nor a bzImage")]
    UnknownKernelFormat(String),
    /// linux-loader refused the kernel.
    #[error("cannot load kernel {path}: {source}")]
    Kernel {
        /// The file.
        path: String,
        /// The cause.
        source: linux_loader::loader::Error,
    },
    /// The bzImage cannot be entered in 64-bit mode.
    #[error("bzImage {0} has no 64-bit entry point (xloadflags)")]
    No64BitEntry(String),
    /// The command line is too long or has a NUL.
    #[error("kernel command line rejected: {0}")]
    Cmdline(String),
    /// The initrd does not fit.
    #[error("initrd of {size} bytes does not fit between the kernel (ends at {kernel_end:#x}) and {limit:#x}")]
    InitrdTooLarge {
        /// Initrd size.
        size: u64,
        /// End of the kernel.
        kernel_end: u64,
        /// Highest address the initrd may reach.
        limit: u64,
    },
    /// A boot structure could not be written.
    #[error("cannot write {0} to guest memory")]
    Write(&'static str),
}

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    /// CPU mode at entry.
    pub mode: BootMode,
    /// RIP.
    pub rip: u64,
    /// RSP (also RBP).
    pub rsp: u64,
    /// RBX: the PVH start_info (PVH only).
    pub rbx: u64,
    /// RSI: the zero page (Linux 64-bit boot only).
    pub rsi: u64,
    /// The protocol that was used, for the log.
    pub protocol: &'static str,
}

/// Loads `kernel`, `initrd` and `cmdline` into `mem` (of `mem_size` bytes)
/// and writes the boot-protocol structures.
pub fn load(
    mem: &GuestMemory,
    mem_size: u64,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<BootEntry, BootError> {
    let kpath = kernel.display().to_string();
    let io = |what, path: &Path| {
        let path = path.display().to_string();
        move |source| BootError::Io { what, path, source }
    };
    let mut kfile = File::open(kernel).map_err(io("kernel", kernel))?;
    let format = KernelFormat::detect(&mut kfile)
        .map_err(io("kernel", kernel))?
        .ok_or_else(|| BootError::UnknownKernelFormat(kpath.clone()))?;
    let himem = Some(GuestAddress(HIMEM_START));
    let loaded: KernelLoaderResult = match format {
        KernelFormat::Elf => Elf::load(mem, None, &mut kfile, himem),
        KernelFormat::BzImage => BzImage::load(mem, None, &mut kfile, himem),
    }
    .map_err(|source| BootError::Kernel {
        path: kpath.clone(),
        source,
    })?;

    let mut cl = Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| BootError::Cmdline(e.to_string()))?;
    if !cmdline.trim().is_empty() {
        cl.insert_str(cmdline.trim())
            .map_err(|e| BootError::Cmdline(e.to_string()))?;
    }
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cl)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_size = cmdline.trim().len() as u32 + 1;

    // The kernel's extent: its image, and for a bzImage the room it needs to
    // decompress itself (init_size).
    let mut kernel_end = loaded.kernel_end;
    let mut initrd_max = None;
    if let Some(hdr) = &loaded.setup_header {
        kernel_end = kernel_end.max(loaded.kernel_load.0 + u64::from(hdr.init_size));
        if hdr.initrd_addr_max != 0 {
            initrd_max = Some(u64::from(hdr.initrd_addr_max));
        }
    }

    let initrd_region = match initrd {
        None => None,
        Some(path) => {
            let mut f = File::open(path).map_err(io("initrd", path))?;
            let size = f.metadata().map_err(io("initrd", path))?.len();
            let addr = initrd::load_address(low_ram_end(mem_size), kernel_end, size, initrd_max)?;
            let len = usize::try_from(size).map_err(|_| BootError::InitrdTooLarge {
                size,
                kernel_end,
                limit: low_ram_end(mem_size),
            })?;
            mem.read_exact_volatile_from(GuestAddress(addr), &mut f, len)
                .map_err(|e| BootError::Io {
                    what: "initrd",
                    path: path.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            Some((addr, size))
        }
    };

    let map = memory_map(mem_size);
    match (format, loaded.pvh_boot_cap) {
        (KernelFormat::Elf, PvhBootCapability::PvhEntryPresent(entry)) => {
            pvh::write(mem, &map, CMDLINE_START, initrd_region)?;
            Ok(BootEntry {
                mode: BootMode::Protected32,
                rip: entry.0,
                rsp: 0,
                rbx: PVH_INFO_START,
                rsi: 0,
                protocol: "PVH",
            })
        }
        _ => {
            let rip = match &loaded.setup_header {
                Some(hdr) => {
                    if hdr.version >= 0x020c && hdr.xloadflags & XLF_KERNEL_64 == 0 {
                        return Err(BootError::No64BitEntry(kpath));
                    }
                    loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET
                }
                // ELF without PVH: e_entry is startup_64's physical address.
                None => loaded.kernel_load.0,
            };
            let params = zero_page::build(
                loaded.setup_header,
                CMDLINE_START,
                cmdline_size,
                initrd_region,
                &map,
            );
            mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
                .map_err(|_| BootError::Write("zero page"))?;
            Ok(BootEntry {
                mode: BootMode::Long64,
                rip,
                rsp: BOOT_STACK_POINTER,
                rbx: 0,
                rsi: ZERO_PAGE_START,
                protocol: if format == KernelFormat::Elf {
                    "Linux 64-bit (ELF)"
                } else {
                    "Linux 64-bit (bzImage)"
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        assert_eq!(
            KernelFormat::from_header(b"\x7fELF\x02\x01"),
            Some(KernelFormat::Elf)
        );
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(KernelFormat::from_header(&bz), Some(KernelFormat::BzImage));
        assert_eq!(KernelFormat::from_header(b"#!/bin/sh"), None);
        assert_eq!(KernelFormat::from_header(&[]), None);
    }
}
