//! Why a VM operation was refused or failed. Each message names the VM, the
//! field or file, and the reason.

use std::path::PathBuf;

/// A VM operation's error.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A field of the spec is invalid.
    #[error("VM {vm}: {field}: {reason}")]
    Invalid {
        /// The VM.
        vm: String,
        /// The field (name, size, memory, disk, nic, tag, ...).
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A VM of that name exists.
    #[error("VM {0}: already exists (delete it first, or pick another name)")]
    Duplicate(String),
    /// No VM of that name.
    #[error("VM {0}: no such VM (see `nimbus vm list`)")]
    NotFound(String),
    /// A NIC is attached to another VM already.
    #[error("VM {vm}: nic {nic}: already used by VM {other}")]
    NicInUse {
        /// The VM being created.
        vm: String,
        /// The NIC.
        nic: String,
        /// Who has it.
        other: String,
    },
    /// netd does not know the NIC, or cannot be asked.
    #[error("VM {vm}: nic {nic}: {reason}")]
    Nic {
        /// The VM.
        vm: String,
        /// The NIC.
        nic: String,
        /// Why.
        reason: String,
    },
    /// An image file is missing or unreadable.
    #[error("VM {vm}: {field} {path}: {reason}")]
    Image {
        /// The VM.
        vm: String,
        /// kernel, initrd, rootfs, disk.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The default guest images cannot be built or found.
    #[error("VM {vm}: guest images: {reason}")]
    Images {
        /// The VM.
        vm: String,
        /// Why.
        reason: String,
    },
    /// The VM runs and the operation needs it stopped.
    #[error("VM {0}: is running (stop it first, or use --force)")]
    Running(String),
    /// The VM runs already.
    #[error("VM {0}: is already running")]
    AlreadyRunning(String),
    /// nimbus-vmm did not come up.
    #[error("VM {vm}: nimbus-vmm did not start: {reason}")]
    StartFailed {
        /// The VM.
        vm: String,
        /// Why, with the end of the VMM's log.
        reason: String,
    },
    /// The guest did not report readiness in time.
    #[error("VM {vm}: {reason}")]
    NotReady {
        /// The VM.
        vm: String,
        /// What happened instead.
        reason: String,
    },
    /// The VMM's API refused or failed a request.
    #[error("VM {vm}: API: {reason}")]
    Api {
        /// The VM.
        vm: String,
        /// Why.
        reason: String,
    },
    /// A file or process operation failed.
    #[error("VM {vm}: {what} {path}: {source}")]
    Io {
        /// The VM ("-" for the state directory itself).
        vm: String,
        /// The step.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// `VmError::Io` for `vm`, step `what` on `path`.
pub fn io_err(
    vm: &str,
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> VmError {
    let (vm, path) = (vm.to_string(), path.into());
    move |source| VmError::Io {
        vm,
        what,
        path,
        source,
    }
}
