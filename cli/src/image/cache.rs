//! The image cache: `<cache>/images/<key>/` holds one complete image set,
//! `<cache>/kernel/<kernel key>/` the guest kernel it was made with. Keys are
//! SHA-256 hashes of every input, so a changed input means a new directory
//! and an unchanged one a cache hit.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::agent_target::AgentTarget;
use super::recipes::Recipes;

/// Bumped when the layout of a cached image set changes.
const CACHE_FORMAT: &str = "nimbus-images-v1";

/// The Debian package whose tarball the guest kernel is built from.
pub const KERNEL_SOURCE_PACKAGE: &str = "linux-source-6.1";
/// The Debian package that provides busybox for the guest.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// One set of guest images, built or not.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Hash of every input of the set.
    pub key: String,
    /// Hash of the kernel's inputs only (the agent changes far more often).
    pub kernel_key: String,
    /// `<cache>/images/<key>`.
    pub dir: PathBuf,
    /// `<cache>/kernel/<kernel_key>`.
    pub kernel_dir: PathBuf,
    /// The cache root.
    pub cache_root: PathBuf,
    /// What the agent is (to be) built for.
    pub agent_target: AgentTarget,
}

impl ImageSet {
    /// Computes the keys of the image set the recipes describe.
    pub fn for_recipes(recipes: &Recipes, cache_dir: Option<&Path>) -> Result<Self> {
        let cache_root = match cache_dir {
            Some(dir) => dir.to_path_buf(),
            None => default_cache_root()?,
        };
        let versions = package_versions(&[KERNEL_SOURCE_PACKAGE, BUSYBOX_PACKAGE]);

        let mut kernel = Sha256::new();
        kernel.update(CACHE_FORMAT);
        kernel.update(format!("{KERNEL_SOURCE_PACKAGE}={}\n", versions[0]));
        hash_files(&mut kernel, &recipes.root, &recipes.kernel_inputs()?)?;
        let kernel_key = hex(&kernel.finalize());

        let agent_target = AgentTarget::detect();
        let mut all = Sha256::new();
        all.update(&kernel_key);
        all.update(format!("agent-target={}\n", agent_target.triple));
        all.update(format!("{BUSYBOX_PACKAGE}={}\n", versions[1]));
        hash_files(&mut all, &recipes.root, &recipes.rootfs_inputs()?)?;
        let key = hex(&all.finalize());

        Ok(Self {
            dir: cache_root.join("images").join(&key[..16]),
            kernel_dir: cache_root.join("kernel").join(&kernel_key[..16]),
            key,
            kernel_key,
            cache_root,
            agent_target,
        })
    }

    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }

    /// The agent alone: the default, fastest boot.
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.cpio")
    }

    /// The agent plus busybox, for interactive use.
    pub fn initramfs_full(&self) -> PathBuf {
        self.dir.join("initramfs-full.cpio")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs.ext4")
    }

    /// A set is built when its directory exists: it is renamed into place
    /// only once complete.
    pub fn is_built(&self) -> bool {
        self.dir.join(MANIFEST).is_file()
    }

    pub fn kernel_is_built(&self) -> bool {
        self.kernel_dir.join("vmlinux").is_file() && self.kernel_dir.join("bzImage").is_file()
    }
}

/// Written last into a finished set; its presence means "complete".
pub const MANIFEST: &str = "manifest.json";

fn default_cache_root() -> Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("nimbus"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither XDG_CACHE_HOME nor HOME is set: pass --cache-dir")?;
    Ok(PathBuf::from(home).join(".cache/nimbus"))
}

/// Installed versions of Debian packages ("missing" when not installed, so
/// that installing the package later changes the key).
fn package_versions(packages: &[&str]) -> Vec<String> {
    let query = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package}=${Version}\\n"])
        .args(packages)
        .output();
    let listing = query
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    packages
        .iter()
        .map(|package| {
            listing
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{package}=")))
                .filter(|version| !version.is_empty())
                .unwrap_or("missing")
                .to_string()
        })
        .collect()
}

/// Feeds each file's path (relative to `root`) and content into `hasher`.
fn hash_files(hasher: &mut Sha256, root: &Path, files: &[PathBuf]) -> Result<()> {
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(file);
        let content =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn hash_depends_on_content_and_path() {
        let dir = std::env::temp_dir().join(format!("nimbus-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        std::fs::write(&a, b"one").unwrap();
        let digest = |files: &[PathBuf]| {
            let mut h = Sha256::new();
            hash_files(&mut h, &dir, files).unwrap();
            hex(&h.finalize())
        };
        let first = digest(std::slice::from_ref(&a));
        assert_eq!(
            first,
            digest(std::slice::from_ref(&a)),
            "same input, same key"
        );
        std::fs::write(&a, b"two").unwrap();
        assert_ne!(
            first,
            digest(std::slice::from_ref(&a)),
            "content change, new key"
        );
        let b = dir.join("b");
        std::fs::write(&b, b"one").unwrap();
        std::fs::write(&a, b"one").unwrap();
        assert_ne!(digest(&[a]), digest(&[b]), "path is part of the key");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
