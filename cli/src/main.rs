//! `nimbus`: the command-line front end of the nimbus private cloud.
//!
//! Errors are reported with `anyhow` here, at the binary's edge; every
//! library below returns typed errors.

mod image;
mod output;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// nimbus: Azure-style building blocks (VMs, disks, VNets, NSGs, load
/// balancers) on one Linux host with /dev/kvm.
#[derive(Parser, Debug)]
#[command(name = "nimbus", version, about, long_about = None)]
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
    /// Build and inspect the guest images (kernel, initramfs, rootfs).
    #[command(subcommand)]
    Image(image::ImageCommand),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Image(cmd) => image::dispatch(cmd).map(|()| ExitCode::SUCCESS),
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIMBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
