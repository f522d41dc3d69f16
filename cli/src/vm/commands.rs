//! `nimbus vm ...`: the command-line face of the VM library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

use super::spec::{parse_attach, parse_tag, DiskSpec, Image, VmSpec};
use super::{size, Context, StartOptions, StopOptions, Stopped, VmStatus};
use crate::image::ImageLocation;
use crate::output::{print_key_values, OutputFormat};

/// Options every `nimbus vm` command takes.
#[derive(Args, Debug, Clone)]
pub struct VmCommon {
    /// State directory; VMs live in <DIR>/vms/<name>/.
    #[arg(
        long,
        global = true,
        env = "NIMBUS_STATE_DIR",
        default_value = super::store::DEFAULT_STATE_DIR,
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,
    /// nimbus-netd's API socket (asked for the TAP, MAC and IP of NICs).
    #[arg(
        long,
        global = true,
        env = "NIMBUS_NETD_SOCKET",
        default_value = "/var/lib/nimbus/netd/netd.sock",
        value_name = "PATH"
    )]
    pub netd_socket: PathBuf,
    /// How list, show and create print.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub images: ImageLocation,
}

/// VMs: create, start, stop, inspect and attach to them.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  nimbus vm create web-1 --size B1ls --disk 1G --nic web-1-nic --tag tier=web
  nimbus vm start web-1 --wait-ready       start in the background, wait for the guest agent
  nimbus vm list                           state, IPs, uptime, CPU time
  nimbus vm console web-1                  serial console (Ctrl-] detaches)
  nimbus vm logs web-1 --tail 20 --follow
  nimbus vm stop web-1                     graceful power-off, SIGKILL after 30 s
  nimbus vm delete web-1")]
pub struct VmCommand {
    #[command(flatten)]
    common: VmCommon,
    #[command(subcommand)]
    action: VmAction,
}

#[derive(Args, Debug)]
struct ReadyArgs {
    /// Wait until the guest agent reports NIMBUS_READY on the console,
    /// printing progress (guest boots take about a minute on kvm-pvm hosts).
    #[arg(long)]
    wait_ready: bool,
    /// How long --wait-ready waits, in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    ready_timeout: u64,
}

impl ReadyArgs {
    fn options(&self) -> StartOptions {
        StartOptions {
            wait_ready: self
                .wait_ready
                .then(|| Duration::from_secs(self.ready_timeout)),
            progress: true,
        }
    }
}

#[derive(Args, Debug)]
struct StopArgs {
    /// Seconds the guest gets to power off before nimbus-vmm is killed.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
    /// Kill nimbus-vmm at once (SIGKILL), no graceful power-off.
    #[arg(long)]
    force: bool,
}

impl StopArgs {
    fn options(&self) -> StopOptions {
        StopOptions {
            timeout: Duration::from_secs(self.timeout),
            force: self.force,
        }
    }
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum VmAction {
    /// Create a VM (not started unless --start).
    ///
    /// Everything is checked first (name, size, memory against the host's
    /// available memory, images, NICs); on any error nothing is created.
    #[command(after_help = size::HELP)]
    Create {
        /// VM name: letters, digits, '-', '_', '.'.
        name: String,
        /// A named size (see below); --cpus/--memory override parts of it.
        #[arg(long, value_name = "SIZE")]
        size: Option<String>,
        /// vCPUs [default: 1, or the size's].
        #[arg(long, value_name = "N")]
        cpus: Option<u8>,
        /// Memory: MiB or a size with a unit (256M, 1G) [default: 128M, or the size's].
        #[arg(long, value_name = "SIZE")]
        memory: Option<String>,
        /// Boot from a per-VM copy of the default root file system
        /// (rootfs.ext4) as /dev/vda instead of the initramfs.
        #[arg(long, conflicts_with = "rootfs_image")]
        rootfs: bool,
        /// Boot from a per-VM copy of this root file system image as /dev/vda.
        #[arg(long, value_name = "FILE")]
        rootfs_image: Option<PathBuf>,
        /// Guest kernel (vmlinux or bzImage) instead of the default image.
        #[arg(long, value_name = "FILE")]
        kernel: Option<PathBuf>,
        /// Initramfs for --kernel.
        #[arg(long, value_name = "FILE", requires = "kernel")]
        initrd: Option<PathBuf>,
        /// A new data disk of SIZE (sparse, ext4), mounted in the guest at
        /// /mnt/data<N> (N counts data disks from 0). Repeatable.
        #[arg(long = "disk", value_name = "SIZE")]
        disks: Vec<String>,
        /// Attach an existing image: PATH[,ro][,mount=/DIR] (mounted as
        /// ext4 only with mount=). Repeatable; attached disks come after
        /// the new ones.
        #[arg(long = "attach-disk", value_name = "SPEC")]
        attach: Vec<String>,
        /// A netd NIC (`nimbus nic create`) by name: eth0, eth1, ... in
        /// order. The TAP, MAC, IP/prefix and gateway come from netd.
        #[arg(long = "nic", value_name = "NAME")]
        nics: Vec<String>,
        /// A tag KEY=VALUE. Repeatable.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Extra guest kernel parameters (e.g. nimbus.serve=7000).
        #[arg(long, value_name = "PARAMS", allow_hyphen_values = true)]
        cmdline: Option<String>,
        /// Start it right away.
        #[arg(long)]
        start: bool,
        #[command(flatten)]
        ready: ReadyArgs,
    },
    /// Start a VM in the background (a detached nimbus-vmm).
    Start {
        /// VM name.
        name: String,
        #[command(flatten)]
        ready: ReadyArgs,
    },
    /// Stop a VM: the guest is asked to power off; SIGKILL after --timeout.
    Stop {
        /// VM name.
        name: String,
        #[command(flatten)]
        stop: StopArgs,
    },
    /// Stop (as `stop`) and start a VM again.
    Restart {
        /// VM name.
        name: String,
        #[command(flatten)]
        stop: StopArgs,
        #[command(flatten)]
        ready: ReadyArgs,
    },
    /// Delete a VM and its directory (disks made for it included).
    Delete {
        /// VM name.
        name: String,
        /// Delete a running VM too (it is killed first).
        #[arg(long)]
        force: bool,
    },
    /// List VMs: state (running, paused, stopped, failed), IPs, uptime, CPU.
    List,
    /// Show one VM in detail.
    Show {
        /// VM name.
        name: String,
    },
    /// Park a running VM's vCPUs.
    Pause {
        /// VM name.
        name: String,
    },
    /// Let a paused VM run again.
    Resume {
        /// VM name.
        name: String,
    },
    /// Attach this terminal to a running VM's serial console; Ctrl-] detaches.
    Console {
        /// VM name.
        name: String,
    },
    /// Print a VM's serial console log.
    Logs {
        /// VM name.
        name: String,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Keep printing new output until the VM stops.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

fn size_mib(text: &str, what: &str) -> Result<u64> {
    vmm::config::parse_memory_mib(text).with_context(|| format!("{what} {text:?}"))
}

#[allow(clippy::too_many_arguments)]
fn build_spec(
    name: String,
    size_name: Option<String>,
    cpus: Option<u8>,
    memory: Option<String>,
    rootfs: Option<Option<PathBuf>>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    disks: Vec<String>,
    attach: Vec<String>,
    nics: Vec<String>,
    tags: Vec<String>,
    cmdline: Option<String>,
) -> Result<VmSpec> {
    let mut spec = VmSpec::new(&name);
    if let Some(s) = size_name {
        spec = spec.with_size(&s)?;
    }
    if let Some(c) = cpus {
        spec.vcpus = c;
    }
    if let Some(m) = memory {
        spec.memory_mib = size_mib(&m, "--memory")?;
    }
    spec.image = match (kernel, rootfs) {
        (Some(kernel), rootfs) => Image::Files {
            kernel,
            initrd,
            rootfs: rootfs.flatten(),
        },
        (None, Some(Some(path))) => Image::Rootfs { path },
        (None, Some(None)) => Image::DefaultRootfs,
        (None, None) => Image::Default,
    };
    for d in disks {
        spec.disks.push(DiskSpec::New {
            size_mib: size_mib(&d, "--disk")?,
        });
    }
    for a in attach {
        spec.disks
            .push(parse_attach(&a).map_err(anyhow::Error::msg)?);
    }
    spec.nics = nics;
    for t in tags {
        let (k, v) = parse_tag(&t).map_err(anyhow::Error::msg)?;
        spec.tags.insert(k, v);
    }
    spec.cmdline = cmdline;
    Ok(spec)
}

fn fmt_duration(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

fn print_list(rows: &[VmStatus]) {
    let header = [
        "NAME", "STATE", "VCPUS", "MEMORY", "IPS", "UPTIME", "CPU", "REASON",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.state.as_str().to_string(),
                s.vcpus.to_string(),
                format!("{}M", s.memory_mib),
                if s.ips.is_empty() {
                    "-".into()
                } else {
                    s.ips.join(",")
                },
                fmt_duration(s.uptime_s),
                s.cpu_s.map_or("-".into(), |c| format!("{c:.1}s")),
                s.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |items: Vec<&str>| {
        let parts: Vec<String> = items
            .iter()
            .zip(widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
}

fn print_show(s: &VmStatus) {
    let mut rows = vec![
        ("name", s.name.clone()),
        ("state", s.state.as_str().to_string()),
        ("reason", s.reason.clone().unwrap_or_else(|| "-".into())),
        ("size", s.size.clone().unwrap_or_else(|| "-".into())),
        ("vcpus", s.vcpus.to_string()),
        ("memory", format!("{} MiB", s.memory_mib)),
        ("pid", s.pid.map_or("-".into(), |p| p.to_string())),
        ("uptime", fmt_duration(s.uptime_s)),
        ("cpu", s.cpu_s.map_or("-".into(), |c| format!("{c:.2} s"))),
        (
            "vcpu cpu",
            s.vcpu_cpu_s.map_or("-".into(), |c| format!("{c:.2} s")),
        ),
        ("dir", s.dir.display().to_string()),
    ];
    if let Some(root) = &s.root_disk {
        rows.push(("root disk", root.display().to_string()));
    }
    for d in &s.disks {
        rows.push((
            "disk",
            format!(
                "{}{}{}",
                d.path.display(),
                if d.read_only { " (ro)" } else { "" },
                d.mount
                    .as_ref()
                    .map_or(String::new(), |m| format!(" on {m}"))
            ),
        ));
    }
    for n in &s.nics {
        rows.push((
            "nic",
            format!(
                "{} {}/{} mac {} tap {}",
                n.name, n.ip, n.prefix, n.mac, n.tap
            ),
        ));
    }
    for (k, v) in &s.tags {
        rows.push(("tag", format!("{k}={v}")));
    }
    if let Some(e) = &s.exit {
        rows.push((
            "last exit",
            format!(
                "{:?} code {} after {:.0} s: {} ({})",
                e.outcome,
                e.exit_code.map_or("-".into(), |c| c.to_string()),
                e.uptime_s,
                e.reason,
                e.detail
            ),
        ));
    }
    print_key_values(&rows);
}

fn print_status(s: &VmStatus, output: OutputFormat) -> Result<()> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(s)?),
        OutputFormat::Table => print_show(s),
    }
    Ok(())
}

/// Runs one `nimbus vm` command.
pub fn dispatch(cmd: VmCommand) -> Result<()> {
    let common = cmd.common;
    let ctx = Context::new(common.state_dir, common.netd_socket, common.images);
    let out = common.output;
    match cmd.action {
        VmAction::Create {
            name,
            size,
            cpus,
            memory,
            rootfs,
            rootfs_image,
            kernel,
            initrd,
            disks,
            attach,
            nics,
            tags,
            cmdline,
            start,
            ready,
        } => {
            // None: no root disk; Some(None): the default rootfs.
            let rootfs = match (rootfs, rootfs_image) {
                (_, Some(file)) => Some(Some(file)),
                (true, None) => Some(None),
                (false, None) => None,
            };
            if kernel.is_some() && rootfs == Some(None) {
                anyhow::bail!(
                    "VM {name}: --rootfs is the default image's root file system; with --kernel use --rootfs-image FILE"
                );
            }
            let spec = build_spec(
                name, size, cpus, memory, rootfs, kernel, initrd, disks, attach, nics, tags,
                cmdline,
            )?;
            super::create(&ctx, &spec)?;
            if start {
                super::start(&ctx, &spec.name, &ready.options())?;
            }
            let status = super::status(&ctx, &spec.name)?;
            match out {
                OutputFormat::Json => print_status(&status, out)?,
                OutputFormat::Table => println!(
                    "created VM {} ({} vCPU, {} MiB){}",
                    spec.name,
                    spec.vcpus,
                    spec.memory_mib,
                    if start { ", started" } else { "" }
                ),
            }
        }
        VmAction::Start { name, ready } => {
            super::start(&ctx, &name, &ready.options())?;
            let s = super::status(&ctx, &name)?;
            match out {
                OutputFormat::Json => print_status(&s, out)?,
                OutputFormat::Table => println!(
                    "started VM {name} (nimbus-vmm pid {})",
                    s.pid.map_or("-".into(), |p| p.to_string())
                ),
            }
        }
        VmAction::Stop { name, stop } => {
            let how = super::stop(&ctx, &name, &stop.options())?;
            println!(
                "{}",
                match how {
                    Stopped::WasNotRunning => format!("VM {name} was not running"),
                    Stopped::Graceful => format!("VM {name} powered off"),
                    Stopped::Killed => format!("VM {name} killed (no graceful power-off)"),
                }
            );
        }
        VmAction::Restart { name, stop, ready } => {
            super::restart(&ctx, &name, &stop.options(), &ready.options())?;
            println!("restarted VM {name}");
        }
        VmAction::Delete { name, force } => {
            super::delete(&ctx, &name, force)?;
            println!("deleted VM {name}");
        }
        VmAction::List => {
            let all = super::list(&ctx)?;
            match out {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                OutputFormat::Table => print_list(&all),
            }
        }
        VmAction::Show { name } => print_status(&super::status(&ctx, &name)?, out)?,
        VmAction::Pause { name } => {
            super::pause(&ctx, &name)?;
            println!("VM {name} paused");
        }
        VmAction::Resume { name } => {
            super::resume(&ctx, &name)?;
            println!("VM {name} running");
        }
        VmAction::Console { name } => {
            super::console::attach(&ctx, &name)?;
        }
        VmAction::Logs { name, tail, follow } => super::logs::print(&ctx, &name, tail, follow)?,
    }
    Ok(())
}
