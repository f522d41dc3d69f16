//! `nimbus-vmm`: runs one VM and exits with a code that says how it ended
//! (0 powered off, 1 VMM failure, 2 invalid configuration, 3 reboot,
//! 4 triple fault, 5 KVM internal/emulation error).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vmm::config::{parse_memory_mib, SerialOutput, VmConfig};
use vmm::{ExitReason, KvmBackend};

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
    let config =
        match config_from(args).and_then(|c| c.validate().map(|()| c).map_err(|e| e.to_string())) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("nimbus-vmm: invalid configuration: {e}");
                return exit(ExitReason::InvalidConfig);
            }
        };

    let backend = KvmBackend::detect();
    tracing::info!(
        ?backend,
        vcpus = config.vcpus,
        memory_mib = config.memory_mib,
        "starting VM"
    );
    match vmm::run(&config, backend) {
        Ok(summary) => {
            eprintln!(
                "nimbus-vmm: {} ({}) after {:.1} s, exit {}; emulation assists: {}",
                summary.reason,
                summary.detail,
                summary.wall.as_secs_f64(),
                summary.reason.exit_code(),
                summary.assists
            );
            exit(summary.reason)
        }
        Err(e) => {
            let e = anyhow::Error::from(e);
            eprintln!("nimbus-vmm: VMM failure: {e:#}");
            exit(ExitReason::VmmFailure)
        }
    }
}
