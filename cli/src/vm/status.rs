//! What `nimbus vm list` / `show` report about a VM, gathered from its
//! directory, the process table and (when it runs) its VMM's API.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use vmm::exit_record::ExitRecord;

use super::api_client;
use super::error::VmError;
use super::process;
use super::state::{derive, VmState};
use super::store::{DiskBinding, NicBinding, VmDir};
use super::Context;

/// One VM's status.
#[derive(Debug, Clone, Serialize)]
pub struct VmStatus {
    /// Name.
    pub name: String,
    /// running, paused, stopped or failed.
    pub state: VmState,
    /// Why it is stopped or failed (or why the API did not answer).
    pub reason: Option<String>,
    /// Named size, if one was used.
    pub size: Option<String>,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Private IPs of its NICs.
    pub ips: Vec<String>,
    /// NICs.
    pub nics: Vec<NicBinding>,
    /// Data disks.
    pub disks: Vec<DiskBinding>,
    /// Root disk.
    pub root_disk: Option<PathBuf>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The VMM's pid while it runs.
    pub pid: Option<u32>,
    /// Seconds since the VM started (while it runs).
    pub uptime_s: Option<f64>,
    /// CPU seconds of the whole VMM process (while it runs).
    pub cpu_s: Option<f64>,
    /// CPU seconds of its vCPU threads, summed (while it runs).
    pub vcpu_cpu_s: Option<f64>,
    /// How the last run ended.
    pub exit: Option<ExitRecord>,
    /// The VM's directory (console.log, vmm.log, disks).
    pub dir: PathBuf,
}

/// The status of VM `name`.
pub fn status(ctx: &Context, name: &str) -> Result<VmStatus, VmError> {
    let dir = ctx.state.vm(name);
    gather(&dir)
}

/// The status of every VM, by name.
pub fn list(ctx: &Context) -> Result<Vec<VmStatus>, VmError> {
    ctx.state
        .names()?
        .iter()
        .map(|n| gather(&ctx.state.vm(n)))
        .collect()
}

fn gather(dir: &VmDir) -> Result<VmStatus, VmError> {
    let vm = dir.load()?;
    let run = dir.run_record()?;
    let alive = run
        .as_ref()
        .is_some_and(|r| process::is_alive(r.pid, r.start_time));
    let exit = dir.exit_record();
    let derived = derive(run.as_ref(), alive, exit.as_ref());
    let mut s = VmStatus {
        name: dir.name.clone(),
        state: derived.state,
        reason: derived.reason,
        size: vm.spec.size.clone(),
        vcpus: vm.spec.vcpus,
        memory_mib: vm.spec.memory_mib,
        ips: vm.nics.iter().map(|n| n.ip.clone()).collect(),
        nics: vm.nics,
        disks: vm.disks,
        root_disk: vm.root_disk,
        tags: vm.spec.tags,
        pid: None,
        uptime_s: None,
        cpu_s: None,
        vcpu_cpu_s: None,
        exit: exit.filter(|e| run.as_ref().is_some_and(|r| r.pid == e.pid)),
        dir: dir.path.clone(),
    };
    if let (true, Some(run)) = (alive, run) {
        s.pid = Some(run.pid);
        s.exit = None;
        s.uptime_s = Some((vmm::exit_record::unix_now_s() - run.started_at_unix_s).max(0.0));
        match api_client::status(&dir.api_socket()) {
            Ok(api) => {
                if api.state == vmm::api::protocol::RunningState::Paused {
                    s.state = VmState::Paused;
                }
                s.uptime_s = Some(api.uptime_s);
                s.cpu_s = Some(api.process_cpu_s);
                s.vcpu_cpu_s = Some(api.vcpu_cpu.iter().map(|v| v.cpu_s).sum());
            }
            // Still starting, or stuck: the process is there, so running.
            Err(e) => s.reason = Some(format!("API did not answer: {e}")),
        }
    }
    Ok(s)
}
