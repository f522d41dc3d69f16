//! `nimbus vm console NAME`: the serial console of a running VM on this
//! terminal (raw mode, both ways) until Ctrl-] detaches. The VM keeps
//! running and its console log keeps being written.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::error::VmError;
use super::supervisor;
use super::Context;

/// Ctrl-] (as in telnet and virsh).
pub const DETACH_KEY: u8 = 0x1d;

/// Why the session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The user pressed Ctrl-] (or stdin ended).
    Detached,
    /// The VMM closed the console (the VM ended).
    Closed,
}

/// Splits terminal input at the detach key: (bytes to send, detach?).
pub fn split_detach(input: &[u8]) -> (&[u8], bool) {
    match input.iter().position(|b| *b == DETACH_KEY) {
        Some(i) => (&input[..i], true),
        None => (input, false),
    }
}

fn poll_in(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    // SAFETY: `fds` is a live slice of pollfd; poll writes only revents.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Attaches this terminal to VM `name`'s console.
pub fn attach(ctx: &Context, name: &str) -> Result<Ended, VmError> {
    let dir = ctx.state.vm(name);
    if !dir.exists() {
        return Err(VmError::NotFound(name.to_string()));
    }
    if !supervisor::is_active(&dir)? {
        return Err(VmError::Api {
            vm: name.to_string(),
            reason: "is not running (start it with `nimbus vm start`)".into(),
        });
    }
    let socket = dir.console_socket();
    let io_err = |e: io::Error| VmError::Io {
        vm: name.to_string(),
        what: "console",
        path: socket.clone(),
        source: e,
    };
    let mut stream = UnixStream::connect(&socket).map_err(io_err)?;
    eprintln!("Connected to the console of {name}. Detach with Ctrl-] (the VM keeps running).");
    let _raw = if vmm::console::stdin_is_tty() {
        Some(vmm::console::RawTerminal::stdin().map_err(io_err)?)
    } else {
        None
    };
    let ended = pump(&mut stream).map_err(io_err)?;
    drop(_raw);
    match ended {
        Ended::Detached => eprintln!("\r\nDetached from {name}."),
        Ended::Closed => eprintln!("\r\nThe console of {name} closed (the VM ended)."),
    }
    Ok(ended)
}

fn pump(stream: &mut UnixStream) -> io::Result<Ended> {
    let stdin = io::stdin();
    let mut stdout = io::stdout();
    let mut buf = [0u8; 4096];
    let mut stdin_open = true;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { stdin.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // Piped input that has ended: show what comes back for a moment.
        let timeout = if stdin_open { -1 } else { 500 };
        poll_in(&mut fds, timeout)?;
        if !stdin_open && fds[0].revents == 0 {
            return Ok(Ended::Detached);
        }
        if fds[0].revents != 0 {
            let n = match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                return Ok(Ended::Closed);
            }
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
        }
        if stdin_open && fds[1].revents != 0 {
            let n = match stdin.lock().read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                stdin_open = false;
                continue;
            }
            let (send, detach) = split_detach(&buf[..n]);
            stream.write_all(send)?;
            if detach {
                // Let the last bytes reach the VMM before closing.
                std::thread::sleep(Duration::from_millis(20));
                return Ok(Ended::Detached);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_key_is_cut_out() {
        assert_eq!(split_detach(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_detach(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_detach(b"\x1d"), (&b""[..], true));
    }
}
