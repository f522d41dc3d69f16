//! Requests from the host on the serial console.
//!
//! There is no ACPI in nimbus guests, so a graceful shutdown travels over
//! the console: the VMM puts the line [`POWEROFF_LINE`] on the serial input
//! (nimbus-vmm's `shutdown` API op, `vmm::api::protocol::SHUTDOWN_LINE`)
//! and this thread, on reading exactly that line, syncs and powers off.
//! Every other line is ignored. Echo is switched off first so that neither
//! the request nor anything typed on an attached console is copied into
//! the console log.
//!
//! Not started with `nimbus.shell=1`: the console then belongs to the
//! shell, and a host falls back to killing the VM after its timeout.

use std::io::{self, BufRead, BufReader, Read};

use crate::console::Console;

/// The power-off request; must match the VMM's `SHUTDOWN_LINE`.
pub const POWEROFF_LINE: &str = "NIMBUS_POWEROFF";

/// What one console line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleRequest {
    /// Sync and power off.
    PowerOff,
    /// Not for us.
    Ignore,
}

/// Classifies one line (its terminator already removed or not).
pub fn classify(line: &str) -> ConsoleRequest {
    if line.trim_end_matches(['\r', '\n']) == POWEROFF_LINE {
        ConsoleRequest::PowerOff
    } else {
        ConsoleRequest::Ignore
    }
}

/// Starts the console reader thread.
pub fn spawn(console: &mut Console) {
    console.ensure_standard_fds();
    if let Err(err) = disable_echo(libc::STDIN_FILENO) {
        console.error("console echo off", err);
    }
    let spawned = std::thread::Builder::new()
        .name("console-cmd".into())
        .stack_size(64 * 1024)
        .spawn(|| watch(StdinFd));
    if let Err(err) = spawned {
        console.error("console thread", err);
    }
}

/// Standard input without std's buffering or locking.
struct StdinFd;

impl Read for StdinFd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a live, writable slice; read(2) writes at most
        // its length.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Longest line kept; longer ones are not a request and are cut.
const MAX_LINE: u64 = 256;

fn watch(input: impl Read) {
    let mut console = Console::stdout();
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) => {
                // No console input (closed, or a hang-up): nothing to watch.
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Ok(_) => {
                if classify(&String::from_utf8_lossy(&line)) == ConsoleRequest::PowerOff {
                    console.line(format_args!(
                        "nimbus-agent: power-off requested on the console"
                    ));
                    crate::power::power_off(&mut console);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                console.error("console read", err);
                return;
            }
        }
    }
}

fn disable_echo(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: termios is plain data, fully written by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios for tcgetattr to fill.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    t.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL | libc::ECHOCTL);
    // Canonical mode stays on: the kernel hands over whole lines.
    t.c_lflag |= libc::ICANON;
    // SAFETY: `t` is a valid termios read above.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_line_powers_off() {
        assert_eq!(classify("NIMBUS_POWEROFF\n"), ConsoleRequest::PowerOff);
        assert_eq!(classify("NIMBUS_POWEROFF\r\n"), ConsoleRequest::PowerOff);
        assert_eq!(classify("NIMBUS_POWEROFF"), ConsoleRequest::PowerOff);
        for other in [
            "",
            "\n",
            "nimbus_poweroff\n",
            " NIMBUS_POWEROFF\n",
            "NIMBUS_POWEROFF now\n",
            "poweroff\n",
        ] {
            assert_eq!(classify(other), ConsoleRequest::Ignore, "{other:?}");
        }
    }
}
