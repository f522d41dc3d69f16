//! Building an image set: kernel (cached on its own key), guest agent,
//! initramfs and rootfs. Each step writes into a temporary directory that is
//! renamed into place only when complete, so an interrupted build never
//! leaves a half-made set that a later run would trust.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::cache::{ImageSet, MANIFEST};
use super::recipes::Recipes;
use super::ImageLocation;

/// Returns the image set for `location`, building whatever is missing.
pub fn ensure_built(location: &ImageLocation) -> Result<ImageSet> {
    build(location, false)
}

/// Builds the image set (all of it when `force`).
pub fn build(location: &ImageLocation, force: bool) -> Result<ImageSet> {
    let recipes = Recipes::locate(location.recipes.as_deref())?;
    let set = ImageSet::for_recipes(&recipes, location.cache_dir.as_deref())?;
    if set.is_built() && !force {
        return Ok(set);
    }
    std::fs::create_dir_all(&set.cache_root)
        .with_context(|| format!("cannot create the cache {}", set.cache_root.display()))?;
    // Concurrent builders (parallel tests, two terminals) wait for each other
    // instead of compiling the same kernel twice.
    let _lock = CacheLock::acquire(&set.cache_root)?;
    if set.is_built() && !force {
        return Ok(set);
    }
    let started = Instant::now();
    if force || !set.kernel_is_built() {
        build_kernel(&recipes, &set)?;
    } else {
        progress(&format!("kernel cached in {}", set.kernel_dir.display()));
    }
    let agent = build_agent(&recipes, &set)?;
    assemble(&recipes, &set, &agent)?;
    progress(&format!(
        "images ready in {} ({:.1} s)",
        set.dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(set)
}

fn build_kernel(recipes: &Recipes, set: &ImageSet) -> Result<()> {
    progress("building the guest kernel (about 4 minutes on 2 cores the first time)");
    let staging = fresh_dir(&set.kernel_dir.with_extension("partial"))?;
    let work = set.cache_root.join("kernel-work");
    run_step(
        "kernel",
        Command::new("bash")
            .arg(recipes.kernel_build_script())
            .arg(&staging)
            .env("NIMBUS_KERNEL_WORK", &work),
    )?;
    for artifact in ["vmlinux", "bzImage"] {
        if !staging.join(artifact).is_file() {
            bail!(
                "the kernel recipe {} finished without producing {artifact}",
                recipes.kernel_build_script().display()
            );
        }
    }
    replace_dir(&staging, &set.kernel_dir)
}

fn build_agent(recipes: &Recipes, set: &ImageSet) -> Result<PathBuf> {
    progress(&format!(
        "building the guest agent (static, {})",
        set.agent_target.triple
    ));
    // One cargo target directory per source tree: cargo trusts file times,
    // and two trees (a worktree, a clean clone) sharing one directory
    // overwrite each other's final binary while each tree's fingerprints
    // still say "fresh", so an image could get the other tree's agent.
    let tree = Sha256::digest(recipes.workspace().to_string_lossy().as_bytes());
    let tree: String = tree[..8].iter().map(|b| format!("{b:02x}")).collect();
    let target_dir = set.cache_root.join("agent-build").join(tree);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_step(
        "agent",
        Command::new(cargo)
            .current_dir(recipes.workspace())
            .args(["build", "--profile", "agent", "-p", "nimbus-agent"])
            .arg("--target")
            .arg(set.agent_target.triple)
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", set.agent_target.rustflags),
    )?;
    let binary = target_dir
        .join(set.agent_target.triple)
        .join("agent/nimbus-agent");
    if !binary.is_file() {
        bail!("cargo finished without producing {}", binary.display());
    }
    Ok(binary)
}

fn assemble(recipes: &Recipes, set: &ImageSet, agent: &Path) -> Result<()> {
    progress("building the initramfs and the ext4 rootfs");
    let staging = fresh_dir(&set.dir.with_extension("partial"))?;
    run_step(
        "rootfs",
        Command::new("bash")
            .arg(recipes.rootfs_build_script())
            .arg(agent)
            .arg(&staging),
    )?;
    for artifact in ["vmlinux", "bzImage"] {
        std::fs::copy(set.kernel_dir.join(artifact), staging.join(artifact))
            .with_context(|| format!("cannot copy {artifact} into {}", staging.display()))?;
    }
    let manifest = serde_json::json!({
        "key": set.key,
        "kernel_key": set.kernel_key,
        "recipes": recipes.root,
    });
    std::fs::write(
        staging.join(MANIFEST),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    replace_dir(&staging, &set.dir)
}

/// Runs one recipe step; its own output goes to the terminal (the recipes
/// print short progress lines and keep noisy logs in files).
fn run_step(name: &str, command: &mut Command) -> Result<()> {
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("cannot start the {name} step ({command:?})"))?;
    if !status.success() {
        bail!("the {name} step failed ({status}); see the output above");
    }
    progress(&format!(
        "{name} step done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn progress(message: &str) {
    eprintln!("[image] {message}");
}

fn fresh_dir(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        std::fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove the stale {}", path.display()))?;
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Moves a finished staging directory to `target`, replacing an older one.
fn replace_dir(staging: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        std::fs::remove_dir_all(target)
            .with_context(|| format!("cannot remove the old {}", target.display()))?;
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(staging, target)
        .with_context(|| format!("cannot move {} to {}", staging.display(), target.display()))
}

/// An exclusive `flock` on `<cache>/lock`, released on drop.
struct CacheLock {
    _file: File,
}

impl CacheLock {
    fn acquire(cache_root: &Path) -> Result<Self> {
        let path = cache_root.join("lock");
        let file =
            File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open for
        // the duration of the call; it touches no memory of ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(Self { _file: file })
    }
}
