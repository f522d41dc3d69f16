//! Where the initrd goes: as high as possible in low RAM, page aligned,
//! above the kernel (the kernel's own allocations grow up from its end).

use super::BootError;

const PAGE_SIZE: u64 = 4096;

/// The load address for an initrd of `size` bytes, given the end of low
/// RAM, the end of the kernel and the kernel's `initrd_addr_max` (the
/// highest address the initrd may touch), if it states one.
pub fn load_address(
    low_ram_end: u64,
    kernel_end: u64,
    size: u64,
    initrd_addr_max: Option<u64>,
) -> Result<u64, BootError> {
    let limit = match initrd_addr_max {
        Some(max) => low_ram_end.min(max.saturating_add(1)),
        None => low_ram_end,
    };
    let too_large = BootError::InitrdTooLarge {
        size,
        kernel_end,
        limit,
    };
    let start = limit.checked_sub(size).ok_or(too_large)?;
    let start = start & !(PAGE_SIZE - 1);
    if start < kernel_end {
        return Err(BootError::InitrdTooLarge {
            size,
            kernel_end,
            limit,
        });
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_high_and_page_aligned() {
        let a = load_address(128 << 20, 0x200_0000, 1_900_000, None).unwrap();
        assert_eq!(a % 4096, 0);
        assert!(a + 1_900_000 <= 128 << 20);
        assert!((128 << 20) - (a + 1_900_000) < 4096);
    }

    #[test]
    fn respects_initrd_addr_max() {
        let a = load_address(8 << 30, 0x200_0000, 4096, Some(0x7fff_ffff)).unwrap();
        assert_eq!(a, 0x8000_0000 - 4096);
    }

    #[test]
    fn refuses_overlap_with_kernel() {
        assert!(load_address(64 << 20, 60 << 20, 8 << 20, None).is_err());
        assert!(load_address(64 << 20, 0, 65 << 20, None).is_err());
        assert!(load_address(64 << 20, 0, u64::MAX, None).is_err());
    }
}
