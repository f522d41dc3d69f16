//! `nimbus`: the command-line front end of the nimbus private cloud.
//!
//! Errors are reported with `anyhow` here, at the binary's edge; every
//! library below returns typed errors.

mod image;
mod network;
mod output;
mod run;
mod topology;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// nimbus: Azure-style building blocks (VMs, disks, VNets, NSGs, load
/// balancers) on one Linux host with /dev/kvm.
#[derive(Parser, Debug)]
#[command(name = "nimbus", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a VM in the foreground with its serial console on this terminal.
    ///
    /// With no --kernel, the cached default guest images are used (built
    /// first when missing). The VM ends when the guest powers off; nimbus
    /// then exits with the VMM's status: 0 powered off, 3 guest reboot,
    /// 4 triple fault, 5 KVM internal or emulation error, 1 VMM failure,
    /// 2 invalid configuration.
    Run(run::RunArgs),
    /// VMs as managed resources: create, start in the background, stop,
    /// list, console, logs.
    Vm(vm::commands::VmCommand),
    /// Build and inspect the guest images (kernel, initramfs, rootfs).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Virtual networks (Azure VNets on Linux bridges).
    Vnet(network::vnet::VnetCommand),
    /// Subnets of a VNet.
    Subnet(network::subnet::SubnetCommand),
    /// Network interfaces of VMs.
    Nic(network::nic::NicCommand),
    /// Network security groups and their rules.
    Nsg(network::nsg::NsgCommand),
    /// Application security groups.
    Asg(network::asg::AsgCommand),
    /// Public IP addresses.
    PublicIp(network::public_ip::PublicIpCommand),
    /// Load balancers (frontend, backend pools, health probes, rules).
    Lb(network::lb::LbCommand),
    /// The host network daemon (nimbus-netd).
    #[command(subcommand)]
    Netd(network::netd_run::NetdCommand),
    /// Bring a topology file up: validate it whole, then create what is
    /// missing, change what differs, in dependency order.
    ///
    /// Every error of an invalid file is listed as FILE:LINE:COL: field:
    /// reason, and nothing on the host changes (exit status 2). Running it
    /// again on an unchanged file changes nothing.
    Up(topology::UpArgs),
    /// Remove everything a topology file's `up` created, and nothing else.
    Down(topology::DownArgs),
    /// Show each object of a topology file and its state on the host.
    Status(topology::StatusArgs),
    /// Change the number of instances of a scale set: new ones get traffic
    /// once their probe passes, leaving ones drain first.
    Scale(topology::scale::ScaleArgs),
    /// Run a scale set's autoscale rule (average vCPU utilization, like a
    /// Kubernetes HPA) in the foreground.
    Autoscale(topology::autoscale::AutoscaleArgs),
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Image(cmd) => image::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::Vm(cmd) => vm::commands::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::Vnet(cmd) => network::vnet::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::Subnet(cmd) => network::subnet::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::Nic(cmd) => network::nic::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::Nsg(cmd) => network::nsg::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::Asg(cmd) => network::asg::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::PublicIp(cmd) => network::public_ip::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::Lb(cmd) => network::lb::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::Netd(cmd) => network::netd_run::dispatch(cmd).map(|()| ExitCode::SUCCESS),
        Command::Up(args) => topology::up(args),
        Command::Scale(args) => topology::scale::run(args),
        Command::Autoscale(args) => topology::autoscale::run(args),
        Command::Down(args) => topology::down(args),
        Command::Status(args) => topology::status(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line, no backtrace.
            eprintln!("nimbus: error: {err:#}");
            ExitCode::from(run::EXIT_FAILURE)
        }
    }
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`nimbus ... |
/// head`) would panic; a command-line tool should end quietly instead, as
/// other Unix tools do.
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; setting
    // a signal's disposition to SIG_DFL touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIMBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
