//! Named VM sizes: Azure's B-series (same vCPUs and memory as Azure's) and
//! a few small lab sizes for a laptop or a CI runner.

/// One named size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// The name, as Azure spells it (`Standard_` may be put in front).
    pub name: &'static str,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory, MiB.
    pub memory_mib: u64,
}

/// Every size, smallest first.
pub const SIZES: &[Size] = &[
    Size {
        name: "Lab0",
        vcpus: 1,
        memory_mib: 64,
    },
    Size {
        name: "Lab1",
        vcpus: 1,
        memory_mib: 128,
    },
    Size {
        name: "Lab2",
        vcpus: 2,
        memory_mib: 256,
    },
    Size {
        name: "B1ls",
        vcpus: 1,
        memory_mib: 512,
    },
    Size {
        name: "B1s",
        vcpus: 1,
        memory_mib: 1024,
    },
    Size {
        name: "B1ms",
        vcpus: 1,
        memory_mib: 2048,
    },
    Size {
        name: "B2s",
        vcpus: 2,
        memory_mib: 4096,
    },
    Size {
        name: "B2ms",
        vcpus: 2,
        memory_mib: 8192,
    },
    Size {
        name: "B4ms",
        vcpus: 4,
        memory_mib: 16384,
    },
];

/// The text for `--help`: one line per size.
pub const HELP: &str = "\
Sizes (--size; Azure's B-series, `Standard_` prefix optional, any case):
  Lab0   1 vCPU    64 MiB      B1ls  1 vCPU  512 MiB      B2s   2 vCPUs  4 GiB
  Lab1   1 vCPU   128 MiB      B1s   1 vCPU    1 GiB      B2ms  2 vCPUs  8 GiB
  Lab2   2 vCPUs  256 MiB      B1ms  1 vCPU    2 GiB      B4ms  4 vCPUs 16 GiB";

/// Looks a size up by name: case-insensitive, `Standard_` optional.
pub fn find(name: &str) -> Option<Size> {
    let trimmed = name.trim();
    let bare = trimmed
        .get(..9)
        .filter(|p| p.eq_ignore_ascii_case("standard_"))
        .map_or(trimmed, |_| &trimmed[9..]);
    SIZES
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(bare))
        .copied()
}

/// The size names, for error messages.
pub fn names() -> String {
    SIZES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_sizes_match_azure() {
        let b1s = find("B1s").unwrap();
        assert_eq!((b1s.vcpus, b1s.memory_mib), (1, 1024));
        assert_eq!(find("Standard_B1ls").unwrap().memory_mib, 512);
        assert_eq!(find("standard_b2s").unwrap().vcpus, 2);
        assert_eq!(find("b2s").unwrap().memory_mib, 4096);
        assert_eq!(find("B1ms").unwrap().memory_mib, 2048);
        assert_eq!(find("lab1").unwrap().memory_mib, 128);
        for bad in ["", "B3s", "Standard_", "Standard_Lab9", "B1s2"] {
            assert_eq!(find(bad), None, "{bad}");
        }
    }

    #[test]
    fn help_lists_every_size() {
        for s in SIZES {
            assert!(HELP.contains(s.name), "{}", s.name);
        }
        assert!(names().contains("B1ls"));
    }
}
