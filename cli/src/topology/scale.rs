//! `nimbus scale SET N`: a scale set's size changed by hand (Azure's VMSS
//! capacity, `kubectl scale`).
//!
//! It runs `up`'s pipeline on the topology's file with the set's
//! `replicas` replaced and keeps only the changes of that set: new
//! instances (NIC, VM) are created and join the set's pools as not yet
//! healthy, so they get flows only once their probe passes, and `scale`
//! returns when they do; instances that go (the highest numbers first)
//! leave their pools, their flows drain, then they power off and are
//! deleted. The topology's record follows every step, so `nimbus down`
//! still removes exactly what exists.
//!
//! As with `kubectl scale` against `kubectl apply`, the file stays the
//! source of truth: the next `nimbus up` returns to its `replicas`, unless
//! the set has an `autoscale` rule (then `up` keeps the current size
//! within the rule's range).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::up::{self, UpOptions};
use super::{finish, load_valid, record, Common, HostOptions};

/// Where a scale set is: the host-wide options and the set.
#[derive(Args, Debug, Clone)]
pub struct SetRef {
    /// The scale set: its name in the topology file (`web`), or
    /// `TOPOLOGY/SET` when several topologies have a set of that name.
    pub set: String,
    /// The topology file (default: the file the topology was last brought
    /// up from, as its record says).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostOptions,
    /// How long new instances may take to boot and pass their probes.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub wait_ready: u64,
    /// How long the open connections of a leaving instance may drain
    /// before it is powered off.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub drain_timeout: u64,
}

/// A located scale set.
#[derive(Debug, Clone)]
pub struct Located {
    /// The topology's options, with its file.
    pub common: Common,
    /// The set's name in the file.
    pub set: String,
}

impl SetRef {
    /// Finds the topology file that declares the set.
    pub fn locate(&self) -> Result<Located> {
        let (topology, set) = match self.set.split_once('/') {
            Some((t, s)) => (Some(t), s),
            None => (None, self.set.as_str()),
        };
        let common = |file: PathBuf| Common {
            file,
            host: self.host.clone(),
        };
        if let Some(file) = &self.file {
            let d = load_valid(file)?;
            if d.scale_set(set).is_none() || topology.is_some_and(|t| t != d.name) {
                bail!(
                    "{}: topology '{}' has no scale set '{set}'",
                    file.display(),
                    d.name
                );
            }
            return Ok(Located {
                common: common(file.clone()),
                set: set.to_string(),
            });
        }
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        // Every record ("" is no topology's name).
        for r in record::others(&self.host.state_dir, "")? {
            if topology.is_some_and(|t| t != r.name) {
                continue;
            }
            let Some(file) = r.file.clone() else {
                continue;
            };
            match load_valid(&file) {
                Ok(d) if d.scale_set(set).is_some() => found.push((r.name.clone(), file)),
                Ok(_) => {}
                Err(e) => unreadable.push(format!("{}: {e:#}", file.display())),
            }
        }
        match found.len() {
            1 => {
                let (_, file) = found.remove(0);
                Ok(Located {
                    common: common(file),
                    set: set.to_string(),
                })
            }
            0 => bail!(
                "no topology brought up from {} has a scale set '{set}'{}; give the file with --file",
                record::dir(&self.host.state_dir).display(),
                if unreadable.is_empty() {
                    String::new()
                } else {
                    format!(" (files that could not be read: {})", unreadable.join("; "))
                }
            ),
            _ => bail!(
                "several topologies have a scale set '{set}': say which with {}",
                found
                    .iter()
                    .map(|(t, _)| format!("`{t}/{set}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        }
    }
}

/// `nimbus scale SET N`.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Examples:
  nimbus scale web 3                 # scale set `web` of the topology that has one
  nimbus scale shop/web 0            # in topology `shop`
  nimbus scale web 5 --file shop.yaml --dry-run

New instances get flows only once the load balancer's probe passes; `scale`
returns when they do. Leaving instances are taken out of their pools first
and powered off once their connections drained (--drain-timeout). The next
`nimbus up` returns to the file's `replicas` unless the set has an autoscale
rule.")]
pub struct ScaleArgs {
    #[command(flatten)]
    target: SetRef,
    /// Instances wanted (0–100).
    replicas: u32,
    /// Print the changes only.
    #[arg(long)]
    dry_run: bool,
}

/// Scales `located` to `n` instances; returns the number of changes.
pub fn scale_to(
    located: &Located,
    n: u32,
    wait: Duration,
    drain: Duration,
    dry_run: bool,
) -> Result<up::Outcome> {
    let mut replicas = BTreeMap::new();
    replicas.insert(located.set.clone(), n);
    up::apply(
        &located.common,
        &UpOptions {
            dry_run,
            wait_ready: Some(wait),
            drain_timeout: drain,
            replicas,
            only_scale_set: Some(located.set.clone()),
        },
    )
}

/// Runs `nimbus scale`.
pub fn run(args: ScaleArgs) -> Result<ExitCode> {
    finish((|| {
        let located = args.target.locate()?;
        let file = load_valid(&located.common.file)?;
        let Some(set) = file.scale_set(&located.set) else {
            bail!("no scale set '{}'", located.set);
        };
        if let Some(rule) = set.autoscale {
            if !(rule.min_replicas..=rule.max_replicas).contains(&args.replicas) {
                bail!(
                    "scale set '{}' autoscales between {} and {} instances (scale_sets.{}.autoscale in {}); {} is outside",
                    located.set,
                    rule.min_replicas,
                    rule.max_replicas,
                    located.set,
                    located.common.file.display(),
                    args.replicas
                );
            }
        }
        let file_replicas = set.replicas;
        let has_rule = set.autoscale.is_some();
        println!(
            "scale set {}/{}: {} instance(s) wanted ({})",
            file.name,
            located.set,
            args.replicas,
            located.common.file.display()
        );
        scale_to(
            &located,
            args.replicas,
            Duration::from_secs(args.target.wait_ready),
            Duration::from_secs(args.target.drain_timeout),
            args.dry_run,
        )?;
        if !has_rule && file_replicas != args.replicas && !args.dry_run {
            println!(
                "note: the file says replicas: {file_replicas}; the next `nimbus up` returns to it (edit the file to keep {})",
                args.replicas
            );
        }
        Ok(ExitCode::SUCCESS)
    })())
}
