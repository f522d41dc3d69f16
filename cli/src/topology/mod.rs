//! `nimbus up|down|status FILE`: topology files, a whole environment (an
//! Azure resource group) declared in YAML and made real in one command.
//!
//! The pipeline is parse, validate, then act ([`load`] → [`validate`] →
//! [`plan`] against what netd reports ([`observed`]) and what the topology
//! owns ([`record`]) → [`apply`]). Nothing changes unless the whole file is
//! valid and the plan has no conflict with the host.

mod apply;
pub mod autoscale;
mod desired;
mod diagnostic;
mod down;
mod load;
mod observed;
mod plan;
mod progress;
mod record;
pub mod scale;
mod schema;
mod status;
mod up;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use netd::api::client::Client;

use crate::image::ImageLocation;
use crate::output::OutputFormat;
use desired::{Desired, Id};
use diagnostic::Diagnostics;
use observed::Observed;

/// Exit status of a refused file (as `nimbus run` for a bad configuration).
pub const EXIT_INVALID: u8 = 2;

/// The short guide `--help` shows under `nimbus up`.
const FILE_GUIDE: &str = "\
A topology file declares a resource group. Every section maps names to objects; anything left out takes Azure's default:

  name: shop                      # prefixes every host object: shop-app, shop-web-1
  vnets:
    app:
      address_space: 10.10.0.0/16
      subnets:
        web: {cidr: 10.10.1.0/24, nsg: web}
        db:  {cidr: 10.10.2.0/24, nsg: db}
  asgs: [web]
  nsgs:
    web:
      rules:
        http: {priority: 100, protocol: Tcp, destination_ports: 80}
    db:
      rules:
        sql: {priority: 100, protocol: Tcp, source: asg:web, destination_ports: 5432}
        no-vnet: {priority: 4000, access: Deny, source: VirtualNetwork}
  public_ips:
    web-ip: {}                    # static, from netd's public pool
  load_balancers:
    web:
      frontend: {public_ip: web-ip}           # or {subnet: web, private_ip: ...}
      pools: {web: {vms: [web-1, web-2]}}     # or {scale_set: NAME}
      probes: {http: {protocol: Http, port: 80, path: /}}
      rules: {http: {frontend_port: 80, pool: web, probe: http, algorithm: RoundRobin}}
  vms:
    web-1: {subnet: web, asgs: [web], size: B1s}
    web-2: {subnet: web, asgs: [web], size: B1s}
    db-1:  {subnet: db, ip: 10.10.2.10, cpus: 1, memory: 128M}
  scale_sets:
    api: {replicas: 3, subnet: web}           # VMs api-0, api-1, api-2

Each VM gets one NIC in its subnet (or list `nics:`). Examples: examples/*.yaml.";

/// Options every topology command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The topology file (YAML).
    pub file: PathBuf,
    #[command(flatten)]
    pub host: HostOptions,
}

/// The host-wide options every topology command takes.
#[derive(Args, Debug, Clone)]
pub struct HostOptions {
    /// Where nimbus records what each topology owns
    /// (`STATE_DIR/topologies/NAME.json`).
    #[arg(long, env = "NIMBUS_STATE_DIR", default_value = "/var/lib/nimbus")]
    pub state_dir: PathBuf,
    /// nimbus-netd's API socket.
    #[arg(
        long,
        env = "NIMBUS_NETD_SOCKET",
        default_value = "/var/lib/nimbus/netd/netd.sock"
    )]
    pub netd_socket: PathBuf,
    /// Where the default guest images are (for VMs).
    #[command(flatten)]
    pub images: ImageLocation,
}

impl Common {
    /// The VM store of this state directory.
    fn vms(&self) -> crate::vm::Context {
        crate::vm::Context::new(
            self.host.state_dir.clone(),
            self.host.netd_socket.clone(),
            self.host.images.clone(),
        )
    }
}

/// `nimbus up FILE`.
#[derive(Args, Debug)]
#[command(after_long_help = FILE_GUIDE)]
pub struct UpArgs {
    #[command(flatten)]
    common: Common,
    /// Validate and print the changes without making them.
    #[arg(long)]
    dry_run: bool,
    /// Wait until each new VM's guest reports readiness (up to SECONDS)
    /// instead of returning once its VMM runs.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "600")]
    wait_ready: Option<u64>,
    /// How long the open connections of a VM that goes (fewer replicas, a
    /// rolling update) may drain before it is powered off.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    drain_timeout: u64,
}

/// `nimbus down FILE`.
#[derive(Args, Debug)]
pub struct DownArgs {
    #[command(flatten)]
    common: Common,
}

/// `nimbus status FILE`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    common: Common,
    /// Table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

/// A refusal that has already been explained on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(Diagnostics);

/// Reads and validates `file`.
fn load_valid(file: &Path) -> Result<Desired> {
    load_valid_with(file, &BTreeMap::new())
}

/// Reads and validates `file`, with the `replicas` of some scale sets
/// (by file name) replaced: what `nimbus scale` and the autoscaler ask.
fn load_valid_with(file: &Path, replicas: &BTreeMap<String, u32>) -> Result<Desired> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    // Objects that could not be read are skipped by the checks of meaning
    // (and references to them are not reported again), so one run lists
    // the errors of every object.
    let (mut doc, mut errors) = load::parse(&text);
    for (key, set) in doc.scale_sets.0.iter_mut() {
        if let Some(n) = replicas.get(key.as_str()) {
            set.replicas = marked_yaml::Spanned::new(*set.replicas.span(), *n);
        }
    }
    match validate::validate(&doc) {
        Ok(desired) if errors.is_empty() => Ok(desired),
        Ok(_) => Err(Refused(Diagnostics::new(file, errors)).into()),
        Err(more) => {
            errors.extend(more);
            Err(Refused(Diagnostics::new(file, errors)).into())
        }
    }
}

/// What the host has and who owns it.
struct HostView {
    observed: Observed,
    owned: BTreeSet<Id>,
    others: BTreeMap<Id, String>,
    store: record::Store,
}

/// Reads the host. VMs are read only when `with_vms` (a topology without
/// VMs does not need the VM store).
fn host_view(c: &Common, name: &str, with_vms: bool) -> Result<HostView> {
    let store = record::Store::open(&c.host.state_dir, name)?;
    let owned = store.snapshot().objects;
    let mut others = BTreeMap::new();
    for r in record::others(&c.host.state_dir, name)? {
        for id in r.objects {
            others.insert(id, r.name.clone());
        }
    }
    let prefix = format!("{name}-");
    let mut client = Client::connect(&c.host.netd_socket)?;
    let mut observed = observed::observe(&mut client, |nsg| nsg.starts_with(&prefix))?;
    if with_vms || owned.iter().any(|id| id.kind == desired::Kind::Vm) {
        observed::observe_vms(&c.vms(), &mut observed)?;
    }
    Ok(HostView {
        observed,
        owned,
        others,
        store,
    })
}

/// Turns a result into the exit status, printing refusals as they are.
fn finish(r: Result<ExitCode>) -> Result<ExitCode> {
    match r {
        Err(e) => match e.downcast::<Refused>() {
            Ok(Refused(d)) => {
                eprintln!("{d}");
                Ok(ExitCode::from(EXIT_INVALID))
            }
            Err(e) => Err(e),
        },
        ok => ok,
    }
}

/// Runs `nimbus up`.
pub fn up(args: UpArgs) -> Result<ExitCode> {
    let options = up::UpOptions {
        dry_run: args.dry_run,
        wait_ready: args.wait_ready.map(std::time::Duration::from_secs),
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout),
        ..up::UpOptions::default()
    };
    finish(up::run(&args.common, &options))
}

/// Runs `nimbus down`.
pub fn down(args: DownArgs) -> Result<ExitCode> {
    finish(down::run(&args.common))
}

/// Runs `nimbus status`.
pub fn status(args: StatusArgs) -> Result<ExitCode> {
    finish((|| {
        let desired = load_valid(&args.common.file)?;
        let view = host_view(&args.common, &desired.name, desired.has_vms())?;
        let s = status::status(&desired, &view.observed, &view.owned);
        status::print(&s, args.output)?;
        Ok(ExitCode::SUCCESS)
    })())
}
