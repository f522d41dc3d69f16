//! `nimbus autoscale SET`: the control loop of a scale set's autoscale
//! rule (a Kubernetes HorizontalPodAutoscaler on average vCPU utilization).
//!
//! # Where the loop runs, and why
//!
//! In the foreground of its own `nimbus autoscale` process, one per scale
//! set, started by the user or by a service manager (a systemd unit like
//! `scripts/nimbus-netd.service`), not inside `nimbus-netd` and not
//! forked off by `nimbus up`:
//!
//! * netd owns host networking and runs as root; VMs belong to the VM
//!   store and are started as `nimbus-vmm` processes. Putting VM creation
//!   into netd would mix the two and make the network daemon's failures
//!   the VMs' failures.
//! * A detached process started by `up` would need its own supervision
//!   (restart, logs, stop on `down`), which a service manager already
//!   does well; the loop keeps no state that a restart would lose beyond
//!   its cool-down clock (it re-reads everything from the host).
//! * Running it in the foreground makes it observable: one line per
//!   period says what was measured and what was decided.
//!
//! Every period (`--interval`, default 15 s as the HPA's sync period) it
//! reads each running, ready instance's vCPU time and uptime from its
//! VMM's API (`nimbus vm show`: `vcpu_cpu_s`, `uptime_s`), computes the
//! utilization since the previous reading, averages it over the
//! instances, and asks [`rule::Decider`] for a new size. Instances that
//! are still booting are not measured (their boot burns a whole vCPU and
//! would ask for more instances), as the HPA ignores pods that are not
//! ready. A change runs `nimbus scale`'s pipeline, so new instances join
//! their pools only once their probe passes and leaving ones drain.

pub mod rule;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;

use super::desired::{SCALE_SET_TAG, TOPOLOGY_TAG};
use super::scale::{scale_to, Located, SetRef};
use super::{finish, load_valid};
use rule::{Decider, Sample};

/// `nimbus autoscale SET`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
The rule lives in the topology file:

  scale_sets:
    web:
      replicas: 2                  # where it starts
      subnet: web
      autoscale: {min_replicas: 1, max_replicas: 5, target_cpu_percent: 60, cooldown_seconds: 120}

  nimbus autoscale web              # runs until interrupted, one line per period
  nimbus autoscale web --once       # one measurement and decision, then exit

Instances are measured by vCPU time from their VMMs; booting instances are
not counted. Scale-up happens as soon as the average is above the target by
more than 10 %, scale-down only to the highest size recommended during the
last cool-down, and never twice within a cool-down.")]
pub struct AutoscaleArgs {
    #[command(flatten)]
    target: SetRef,
    /// Seconds between two measurements.
    #[arg(long, default_value_t = 15)]
    interval: u64,
    /// Measure twice (one interval apart), decide and act once, then exit.
    #[arg(long)]
    once: bool,
}

/// One instance as the loop sees it.
#[derive(Debug, Clone)]
struct Instance {
    pid: Option<u32>,
    ready: bool,
    sample: Option<Sample>,
}

/// The set's instances right now, by VM name.
fn read_instances(located: &Located, rg: &str) -> Result<BTreeMap<String, Instance>> {
    let ctx = located.common.vms();
    let mut out = BTreeMap::new();
    for s in crate::vm::list(&ctx)? {
        if s.tags.get(TOPOLOGY_TAG).map(String::as_str) != Some(rg)
            || s.tags.get(SCALE_SET_TAG) != Some(&located.set)
        {
            continue;
        }
        let ready = s.pid.is_some()
            && std::fs::read(s.dir.join("console.log"))
                .map(|t| t.windows(12).any(|w| w == b"NIMBUS_READY"))
                .unwrap_or(false);
        let sample = match (s.vcpu_cpu_s, s.uptime_s) {
            (Some(c), Some(u)) => Some(Sample {
                vcpu_cpu_s: c,
                uptime_s: u,
                vcpus: u32::from(s.vcpus),
            }),
            _ => None,
        };
        out.insert(
            s.name.clone(),
            Instance {
                pid: s.pid,
                ready,
                sample,
            },
        );
    }
    Ok(out)
}

/// Average utilization of the instances measured in both readings.
fn average(before: &BTreeMap<String, Instance>, now: &BTreeMap<String, Instance>) -> Option<f64> {
    let mut all = Vec::new();
    for (name, i) in now {
        let Some(b) = before.get(name) else { continue };
        if !(i.ready && b.ready) || i.pid != b.pid {
            continue;
        }
        if let (Some(x), Some(y)) = (&b.sample, &i.sample) {
            if let Some(u) = rule::utilization(x, y) {
                all.push(u);
            }
        }
    }
    (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64)
}

/// Runs `nimbus autoscale`.
pub fn run(args: AutoscaleArgs) -> Result<ExitCode> {
    finish((|| {
        let located = args.target.locate()?;
        let desired = load_valid(&located.common.file)?;
        let rg = desired.name.clone();
        let Some(rule) = desired.scale_set(&located.set).and_then(|s| s.autoscale) else {
            bail!(
                "scale set '{}' in {} has no autoscale rule; add scale_sets.{}.autoscale: {{min_replicas: 1, max_replicas: 5}}",
                located.set,
                located.common.file.display(),
                located.set
            );
        };
        println!(
            "autoscale {rg}/{}: {}–{} instances, target {} % vCPU, cool-down {} s, every {} s",
            located.set,
            rule.min_replicas,
            rule.max_replicas,
            rule.target_cpu_percent,
            rule.cooldown_seconds,
            args.interval
        );
        let interval = Duration::from_secs(args.interval.max(1));
        let start = Instant::now();
        let mut decider = Decider::new(rule);
        let mut before = read_instances(&located, &rg)?;
        loop {
            std::thread::sleep(interval);
            let now = read_instances(&located, &rg)?;
            let avg = average(&before, &now);
            let current = now.len() as u32;
            let t = start.elapsed().as_secs_f64();
            let decision = decider.decide(t, current, avg);
            println!(
                "[{t:>7.1}s] {current} instance(s) ({} ready), average vCPU {}: {}",
                now.values().filter(|i| i.ready).count(),
                avg.map_or_else(|| "-".to_string(), |a| format!("{:.0} %", a * 100.0)),
                match decision {
                    Some(n) => format!("scale to {n}"),
                    None => "keep".to_string(),
                }
            );
            if let Some(n) = decision {
                scale_to(
                    &located,
                    n,
                    Duration::from_secs(args.target.wait_ready),
                    Duration::from_secs(args.target.drain_timeout),
                    false,
                )?;
                decider.changed(start.elapsed().as_secs_f64());
            }
            if args.once {
                return Ok(ExitCode::SUCCESS);
            }
            before = read_instances(&located, &rg)?;
        }
    })())
}
