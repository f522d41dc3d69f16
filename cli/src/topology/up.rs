//! `nimbus up FILE`: validate everything, compare with the host, then
//! create, change and delete in dependency order. `nimbus scale` and the
//! autoscaler run the same pipeline with a scale set's `replicas`
//! replaced, keeping only the changes that concern that set.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use super::apply::{Executor, ServiceOptions};
use super::desired::{Desired, Kind, ScaleSetV, Spec};
use super::diagnostic::Diagnostics;
use super::observed::Observed;
use super::plan::{self, Action, Plan};
use super::progress::Progress;
use super::{host_view, load_valid_with, Common, Refused};

/// How long a new VM may take to pass its probes once its guest is ready.
pub const IN_SERVICE_LIMIT: Duration = Duration::from_secs(120);

/// Niceness of instances booting next to serving ones.
const BOOT_NICE: i32 = 15;

/// How `up` runs.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Print the changes only.
    pub dry_run: bool,
    /// Wait for each new VM's readiness (and probes) this long.
    pub wait_ready: Option<Duration>,
    /// How long the flows of a VM that goes may drain.
    pub drain_timeout: Duration,
    /// Scale sets (file names) whose `replicas` are replaced.
    pub replicas: BTreeMap<String, u32>,
    /// Only the changes of this scale set (its instances, their NICs and
    /// their pool memberships); everything else is left as it is.
    pub only_scale_set: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Changes made.
    pub changes: usize,
    /// Changes the file asks for that were left out (`only_scale_set`).
    pub skipped: usize,
}

/// Instances a scale set has on the host.
pub fn instances_on_host(desired: &Desired, set: &ScaleSetV, observed: &Observed) -> Vec<u32> {
    let mut v: Vec<u32> = observed
        .objects
        .keys()
        .filter(|id| id.kind == Kind::Vm)
        .filter_map(|id| set.index_of(&desired.name, &id.name))
        .collect();
    v.sort_unstable();
    v
}

/// Runs `nimbus up`; VMs are started in the background, or, with
/// `wait_ready`, waited for until their guests report readiness.
pub fn run(c: &Common, o: &UpOptions) -> Result<ExitCode> {
    apply(c, o).map(|_| ExitCode::SUCCESS)
}

/// The pipeline behind `up`, `scale` and `autoscale`.
pub fn apply(c: &Common, o: &UpOptions) -> Result<Outcome> {
    let progress = Progress::default();
    let mut desired = load_valid_with(&c.file, &o.replicas)?;
    let name = desired.name.clone();
    let view = host_view(c, &name, desired.has_vms())?;
    // A scale set under an autoscale rule keeps the size the autoscaler
    // gave it (within the rule's range): `replicas` is only where it
    // starts, as with a Deployment under a HorizontalPodAutoscaler.
    let mut replicas = o.replicas.clone();
    for set in &desired.scale_sets {
        let (Some(rule), false) = (set.autoscale, replicas.contains_key(&set.name)) else {
            continue;
        };
        let now = instances_on_host(&desired, set, &view.observed).len() as u32;
        if now > 0 {
            let keep = now.clamp(rule.min_replicas, rule.max_replicas);
            if keep != set.replicas {
                replicas.insert(set.name.clone(), keep);
            }
        }
    }
    if replicas != o.replicas {
        desired = load_valid_with(&c.file, &replicas)?;
    }
    let mut plan = plan::plan(&desired, &view.observed, &view.owned, &view.others)
        .map_err(|e| Refused(Diagnostics::new(&c.file, e)))?;
    let mut skipped = 0;
    if let Some(only) = &o.only_scale_set {
        let set = desired
            .scale_set(only)
            .ok_or_else(|| anyhow::anyhow!("{}: no scale set '{only}'", c.file.display()))?;
        skipped = keep_only_scale_set(&mut plan, &desired.name, set);
    }
    if plan.is_empty() {
        println!(
            "topology {name}: up to date, nothing changed ({} objects{})",
            plan.unchanged.len(),
            if skipped > 0 {
                format!("; {skipped} other change(s) of the file left to `nimbus up`")
            } else {
                String::new()
            }
        );
        return Ok(Outcome {
            changes: 0,
            skipped,
        });
    }
    if o.dry_run {
        for action in plan.stages.iter().flatten() {
            let verb = match action {
                Action::Create { .. } => "create",
                Action::Update { .. } => "update",
                Action::Replace { .. } => "replace (rolling update)",
                Action::Delete { .. } => "delete",
            };
            println!("would {verb} {}", action.id());
        }
        println!(
            "topology {name}: {} changes, {} objects unchanged (dry run: nothing changed)",
            plan.len(),
            plan.unchanged.len()
        );
        return Ok(Outcome {
            changes: 0,
            skipped,
        });
    }
    println!(
        "topology {name}: {} changes, {} objects unchanged",
        plan.len(),
        plan.unchanged.len()
    );
    // New instances of a set that serves boot at low priority (see
    // `ServiceOptions::boot_nice`); a whole new topology boots at full speed.
    let joins_serving_set = plan.stages.iter().flatten().any(|a| match a {
        Action::Replace { .. } => true,
        Action::Create { id, .. } if id.kind == Kind::Vm => desired.scale_sets.iter().any(|s| {
            s.index_of(&desired.name, &id.name).is_some()
                && !instances_on_host(&desired, s, &view.observed).is_empty()
        }),
        _ => false,
    });
    view.store.set_file(&c.file)?;
    let vms = c.vms();
    let exec = Executor {
        socket: &c.host.netd_socket,
        store: &view.store,
        progress: &progress,
        vms: &vms,
        start: crate::vm::StartOptions {
            wait_ready: o.wait_ready,
            progress: false,
        },
        service: ServiceOptions {
            drain_timeout: Some(o.drain_timeout),
            in_service_timeout: o.wait_ready.map(|_| IN_SERVICE_LIMIT),
            boot_nice: joins_serving_set.then_some(BOOT_NICE),
        },
    };
    match exec.run(&plan) {
        Ok(n) => {
            view.store.delete_if_empty()?;
            println!(
                "topology {name}: up in {:.2} s ({n} changes)",
                progress.elapsed()
            );
            Ok(Outcome {
                changes: n,
                skipped,
            })
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("nimbus: error: {e}");
            }
            anyhow::bail!(
                "topology {name}: {} change(s) failed; what was created is recorded in {} and `nimbus down {}` removes it",
                errors.len(),
                view.store.path().display(),
                c.file.display()
            )
        }
    }
}

/// Keeps the actions that concern scale set `set` only: its instances and
/// their NICs created or deleted, and their pool memberships (an LB update
/// is cut down to those). Returns how many other actions were dropped.
fn keep_only_scale_set(plan: &mut Plan, rg: &str, set: &ScaleSetV) -> usize {
    let mine = |name: &str| set.index_of(rg, name).is_some();
    let mut skipped = 0;
    for stage in &mut plan.stages {
        let actions = std::mem::take(stage);
        for a in actions {
            match a {
                Action::Create { ref id, .. } | Action::Delete { ref id, .. }
                    if matches!(id.kind, Kind::Vm | Kind::Nic) && mine(&id.name) =>
                {
                    stage.push(a)
                }
                Action::Update {
                    id,
                    want: Spec::Lb { pools: want, .. },
                    have,
                } => {
                    let Spec::Lb { pools: had, .. } = &have else {
                        skipped += 1;
                        continue;
                    };
                    let mut pools = had.clone();
                    for p in &mut pools {
                        let Some(w) = want.iter().find(|w| w.name == p.name) else {
                            continue;
                        };
                        p.members.retain(|m| !mine(m));
                        p.members
                            .extend(w.members.iter().filter(|m| mine(m)).cloned());
                        p.members.sort();
                    }
                    let mut lb = have.clone();
                    if let Spec::Lb { pools: slot, .. } = &mut lb {
                        *slot = pools;
                    }
                    let mut whole = lb.clone();
                    if let Spec::Lb { pools: slot, .. } = &mut whole {
                        slot.clone_from(&want);
                    }
                    if lb != whole {
                        skipped += 1;
                    }
                    if lb != have {
                        stage.push(Action::Update { id, want: lb, have });
                    }
                }
                _ => skipped += 1,
            }
        }
    }
    plan.stages.retain(|s| !s.is_empty());
    skipped
}
