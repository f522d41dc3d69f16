//! The host side of the serial console: where output goes, and forwarding
//! a terminal's input to the guest (raw mode, restored on exit; Ctrl-A x
//! quits).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use devices::legacy::{ConsoleEscape, EscapeAction, SerialConsole};

use crate::config::SerialOutput;
use crate::vcpu::VmEvent;

/// Opens the console output for `serial`.
pub fn open_output(serial: &SerialOutput) -> io::Result<devices::legacy::serial::ConsoleOutput> {
    Ok(match serial {
        SerialOutput::Stdout => Box::new(io::stdout()),
        SerialOutput::File(p) => Box::new(File::create(p)?),
    })
}

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Puts a terminal in raw mode and restores its settings when dropped.
pub struct RawTerminal {
    fd: i32,
    saved: libc::termios,
}

impl RawTerminal {
    /// Switches stdin to raw mode (no echo, no line editing, no signals:
    /// Ctrl-C goes to the guest).
    pub fn stdin() -> io::Result<RawTerminal> {
        let fd = io::stdin().as_raw_fd();
        // SAFETY: termios is plain data, fully written by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is stdin; `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: fd is stdin; `raw` is a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `stdin()` on the same fd.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Forwards stdin to `serial` on a small dedicated thread. The thread
/// blocks in read(2) and is not joined: the process exits around it.
pub fn spawn_input_thread(
    serial: Arc<Mutex<SerialConsole>>,
    events: Sender<VmEvent>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("console-in".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut escape = ConsoleEscape::new();
            let mut buf = [0u8; 64];
            let mut stdin = io::stdin();
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                let (bytes, quit) = match escape.feed(&buf[..n]) {
                    EscapeAction::Forward(b) => (b, false),
                    EscapeAction::Quit(b) => (b, true),
                };
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let taken = match serial.lock() {
                        Ok(mut s) => s.enqueue_input(rest),
                        Err(_) => return,
                    };
                    rest = &rest[taken..];
                    if taken == 0 {
                        // The guest has not drained its FIFO yet.
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
                if quit {
                    let _ = events.send(VmEvent::ConsoleQuit);
                    return;
                }
            }
        })?;
    Ok(())
}
