//! `nimbus image`: the guest images (kernel, initramfs, rootfs) built from
//! the recipes in `guest-images/` and cached by the hash of their inputs.

mod agent_target;
mod build;
mod cache;
mod recipes;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::output::{print_key_values, OutputFormat};

pub use build::ensure_built;
pub use cache::ImageSet;
pub use recipes::Recipes;

/// Where the image recipes and the cache are.
#[derive(Args, Debug, Clone)]
pub struct ImageLocation {
    /// Directory holding the image recipes (kernel config, patches, agent,
    /// rootfs script). Defaults to the `guest-images/` directory of the source
    /// tree nimbus was built from.
    #[arg(long, env = "NIMBUS_GUEST_IMAGES", value_name = "DIR")]
    pub recipes: Option<PathBuf>,
    /// Cache directory for built images [default: $XDG_CACHE_HOME/nimbus or
    /// ~/.cache/nimbus].
    #[arg(long, env = "NIMBUS_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build the default guest images if the cache does not hold them yet.
    ///
    /// The guest kernel is compiled from Debian's linux-source-6.1 with
    /// nimbus's config fragment and patches (about 4 minutes on 2 cores the
    /// first time); the agent and the initramfs/rootfs take seconds. With
    /// nothing changed, a rebuild is a cache hit and takes well under a second.
    Build {
        #[command(flatten)]
        location: ImageLocation,
        /// Rebuild even when the cache holds images for these inputs.
        #[arg(long)]
        force: bool,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show where the default images are and whether they are built.
    Show {
        #[command(flatten)]
        location: ImageLocation,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

pub fn dispatch(cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Build {
            location,
            force,
            output,
        } => {
            let set = build::build(&location, force)?;
            print_set(&set, output)
        }
        ImageCommand::Show { location, output } => {
            let recipes = Recipes::locate(location.recipes.as_deref())?;
            let set = cache::ImageSet::for_recipes(&recipes, location.cache_dir.as_deref())?;
            print_set(&set, output)
        }
    }
}

#[derive(Serialize)]
struct ImageSetView<'a> {
    key: &'a str,
    dir: &'a std::path::Path,
    built: bool,
    vmlinux: PathBuf,
    bzimage: PathBuf,
    initramfs: PathBuf,
    initramfs_full: PathBuf,
    rootfs: PathBuf,
}

fn print_set(set: &ImageSet, output: OutputFormat) -> Result<()> {
    let view = ImageSetView {
        key: &set.key,
        dir: &set.dir,
        built: set.is_built(),
        vmlinux: set.vmlinux(),
        bzimage: set.bzimage(),
        initramfs: set.initramfs(),
        initramfs_full: set.initramfs_full(),
        rootfs: set.rootfs(),
    };
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        OutputFormat::Table => print_key_values(&[
            ("key", view.key.to_string()),
            ("dir", view.dir.display().to_string()),
            ("built", view.built.to_string()),
            ("vmlinux", view.vmlinux.display().to_string()),
            ("bzImage", view.bzimage.display().to_string()),
            ("initramfs", view.initramfs.display().to_string()),
            (
                "initramfs (busybox)",
                view.initramfs_full.display().to_string(),
            ),
            ("rootfs", view.rootfs.display().to_string()),
        ]),
    }
    Ok(())
}
