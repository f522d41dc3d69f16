//! `nimbus run`: one VM in the foreground, console on the terminal.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::Args;

use vmm::config::SerialOutput;

use crate::image::{ensure_built, ImageLocation};

/// Exit status for a failure of nimbus itself (matches nimbus-vmm's).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a configuration the VM cannot be started with.
pub const EXIT_INVALID_CONFIG: u8 = 2;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  nimbus run                                   boot the default image, 1 vCPU, 128 MiB
  nimbus run --cpus 2 --memory 256M --cmdline nimbus.poweroff=1
  nimbus run --shell                           interactive busybox shell (Ctrl-A x quits)
  nimbus run --kernel ./vmlinux --initrd ./initramfs.cpio.gz
  nimbus run --print-cmdline                   show the guest command line and exit")]
pub struct RunArgs {
    /// Guest kernel: an ELF vmlinux (booted through its PVH entry) or a
    /// bzImage. Default: the cached default image (built first if missing).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk. Default: the cached default initramfs when --kernel
    /// is not given, none otherwise.
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// Parameters appended to the guest kernel command line after the
    /// defaults this host needs (see --print-cmdline).
    #[arg(long, value_name = "PARAMS", allow_hyphen_values = true)]
    cmdline: Option<String>,
    /// Print the complete guest kernel command line and exit.
    #[arg(long)]
    print_cmdline: bool,
    /// Start a busybox shell on the console once the guest is ready (boots
    /// the default initramfs that carries busybox; Ctrl-A x quits).
    #[arg(long, conflicts_with = "initrd")]
    shell: bool,
    /// Number of vCPUs.
    #[arg(long, default_value = "1", value_name = "N")]
    cpus: u8,
    /// Guest memory: a number of MiB or a size with a unit (256M, 1G).
    #[arg(long, default_value = "128M", value_name = "SIZE")]
    memory: String,
    /// Write the guest's serial console to this file instead of the terminal.
    #[arg(long, value_name = "FILE")]
    serial_output: Option<PathBuf>,
    /// Passed to nimbus-vmm unchanged once they parse.
    #[command(flatten)]
    devices: vmm::device_options::DeviceArgs,
    #[command(flatten)]
    images: ImageLocation,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let mut extra: Vec<&str> = Vec::new();
    if args.shell {
        extra.push(SHELL_PARAMETER);
    }
    extra.extend(args.cmdline.as_deref());
    let cmdline = compose_cmdline(vmm::guest_cmdline::host_defaults(), &extra);
    if args.print_cmdline {
        println!("{cmdline}");
        return Ok(ExitCode::SUCCESS);
    }
    let memory_mib = match vmm::config::parse_memory_mib(&args.memory) {
        Ok(mib) => mib,
        Err(err) => return Ok(invalid(&err)),
    };
    let (kernel, initrd) = match args.kernel {
        Some(kernel) => (kernel, args.initrd),
        None => {
            let set = ensure_built(&args.images)?;
            (
                set.vmlinux(),
                // --shell needs busybox, which only the full initramfs has.
                Some(args.initrd.unwrap_or_else(|| {
                    if args.shell {
                        set.initramfs_full()
                    } else {
                        set.initramfs()
                    }
                })),
            )
        }
    };
    let (disks, nics) = match args.devices.parse("nimbus") {
        Ok(parsed) => parsed,
        Err(e) => return Ok(invalid(&e)),
    };
    let config = vmm::config::VmConfig {
        disks,
        nics,
        kernel,
        initrd,
        cmdline,
        vcpus: args.cpus,
        memory_mib,
        serial: args
            .serial_output
            .map_or(SerialOutput::Stdout, SerialOutput::File),
    };
    if let Err(err) = config.validate() {
        return Ok(invalid(&err));
    }
    spawn_vmm(&config, &args.devices.disk, &args.devices.nic)
}

fn invalid(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("nimbus: error: {err}");
    ExitCode::from(EXIT_INVALID_CONFIG)
}

/// The agent parameter that starts a shell on the console.
const SHELL_PARAMETER: &str = "nimbus.shell=1";

/// The guest command line: what this host's KVM needs (`defaults`, from
/// `vmm::guest_cmdline::host_defaults`), then the user's.
pub fn compose_cmdline(defaults: Vec<String>, extra: &[&str]) -> String {
    let mut parts = defaults;
    parts.extend(
        extra
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(str::to_string),
    );
    parts.join(" ")
}

/// Runs `nimbus-vmm` with the validated configuration and hands its exit
/// status on.
fn spawn_vmm(
    config: &vmm::config::VmConfig,
    disks: &[String],
    nics: &[String],
) -> Result<ExitCode> {
    let vmm = locate_vmm()?;
    let mut command = Command::new(&vmm);
    command
        .arg("--kernel")
        .arg(&config.kernel)
        .arg("--cmdline")
        .arg(&config.cmdline)
        .arg("--cpus")
        .arg(config.vcpus.to_string())
        .arg("--memory")
        .arg(config.memory_mib.to_string());
    if let Some(initrd) = &config.initrd {
        command.arg("--initrd").arg(initrd);
    }
    if let SerialOutput::File(file) = &config.serial {
        command.arg("--serial-output").arg(file);
    }
    for disk in disks {
        command.arg("--disk").arg(disk);
    }
    for nic in nics {
        command.arg("--nic").arg(nic);
    }
    let status = command
        .status()
        .with_context(|| format!("cannot start {}", vmm.display()))?;
    Ok(ExitCode::from(exit_status_byte(status)))
}

/// The child's exit code, or 128 + signal like a shell reports it.
fn exit_status_byte(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(EXIT_FAILURE),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(EXIT_FAILURE),
        (None, None) => EXIT_FAILURE,
    }
}

/// `nimbus-vmm` sits next to `nimbus` (same cargo target directory or same
/// install prefix) unless NIMBUS_VMM names it.
pub(crate) fn locate_vmm() -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("NIMBUS_VMM") {
        return Ok(PathBuf::from(explicit));
    }
    let exe = std::env::current_exe().context("cannot find the nimbus executable's path")?;
    let sibling = exe.with_file_name("nimbus-vmm");
    if sibling.is_file() {
        return Ok(sibling);
    }
    anyhow::bail!(
        "nimbus-vmm not found next to {} (build it with `cargo build --release`, or set NIMBUS_VMM)",
        exe.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::guest_cmdline::defaults;
    use vmm::host::KvmBackend;

    #[test]
    fn user_parameters_come_after_the_defaults() {
        let line = compose_cmdline(
            defaults(KvmBackend::HardwareAssisted, None),
            &["  nimbus.poweroff=1 "],
        );
        assert!(line.starts_with("console=ttyS0"), "{line}");
        assert!(line.ends_with(" nimbus.poweroff=1"), "{line}");
    }

    #[test]
    fn pvm_parameters_only_on_kvm_pvm() {
        let hw = compose_cmdline(defaults(KvmBackend::HardwareAssisted, Some(1000)), &[]);
        let pvm = compose_cmdline(defaults(KvmBackend::Pvm, Some(1000)), &[]);
        assert!(!hw.contains("pvm_emulated_ring0"), "{hw}");
        assert!(pvm.contains("pvm_emulated_ring0"), "{pvm}");
        assert!(!hw.contains("tsc_early_khz"), "{hw}");
        assert!(pvm.contains("tsc_early_khz=1000"), "{pvm}");
    }
}
