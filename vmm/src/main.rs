//! `nimbus-vmm`: runs one VM and exits with a code that says how it ended
//! (0 powered off, 1 VMM failure, 2 invalid configuration, 3 reboot,
//! 4 triple fault, 5 KVM internal/emulation error).
//!
//! With `--exit-file`, the same ending is also written as a JSON record
//! (`vmm::exit_record`) on every path that is not a kill, so a supervisor
//! can tell "powered off" from "killed". `--api-socket` and
//! `--console-socket` serve the API (`vmm::api`) and the serial console
//! (`vmm::console_socket`); both socket files are removed on exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vmm::config::{parse_memory_mib, SerialOutput, VmConfig};
use vmm::exit_record::{unix_now_s, ExitRecord, Outcome};
use vmm::{ControlOptions, ExitReason, KvmBackend};

/// Run one KVM virtual machine.
#[derive(Parser, Debug)]
#[command(name = "nimbus-vmm", version, about)]
struct Args {
    /// Guest kernel: ELF vmlinux (PVH entry) or bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs to hand to the kernel.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The whole kernel command line (see `vmm::guest_cmdline::defaults`).
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u64,
    /// Guest memory: MiB, or a size such as 256M or 1G.
    #[arg(long, default_value = "128")]
    memory: String,
    /// Write the serial console to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    serial_output: Option<PathBuf>,
    #[command(flatten)]
    devices: vmm::device_options::DeviceArgs,
    /// VM name; default MACs are derived from it and the TAP name.
    #[arg(long, default_value = "nimbus")]
    name: String,
    /// Serve the API on this Unix socket: JSON lines, {"op":"status"},
    /// "pause", "resume", "shutdown" (see the vmm::api docs).
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
    /// Serve the serial console on this Unix socket: raw bytes both ways,
    /// one client at a time; output still goes to --serial-output.
    #[arg(long, value_name = "PATH")]
    console_socket: Option<PathBuf>,
    /// Write how the VMM ended (exit code, outcome, reason) to this JSON
    /// file when it exits, atomically.
    #[arg(long, value_name = "PATH")]
    exit_file: Option<PathBuf>,
}

fn config_from(args: Args) -> Result<VmConfig, String> {
    let vcpus =
        u8::try_from(args.cpus).map_err(|_| vmm::ConfigError::Vcpus(args.cpus).to_string())?;
    let (disks, nics) = args.devices.parse(&args.name).map_err(|e| e.to_string())?;
    Ok(VmConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        vcpus,
        memory_mib: parse_memory_mib(&args.memory).map_err(|e| e.to_string())?,
        serial: args
            .serial_output
            .map(SerialOutput::File)
            .unwrap_or_default(),
        disks,
        nics,
    })
}

fn exit(reason: ExitReason) -> ExitCode {
    ExitCode::from(reason.exit_code() as u8)
}

/// Where the process's leftovers are: the exit record to write and the
/// socket files to remove.
struct Ending {
    exit_file: Option<PathBuf>,
    sockets: Vec<PathBuf>,
}

impl Ending {
    fn finish(
        &self,
        reason: ExitReason,
        stop_requested: bool,
        detail: &str,
        uptime_s: f64,
    ) -> ExitCode {
        for socket in &self.sockets {
            let _ = std::fs::remove_file(socket);
        }
        if let Some(path) = &self.exit_file {
            let record = ExitRecord {
                pid: std::process::id(),
                exit_code: Some(reason.exit_code()),
                outcome: Outcome::of(reason, stop_requested),
                reason: reason.to_string(),
                detail: detail.to_string(),
                uptime_s,
                ended_at_unix_s: unix_now_s(),
            };
            if let Err(e) = record.write_atomic(path) {
                eprintln!(
                    "nimbus-vmm: exit-file {}: cannot be written: {e}",
                    path.display()
                );
            }
        }
        exit(reason)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit(ExitReason::InvalidConfig)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let ending = Ending {
        exit_file: args.exit_file.clone(),
        sockets: Vec::new(),
    };
    // A stale record of an earlier run must not describe this one.
    if let Some(path) = &ending.exit_file {
        let _ = std::fs::remove_file(path);
    }
    let control = ControlOptions {
        api_socket: args.api_socket.clone(),
        console_socket: args.console_socket.clone(),
    };
    let config =
        match config_from(args).and_then(|c| c.validate().map(|()| c).map_err(|e| e.to_string())) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("nimbus-vmm: invalid configuration: {e}");
                return ending.finish(ExitReason::InvalidConfig, false, &e, 0.0);
            }
        };
    let ending = Ending {
        sockets: control
            .api_socket
            .iter()
            .chain(control.console_socket.iter())
            .cloned()
            .collect(),
        ..ending
    };
    let started = std::time::Instant::now();

    let backend = KvmBackend::detect();
    tracing::info!(
        ?backend,
        vcpus = config.vcpus,
        memory_mib = config.memory_mib,
        "starting VM"
    );
    match vmm::run_with(&config, backend, &control) {
        Ok(summary) => {
            eprintln!(
                "nimbus-vmm: {} ({}) after {:.1} s, exit {}; emulation assists: {}",
                summary.reason,
                summary.detail,
                summary.wall.as_secs_f64(),
                summary.reason.exit_code(),
                summary.assists
            );
            ending.finish(
                summary.reason,
                summary.stop_requested,
                &summary.detail,
                summary.wall.as_secs_f64(),
            )
        }
        Err(e) => {
            let e = anyhow::Error::from(e);
            eprintln!("nimbus-vmm: VMM failure: {e:#}");
            ending.finish(
                ExitReason::VmmFailure,
                false,
                &format!("{e:#}"),
                started.elapsed().as_secs_f64(),
            )
        }
    }
}
