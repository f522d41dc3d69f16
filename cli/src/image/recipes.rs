//! The recipe tree (`guest-images/`) and the inputs each build step hashes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The `guest-images/` directory of a nimbus source tree.
#[derive(Debug, Clone)]
pub struct Recipes {
    pub root: PathBuf,
}

/// Where the recipes are when nothing says otherwise: the source tree this
/// binary was built from.
const BUILT_FROM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-images");

impl Recipes {
    /// Finds the recipe tree: `explicit` (flag or environment) or the source
    /// tree nimbus was built from.
    pub fn locate(explicit: Option<&Path>) -> Result<Self> {
        let root = explicit.map_or_else(|| PathBuf::from(BUILT_FROM), Path::to_path_buf);
        let marker = root.join("kernel/config.fragment");
        if !marker.is_file() {
            bail!(
                "guest image recipes not found: {} does not exist (point --recipes or \
                 NIMBUS_GUEST_IMAGES at the guest-images/ directory of a nimbus checkout)",
                marker.display()
            );
        }
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", root.display()))?;
        Ok(Self { root })
    }

    /// The cargo workspace that holds the guest agent.
    pub fn workspace(&self) -> PathBuf {
        self.root.join("..")
    }

    pub fn kernel_build_script(&self) -> PathBuf {
        self.root.join("kernel/build.sh")
    }

    pub fn rootfs_build_script(&self) -> PathBuf {
        self.root.join("rootfs/build.sh")
    }

    /// Files whose content decides the guest kernel.
    pub fn kernel_inputs(&self) -> Result<Vec<PathBuf>> {
        files_under(&self.root.join("kernel"))
    }

    /// Files whose content decides the initramfs and rootfs (besides the
    /// kernel): the agent's sources, the lock file and the rootfs recipe.
    pub fn rootfs_inputs(&self) -> Result<Vec<PathBuf>> {
        let mut files = files_under(&self.root.join("agent"))?;
        files.extend(files_under(&self.root.join("rootfs"))?);
        let lock = self.workspace().join("Cargo.lock");
        if lock.is_file() {
            files.push(lock);
        }
        Ok(files)
    }
}

/// Every regular file below `dir`, sorted, so hashing is deterministic.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .with_context(|| format!("cannot read {}", current.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", current.display()))?;
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                pending.push(entry.path());
            } else if file_type.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}
