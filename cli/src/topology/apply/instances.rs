//! VMs in and out of their load balancers' service: a VM that goes is
//! taken out of its pools first (by the LB update that precedes it), its
//! open flows drain, and only then is it powered off and deleted; a new
//! one counts as up only once every probe that watches it passes; a
//! changed scale set instance is replaced with both steps around it (a
//! rolling update, one instance at a time).

use std::time::{Duration, Instant};

use netd::api::protocol::{MemberSpec, Request};
use serde_json::Value;

use super::{ApplyError, Executor};
use crate::topology::desired::{Id, Spec};

/// How often netd is asked while waiting.
const POLL: Duration = Duration::from_millis(250);
/// How long a replaced instance may take to boot.
const BOOT_LIMIT: Duration = Duration::from_secs(600);

/// How VMs leave and join service.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceOptions {
    /// Before a VM is deleted, wait up to this long for the flows of its
    /// NIC to drain (None: delete at once, as `down` does).
    pub drain_timeout: Option<Duration>,
    /// After a VM started (and its guest is ready), wait up to this long
    /// for the probes of the pools it is in to pass (None: do not wait).
    pub in_service_timeout: Option<Duration>,
    /// Boot new VMs at this CPU niceness until their guests are ready
    /// (None: normal priority). Used when instances join a set that
    /// serves: where the guest's ring 0 is emulated (kvm-pvm), a boot
    /// burns a whole core for a minute and would starve the serving
    /// instances into failing their probes; on other hosts a boot takes a
    /// second and this costs nothing.
    pub boot_nice: Option<i32>,
}

/// Sets the niceness of the calling thread (children forked from it
/// inherit it).
fn set_thread_nice(nice: i32) {
    // SAFETY: setpriority(2) on the calling thread (who = 0); no memory.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
}

/// Sets the niceness of every thread of process `pid`.
fn renice_process(pid: u32, nice: i32) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            // SAFETY: setpriority(2) on a thread id; no memory.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, tid, nice);
            }
        }
    }
}

/// What netd's data path says about one NIC as a backend.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct BackendState {
    /// Open flows, over every rule it serves in (draining or not).
    active: u64,
    /// Rules (with a probe) that do not see it Up yet: "lb/rule: state".
    not_up: Vec<String>,
    /// Pools that list it: (lb, pool).
    pools: Vec<(String, String)>,
}

fn backend_state(lbs: &[Value], nic: &str) -> BackendState {
    let mut s = BackendState::default();
    for lb in lbs {
        let name = lb["name"].as_str().unwrap_or_default();
        for pool in lb["pools"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let members = pool["members"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if members.iter().any(|m| m["nic"] == nic) {
                s.pools.push((
                    name.to_string(),
                    pool["name"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        for rule in lb["rules"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            for b in rule["backends"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if b["nic"] != nic {
                    continue;
                }
                s.active += b["counters"]["active"].as_u64().unwrap_or(0);
                let state = b["state"].as_str().unwrap_or("?");
                if !matches!(state, "Up" | "Unprobed") && b["draining"] != true {
                    s.not_up.push(format!(
                        "{name}/{}: {state} ({})",
                        rule["name"].as_str().unwrap_or("?"),
                        b["last_result"].as_str().unwrap_or("not probed yet")
                    ));
                }
            }
        }
    }
    s
}

impl Executor<'_> {
    /// Every load balancer as `lb show` gives it (with the data path's
    /// view of each backend).
    fn lb_views(&self, id: &Id) -> Result<Vec<Value>, ApplyError> {
        let list = self.call(id, &Request::LbList)?;
        let mut out = Vec::new();
        for lb in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(name) = lb["name"].as_str() else {
                continue;
            };
            out.push(self.call(
                id,
                &Request::LbShow {
                    name: name.to_string(),
                },
            )?);
        }
        Ok(out)
    }

    fn nic_state(&self, id: &Id, nic: &str) -> Result<BackendState, ApplyError> {
        Ok(backend_state(&self.lb_views(id)?, nic))
    }

    /// Waits until no flow to `nic` is open; says how long it took, or
    /// how many flows were cut when the time ran out.
    fn wait_drained(&self, id: &Id, nic: &str, limit: Duration) -> Result<String, ApplyError> {
        let t = Instant::now();
        loop {
            let s = self.nic_state(id, nic)?;
            if s.active == 0 {
                return Ok(format!("drained in {:.1} s", t.elapsed().as_secs_f64()));
            }
            if t.elapsed() > limit {
                return Ok(format!(
                    "{} flow(s) still open after the {} s drain timeout",
                    s.active,
                    limit.as_secs()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every probe watching `nic` passes.
    pub(super) fn wait_in_service(
        &self,
        id: &Id,
        nic: &str,
        limit: Duration,
    ) -> Result<Option<String>, ApplyError> {
        let t = Instant::now();
        loop {
            let s = self.nic_state(id, nic)?;
            if s.pools.is_empty() {
                return Ok(None);
            }
            if s.not_up.is_empty() {
                return Ok(Some(format!(
                    "in service after {:.1} s",
                    t.elapsed().as_secs_f64()
                )));
            }
            if t.elapsed() > limit {
                return Err(ApplyError::Unsupported {
                    id: id.clone(),
                    reason: format!(
                        "its probes did not pass within {} s: {}",
                        limit.as_secs(),
                        s.not_up.join("; ")
                    ),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn vm_err(id: &Id) -> impl FnOnce(crate::vm::VmError) -> ApplyError + '_ {
        move |source| ApplyError::Vm {
            id: id.clone(),
            source: Box::new(source),
        }
    }

    /// The first NIC of a stored VM.
    fn first_nic(&self, id: &Id) -> Option<String> {
        crate::vm::stored(self.vms, &id.name)
            .ok()
            .and_then(|s| s.spec.nics.first().cloned())
    }

    /// Starts VM `id` (waiting for its guest if `wait_ready`), at low CPU
    /// priority while it boots when `boot_nice` says so.
    pub(super) fn start_maybe_niced(
        &self,
        id: &Id,
        opts: &crate::vm::StartOptions,
    ) -> Result<(), ApplyError> {
        let Some(nice) = self.service.boot_nice.filter(|_| opts.wait_ready.is_some()) else {
            return crate::vm::start(self.vms, &id.name, opts).map_err(Self::vm_err(id));
        };
        // This worker thread forks the VMM: it inherits the niceness, and
        // so do the vCPU threads it creates.
        set_thread_nice(nice);
        let r = crate::vm::start(self.vms, &id.name, opts).map_err(Self::vm_err(id));
        set_thread_nice(0);
        if let Some(pid) = crate::vm::status(self.vms, &id.name)
            .ok()
            .and_then(|s| s.pid)
        {
            renice_process(pid, 0);
        }
        r
    }

    /// Deletes VM `id` after its flows drained (its pools no longer list
    /// it: the LB update ran in an earlier stage), with a graceful
    /// power-off first.
    pub(super) fn retire_vm(&self, id: &Id, drain: Duration) -> Result<String, ApplyError> {
        let mut steps = Vec::new();
        if let Some(nic) = self.first_nic(id) {
            let s = self.nic_state(id, &nic)?;
            // Still in a pool (the file keeps it there, or a pool that is
            // not the topology's lists it): leave them first.
            for (lb, pool) in &s.pools {
                self.call(
                    id,
                    &Request::LbPoolRemove {
                        lb: lb.clone(),
                        pool: pool.clone(),
                        nic: nic.clone(),
                    },
                )?;
                steps.push(format!("out of {lb}/{pool}"));
            }
            steps.push(self.wait_drained(id, &nic, drain)?);
        }
        let stop = crate::vm::StopOptions {
            timeout: Duration::from_secs(15),
            force: false,
        };
        match crate::vm::stop(self.vms, &id.name, &stop) {
            Ok(_) | Err(crate::vm::VmError::NotFound(_)) => {}
            Err(e) => return Err(Self::vm_err(id)(e)),
        }
        match crate::vm::delete(self.vms, &id.name, true) {
            Ok(()) | Err(crate::vm::VmError::NotFound(_)) => {}
            Err(e) => return Err(Self::vm_err(id)(e)),
        }
        Ok(steps.join(", "))
    }

    /// Replaces scale set instance `id` with one built from `want`: out of
    /// its pools, drained, deleted, created, started, ready, back in its
    /// pools, probes passing. Its NIC (and so its address) stays.
    pub(super) fn replace_instance(&self, id: &Id, want: &Spec) -> Result<String, ApplyError> {
        let Spec::Vm { spec, .. } = want else {
            return Err(ApplyError::Unsupported {
                id: id.clone(),
                reason: "only VMs are replaced".into(),
            });
        };
        let t = Instant::now();
        let nic = spec.nics.first().cloned();
        let pools = match &nic {
            Some(n) => self.nic_state(id, n)?.pools,
            None => Vec::new(),
        };
        let drain = self
            .service
            .drain_timeout
            .unwrap_or(Duration::from_secs(30));
        let mut steps = vec![self.retire_vm(id, drain)?];
        crate::vm::create(self.vms, spec).map_err(Self::vm_err(id))?;
        let start = crate::vm::StartOptions {
            wait_ready: Some(self.start.wait_ready.unwrap_or(BOOT_LIMIT)),
            progress: false,
        };
        self.start_maybe_niced(id, &start)?;
        steps.push("re-created, guest ready".into());
        if let Some(nic) = &nic {
            for (lb, pool) in &pools {
                self.call(
                    id,
                    &Request::LbPoolAdd {
                        lb: lb.clone(),
                        pool: pool.clone(),
                        member: MemberSpec {
                            nic: nic.clone(),
                            weight: None,
                        },
                    },
                )?;
            }
            let limit = self
                .service
                .in_service_timeout
                .unwrap_or(Duration::from_secs(120));
            if let Some(s) = self.wait_in_service(id, nic, limit)? {
                steps.push(s);
            }
        }
        steps.push(format!("{:.0} s", t.elapsed().as_secs_f64()));
        Ok(steps.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backend_state_sums_flows_and_lists_rules_not_up() {
        let lbs = vec![json!({
            "name": "rg-web",
            "pools": [{"name": "web", "members": [{"nic": "rg-web-0"}, {"nic": "rg-web-1"}]}],
            "rules": [
                {"name": "http", "backends": [
                    {"nic": "rg-web-0", "state": "Up", "draining": false, "counters": {"active": 2}},
                    {"nic": "rg-web-1", "state": "Down", "draining": false,
                     "last_result": "connect: refused", "counters": {"active": 0}},
                    {"nic": "rg-web-2", "state": "Up", "draining": true, "counters": {"active": 5}}
                ]},
                {"name": "alt", "backends": [
                    {"nic": "rg-web-2", "state": "Down", "draining": true, "counters": {"active": 1}}
                ]}
            ]
        })];
        let up = backend_state(&lbs, "rg-web-0");
        assert_eq!(up.active, 2);
        assert!(up.not_up.is_empty());
        assert_eq!(up.pools, [("rg-web".to_string(), "web".to_string())]);
        let booting = backend_state(&lbs, "rg-web-1");
        assert_eq!(booting.not_up, ["rg-web/http: Down (connect: refused)"]);
        let leaving = backend_state(&lbs, "rg-web-2");
        assert_eq!(leaving.active, 6);
        assert!(leaving.pools.is_empty());
        assert!(
            leaving.not_up.is_empty(),
            "draining backends are not waited for"
        );
        assert_eq!(backend_state(&[], "x"), BackendState::default());
    }
}
