//! PID 1's resting state: reap every child (orphans are re-parented to us)
//! and restart the interactive shell when it exits.
//!
//! Blocking `waitpid(-1)` sleeps while any child exists. With no children it
//! fails with ECHILD and we sleep in `sigsuspend` until a SIGCHLD: SIGCHLD is
//! blocked outside `sigsuspend`, so one that arrives between the ECHILD and
//! the sleep stays pending and wakes it (no lost wake-up). A handler must be
//! installed: the kernel drops default-action signals sent to PID 1.

use std::io;
use std::time::{Duration, Instant};

use crate::console::Console;
use crate::power::idle_forever;
use crate::shell;

/// A shell that lived shorter than this is broken, not exited by a user:
/// it is not restarted, so a bad image does not spin.
const MIN_SHELL_LIFETIME: Duration = Duration::from_secs(2);

/// The running interactive shell, if any.
pub struct ShellState {
    pid: libc::pid_t,
    started: Instant,
}

impl ShellState {
    /// Tracks a freshly spawned shell.
    pub fn new(pid: libc::pid_t) -> Self {
        Self {
            pid,
            started: Instant::now(),
        }
    }
}

extern "C" fn on_sigchld(_: libc::c_int) {}

/// Reaps children forever. Never returns.
pub fn reap_forever(console: &mut Console, mut shell: Option<ShellState>) -> ! {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset before use.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    let can_suspend = match block_sigchld(&mut empty) {
        Ok(()) => true,
        Err(err) => {
            // Without the handler sigsuspend would never wake: poll instead.
            console.error(
                "reaper sigaction",
                format_args!("{err}; polling every second"),
            );
            false
        }
    };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid int for waitpid to fill in.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid > 0 {
            if shell.as_ref().is_some_and(|s| s.pid == pid) {
                shell = shell.and_then(|s| restart_shell(console, &s, status));
            }
            continue;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ECHILD) if can_suspend => {
                // SAFETY: `empty` is an initialised (empty) signal set.
                unsafe { libc::sigsuspend(&empty) };
            }
            Some(libc::ECHILD) => std::thread::sleep(Duration::from_secs(1)),
            _ => {
                console.error("reaper waitpid", io::Error::last_os_error());
                idle_forever();
            }
        }
    }
}

fn restart_shell(
    console: &mut Console,
    old: &ShellState,
    status: libc::c_int,
) -> Option<ShellState> {
    let lived = old.started.elapsed();
    if lived < MIN_SHELL_LIFETIME {
        console.error(
            "shell",
            format_args!(
                "exited after {:.1} s (wait status {status:#x}); not restarting",
                lived.as_secs_f64()
            ),
        );
        return None;
    }
    console.line(format_args!(
        "nimbus-agent: shell exited; starting a new one"
    ));
    match shell::spawn() {
        Ok(pid) => Some(ShellState::new(pid)),
        Err(err) => {
            console.error("shell spawn", err);
            None
        }
    }
}

fn block_sigchld(empty: &mut libc::sigset_t) -> io::Result<()> {
    // SAFETY: the sigaction and sigset values are initialised here before
    // use; the handler is an `extern "C"` function that does nothing, which
    // is async-signal-safe.
    unsafe {
        libc::sigemptyset(empty);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigchld as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_NOCLDSTOP | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
