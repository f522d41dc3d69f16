//! The boot sequence PID 1 runs: parse, validate, then act.

use std::path::Path;

use crate::cmdline;
use crate::commands;
use crate::console::Console;
use crate::mounts;
use crate::net::NetControl;
use crate::power::power_off;
use crate::readiness::Readiness;
use crate::reaper::{self, ShellState};
use crate::shell;
use crate::small_file::read_once;

/// x86's COMMAND_LINE_SIZE is 2048; leave room.
const CMDLINE_MAX: usize = 4096;

/// Runs the guest: mounts, NICs, disks, readiness, then power-off, a shell
/// or reaping forever. Never returns.
pub fn run(console: &mut Console) -> ! {
    mounts::mount_pseudo_filesystems(console);

    let mut buf = vec![0u8; CMDLINE_MAX];
    let config = match read_once(Path::new("/proc/cmdline"), &mut buf) {
        Ok(text) => {
            let (config, errors) = cmdline::parse(text);
            for err in &errors {
                console.error("agent", err);
            }
            config
        }
        Err(err) => {
            console.error("agent /proc/cmdline", format_args!("{err}; using defaults"));
            cmdline::BootConfig::default()
        }
    };

    // The host's graceful shutdown arrives on the console, unless the
    // console is the shell's.
    if !config.shell {
        crate::console_commands::spawn(console);
    }

    match NetControl::open() {
        Ok(net) => {
            if let Err(err) = net.loopback_up() {
                console.error("net", err);
            }
            for nic in &config.nets {
                if let Err(err) = net.configure(nic) {
                    console.error("net", err);
                }
            }
        }
        Err(err) => console.error("net socket", err),
    }

    for disk in &config.disks {
        if let Err(err) = mounts::mount_disk(disk) {
            console.error(
                &format!(
                    "disk {} on {}",
                    disk.device.display(),
                    disk.mountpoint.display()
                ),
                err,
            );
        }
    }

    let port = config
        .serve
        .unwrap_or(if config.nets.is_empty() { 0 } else { 7000 });
    if port != 0 {
        // A thread, not a process: PID 1 never forks.
        if let Err(err) = std::thread::Builder::new()
            .name("serve".into())
            .spawn(move || commands::serve(port))
        {
            console.error("serve thread", err);
        }
    }

    let http_port = config
        .http
        .unwrap_or(if config.nets.is_empty() { 0 } else { 80 });
    if http_port != 0 {
        let who = crate::http::Identity {
            name: config.name.clone().unwrap_or_else(|| "unnamed".into()),
            ip: config.nets.first().map(|n| n.addr.addr()),
        };
        crate::http::spawn(http_port, who, console);
    }

    let ready = Readiness::gather(console);
    console.line(format_args!("{ready}"));

    for run in &config.runs {
        match commands::run_local(run, console) {
            Some(Ok(answer)) => console.line(format_args!("NIMBUS_RESULT {run}: {answer}")),
            Some(Err(err)) => console.line(format_args!("NIMBUS_RESULT {run}: ERR {err}")),
            None => console.error("nimbus.run", format_args!("unknown command {run:?}")),
        }
    }

    if config.poweroff {
        power_off(console);
    }
    let shell = if config.shell {
        console.ensure_standard_fds();
        match shell::spawn() {
            Ok(pid) => Some(ShellState::new(pid)),
            Err(err) => {
                console.error("shell spawn", err);
                None
            }
        }
    } else {
        None
    };
    reaper::reap_forever(console, shell)
}
