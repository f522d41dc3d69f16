//! VMs as managed resources: `nimbus vm create|start|stop|restart|delete|
//! list|show|pause|resume|console|logs`.
//!
//! # Library API (for `nimbus up` and scale sets)
//!
//! ```ignore
//! use crate::vm::{self, Context, VmSpec, DiskSpec, StartOptions, StopOptions};
//! let ctx = Context::new(state_dir, netd_socket, image_location);
//! let mut spec = VmSpec::new("web-1").with_size("Lab1")?;   // 1 vCPU, 128 MiB
//! spec.disks.push(DiskSpec::New { size_mib: 256 });           // ext4, /mnt/data0
//! spec.nics.push("web-1-nic".into());                         // a netd NIC
//! vm::create(&ctx, &spec)?;                                   // VmError::Duplicate if it exists
//! vm::start(&ctx, "web-1", &StartOptions { wait_ready: Some(Duration::from_secs(600)), progress: false })?;
//! let s = vm::status(&ctx, "web-1")?;                         // s.state: Running|Paused|Stopped|Failed
//! vm::stop(&ctx, "web-1", &StopOptions::default())?;          // graceful, SIGKILL after 30 s
//! vm::delete(&ctx, "web-1", /* force */ true)?;
//! ```
//!
//! * [`create`] validates everything (spec, duplicate name, memory against
//!   MemAvailable, images, NICs known to netd and not used by another VM)
//!   before it creates anything; [`VmSpec`] serializes to JSON, so a
//!   topology engine can compare the stored spec ([`stored`]) with the
//!   wanted one to decide whether a VM changed.
//! * [`start`] returns once the VMM's API answers (and, with
//!   `wait_ready`, once the guest printed `NIMBUS_READY`); it is refused
//!   with [`VmError::AlreadyRunning`] for a running VM.
//! * [`status`] / [`list`] derive everything from the state directory and
//!   live processes: a VMM that is gone without a clean exit record is
//!   `Failed`. `vcpu_cpu_s` and `uptime_s` sampled twice give average vCPU
//!   utilization (Δvcpu_cpu_s / Δuptime_s / vcpus).
//! * Every function is safe to call from several processes at once: create
//!   and delete take a lock on the state directory, start/stop one on the
//!   VM's directory.
//!
//! Modules: `spec` (what a VM is), `size` (named sizes), `store` (the
//! state directory), `create` (create/delete), `supervisor` (start/stop of
//! the detached VMM), `process` (pids, start times, the double fork),
//! `state` (failed-vs-stopped derivation), `status` (list/show), `nics`
//! (netd), `disks`, `api_client` (the VMM's API), `console`, `logs`,
//! `commands` (the CLI).

mod api_client;
pub mod commands;
mod console;
mod create;
mod disks;
mod error;
mod logs;
mod nics;
mod process;
pub mod size;
pub mod spec;
mod state;
mod status;
pub mod store;
mod supervisor;

use std::path::PathBuf;

use vmm::api::protocol::{Request, RunningState};

// The library API for `nimbus up` and scale sets; not all of it is used
// by the `nimbus vm` commands themselves.
pub use create::{create, delete};
pub use error::VmError;
#[allow(unused_imports)]
pub use spec::{DiskSpec, Image, VmSpec};
#[allow(unused_imports)]
pub use state::VmState;
pub use status::{list, status, VmStatus};
pub use store::{StateDir, StoredVm};
pub use supervisor::{start, stop, StartOptions, StopOptions, Stopped};

use crate::image::ImageLocation;

/// Where VMs live and what they need from the rest of the host.
#[derive(Debug, Clone)]
pub struct Context {
    /// The state directory (`<state>/vms/<name>/`).
    pub state: StateDir,
    /// nimbus-netd's API socket (only asked when a VM has NICs).
    pub netd_socket: PathBuf,
    /// Where the default guest images are built and cached.
    pub images: ImageLocation,
    /// The nimbus-vmm binary; `None`: next to `nimbus`, or `NIMBUS_VMM`.
    pub vmm: Option<PathBuf>,
}

impl Context {
    /// A context with the VMM found next to `nimbus`.
    pub fn new(state: impl Into<PathBuf>, netd_socket: PathBuf, images: ImageLocation) -> Self {
        Context {
            state: StateDir::new(state),
            netd_socket,
            images,
            vmm: None,
        }
    }
}

/// The stored VM (spec and what it was resolved to).
#[allow(dead_code)] // library API (topology engine)
pub fn stored(ctx: &Context, name: &str) -> Result<StoredVm, VmError> {
    ctx.state.vm(name).load()
}

/// Stops (gracefully, see [`stop`]) and starts VM `name` again.
pub fn restart(
    ctx: &Context,
    name: &str,
    stop_opts: &StopOptions,
    start_opts: &StartOptions,
) -> Result<Stopped, VmError> {
    let stopped = stop(ctx, name, stop_opts)?;
    start(ctx, name, start_opts)?;
    Ok(stopped)
}

fn api_op(ctx: &Context, name: &str, request: Request) -> Result<RunningState, VmError> {
    let dir = ctx.state.vm(name);
    if !dir.exists() {
        return Err(VmError::NotFound(name.to_string()));
    }
    if !supervisor::is_active(&dir)? {
        return Err(VmError::Api {
            vm: name.to_string(),
            reason: "is not running".into(),
        });
    }
    let answer =
        api_client::call_ok(&dir.api_socket(), request).map_err(|reason| VmError::Api {
            vm: name.to_string(),
            reason,
        })?;
    Ok(answer.state.unwrap_or(RunningState::Running))
}

/// Parks VM `name`'s vCPUs.
pub fn pause(ctx: &Context, name: &str) -> Result<(), VmError> {
    api_op(ctx, name, Request::Pause).map(drop)
}

/// Lets them run again.
pub fn resume(ctx: &Context, name: &str) -> Result<(), VmError> {
    api_op(ctx, name, Request::Resume).map(drop)
}
