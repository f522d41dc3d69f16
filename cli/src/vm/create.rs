//! Creating and deleting VMs. Create checks everything first (spec, name,
//! memory, images, NICs) and only then makes the VM's directory; if a
//! later step fails (a disk cannot be made) the directory is removed, so a
//! refused create leaves nothing behind. The VM exists once vm.json does.

use std::path::{Path, PathBuf};

use super::disks;
use super::error::{io_err, VmError};
use super::nics;
use super::spec::{DiskSpec, Image, VmSpec};
use super::store::{DiskBinding, StoredVm};
use super::supervisor::{self, StopOptions};
use super::Context;

fn check_file(vm: &str, field: &'static str, path: &Path) -> Result<(), VmError> {
    let err = |reason: String| VmError::Image {
        vm: vm.to_string(),
        field,
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    std::fs::File::open(path).map_err(|e| err(format!("cannot be read: {e}")))?;
    Ok(())
}

/// (kernel, initrd, rootfs to copy) for the spec's image.
fn resolve_image(
    ctx: &Context,
    spec: &VmSpec,
) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>), VmError> {
    let files = match &spec.image {
        Image::Default | Image::DefaultRootfs | Image::Rootfs { .. } => {
            let set = crate::image::ensure_built(&ctx.images).map_err(|e| VmError::Images {
                vm: spec.name.clone(),
                reason: format!("{e:#}"),
            })?;
            match &spec.image {
                Image::Default => (set.vmlinux(), Some(set.initramfs()), None),
                Image::Rootfs { path } => (set.vmlinux(), None, Some(path.clone())),
                _ => (set.vmlinux(), None, Some(set.rootfs())),
            }
        }
        Image::Files {
            kernel,
            initrd,
            rootfs,
        } => (kernel.clone(), initrd.clone(), rootfs.clone()),
    };
    check_file(&spec.name, "kernel", &files.0)?;
    if let Some(i) = &files.1 {
        check_file(&spec.name, "initrd", i)?;
    }
    if let Some(r) = &files.2 {
        check_file(&spec.name, "rootfs", r)?;
    }
    Ok(files)
}

/// Which VM uses `nic`, if any.
fn nic_user(ctx: &Context, nic: &str) -> Result<Option<String>, VmError> {
    for name in ctx.state.names()? {
        let vm = ctx.state.vm(&name).load()?;
        if vm.spec.nics.iter().any(|n| n == nic) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Removes a half-made VM directory unless disarmed.
struct Cleanup<'a>(Option<&'a Path>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Creates VM `spec.name` (not started). Nothing is created on error.
pub fn create(ctx: &Context, spec: &VmSpec) -> Result<StoredVm, VmError> {
    spec.validate()?;
    let name = &spec.name;
    let _lock = ctx.state.lock()?;
    let dir = ctx.state.vm(name);
    if dir.exists() {
        return Err(VmError::Duplicate(name.clone()));
    }
    dir.check_socket_paths()?;
    if let Some(avail) = vmm::host::mem_available_bytes() {
        if spec.memory_mib > avail >> 20 {
            return Err(VmError::Invalid {
                vm: name.clone(),
                field: "memory",
                reason: format!(
                    "{} MiB: more than the host's available memory ({} MiB)",
                    spec.memory_mib,
                    avail >> 20
                ),
            });
        }
    }
    let (kernel, initrd, rootfs) = resolve_image(ctx, spec)?;
    for disk in &spec.disks {
        if let DiskSpec::Attach { path, .. } = disk {
            check_file(name, "disk", path)?;
        }
    }
    for nic in &spec.nics {
        if let Some(other) = nic_user(ctx, nic)? {
            return Err(VmError::NicInUse {
                vm: name.clone(),
                nic: nic.clone(),
                other,
            });
        }
    }
    let nic_bindings = nics::resolve(&ctx.netd_socket, name, &spec.nics)?;

    // A directory without vm.json is what a create that died left.
    if dir.path.exists() {
        std::fs::remove_dir_all(&dir.path).map_err(io_err(name, "remove leftover", &dir.path))?;
    }
    std::fs::create_dir_all(&dir.path).map_err(io_err(name, "create", &dir.path))?;
    let mut cleanup = Cleanup(Some(&dir.path));
    let root_disk = match rootfs {
        Some(from) => {
            let to = dir.path.join("root.ext4");
            disks::copy_root(name, &from, &to)?;
            Some(to)
        }
        None => None,
    };
    let mut bindings = Vec::with_capacity(spec.disks.len());
    for (i, disk) in spec.disks.iter().enumerate() {
        bindings.push(match disk {
            DiskSpec::New { size_mib } => {
                let path = dir.path.join(format!("data{i}.raw"));
                disks::create_data_disk(name, &path, *size_mib)?;
                DiskBinding {
                    path,
                    read_only: false,
                    mount: Some(format!("/mnt/data{i}")),
                    owned: true,
                }
            }
            DiskSpec::Attach {
                path,
                read_only,
                mount,
            } => DiskBinding {
                path: std::fs::canonicalize(path).map_err(io_err(name, "resolve", path))?,
                read_only: *read_only,
                mount: mount.clone(),
                owned: false,
            },
        });
    }
    let stored = StoredVm {
        spec: spec.clone(),
        kernel,
        initrd,
        root_disk,
        disks: bindings,
        nics: nic_bindings,
        created_at_unix_s: vmm::exit_record::unix_now_s(),
    };
    dir.save(&stored)?;
    cleanup.0 = None;
    Ok(stored)
}

/// Deletes VM `name`: its directory and everything in it (attached disks
/// that live elsewhere are left alone). A running VM is refused unless
/// `force`, which kills it first.
pub fn delete(ctx: &Context, name: &str, force: bool) -> Result<(), VmError> {
    let _lock = ctx.state.lock()?;
    let dir = ctx.state.vm(name);
    if !dir.exists() {
        return Err(VmError::NotFound(name.to_string()));
    }
    if supervisor::is_active(&dir)? {
        if !force {
            return Err(VmError::Running(name.to_string()));
        }
        supervisor::stop(
            ctx,
            name,
            &StopOptions {
                force: true,
                ..StopOptions::default()
            },
        )?;
    }
    std::fs::remove_dir_all(&dir.path).map_err(io_err(name, "remove", &dir.path))
}
