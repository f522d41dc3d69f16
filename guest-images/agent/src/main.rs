//! nimbus-agent: PID 1 (`/init`) of nimbus guests.
//!
//! It mounts the pseudo file systems, configures NICs and data disks from the
//! kernel command line (`nimbus.*` parameters, see `cmdline`), prints the
//! readiness line on the console, then powers off, starts a shell or reaps
//! children forever. PID 1 must never exit (the kernel panics), so every
//! error is reported as `NIMBUS_ERROR <what>: <why>` and the agent goes on,
//! and a panic powers the guest off.
//!
//! `#![no_main]`: Rust's runtime start-up would, among other syscalls, open
//! `/dev/null` for closed standard descriptors and abort when it cannot —
//! exactly PID 1's situation in an initramfs without device nodes. The C
//! `main` below skips that start-up; std itself still works.
//!
//! On a host, only `--check-cmdline "<string>"` does anything: it prints the
//! plan. Run as anything but PID 1 otherwise, the agent refuses and exits 2.

// The unit-test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]

mod check;
mod cmdline;
mod commands;
mod console;
mod console_commands;
mod direct_io;
mod http;
mod init;
mod mounts;
mod net;
mod power;
mod readiness;
mod reaper;
mod shell;
mod small_file;

use std::panic::{self, AssertUnwindSafe};

use console::Console;

const USAGE: &str = "usage: nimbus-agent --check-cmdline \"<kernel command line>\"\n       \
                     (as PID 1 of a nimbus guest: no arguments)";

#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    agent_main()
}

/// The whole program; separate from `main` so the unit-test build, which has
/// the harness's `main`, still type-checks it.
#[cfg_attr(test, allow(dead_code))]
fn agent_main() -> libc::c_int {
    // Arguments come from std (glibc passes them to std's .init_array hook).
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.as_slice() {
        [flag, cmdline] if flag == "--check-cmdline" => return check::run(cmdline),
        [flag] if flag == "--version" => {
            println!("nimbus-agent {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        _ => {}
    }
    // SAFETY: getpid(2) cannot fail and has no memory effects.
    let pid = unsafe { libc::getpid() };
    if pid != 1 {
        eprintln!(
            "NIMBUS_ERROR agent: running as pid {pid}, not PID 1; refusing to touch this system\n{USAGE}"
        );
        return 2;
    }
    // The kernel's arguments (e.g. `--check-cmdline` smuggled onto the command
    // line) are ignored as PID 1: configuration comes from /proc/cmdline only.
    let mut console = Console::stdout();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| init::run(&mut console)));
    let why = match outcome {
        // init::run never returns; this arm only satisfies the type checker.
        Ok(()) => "boot sequence returned".to_owned(),
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned()),
    };
    let mut console = Console::stdout();
    console.error("agent panic", format_args!("{why}; powering off"));
    power::power_off(&mut console)
}
