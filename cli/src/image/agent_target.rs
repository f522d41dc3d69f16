//! Which Rust target the guest agent is built for.
//!
//! The agent is unpacked from the initramfs by the guest kernel, and on
//! kvm-pvm hosts that costs about 9 s per MB (emulated ring 0). Built for
//! musl it is 0.46 MB; built for glibc with a static C runtime, 1.04 MB.
//! musl is used when its Rust standard library is installed
//! (`rustup target add x86_64-unknown-linux-musl`, which
//! scripts/install-deps.sh tries); otherwise static glibc, which every
//! toolchain can build.

use std::path::Path;
use std::process::Command;

/// A target the agent can be built for, with the flags that make it static.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTarget {
    pub triple: &'static str,
    pub rustflags: &'static str,
}

const MUSL: AgentTarget = AgentTarget {
    triple: "x86_64-unknown-linux-musl",
    rustflags: "-C relocation-model=static",
};

const GLIBC_STATIC: AgentTarget = AgentTarget {
    triple: "x86_64-unknown-linux-gnu",
    rustflags: "-C target-feature=+crt-static -C relocation-model=static",
};

impl AgentTarget {
    /// musl when the toolchain has it, static glibc otherwise.
    pub fn detect() -> Self {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let sysroot = Command::new(rustc)
            .args(["--print", "sysroot"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
        match sysroot {
            Some(root) if has_target(Path::new(&root), MUSL.triple) => MUSL,
            _ => GLIBC_STATIC,
        }
    }
}

fn has_target(sysroot: &Path, triple: &str) -> bool {
    sysroot
        .join("lib/rustlib")
        .join(triple)
        .join("lib")
        .is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_counts_only_when_its_std_is_installed() {
        let root = std::env::temp_dir().join(format!("nimbus-sysroot-{}", std::process::id()));
        assert!(!has_target(&root, MUSL.triple));
        std::fs::create_dir_all(root.join("lib/rustlib/x86_64-unknown-linux-musl/lib")).unwrap();
        assert!(has_target(&root, MUSL.triple));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn glibc_is_linked_statically() {
        assert!(GLIBC_STATIC.rustflags.contains("+crt-static"));
    }
}
