//! Line output to the system console.
//!
//! The kernel hands PID 1 file descriptors 0–2 on `/dev/console` when the
//! initramfs has that node, so the normal case costs one `write` per line and
//! no `open`. If those descriptors are closed (an image without the node), the
//! first failed write opens `/dev/console` (devtmpfs provides it once mounted)
//! and installs it as 0, 1 and 2, which a spawned shell then inherits.

use std::ffi::CStr;
use std::fmt;
use std::io;

const CONSOLE: &CStr = c"/dev/console";

/// Where the agent's lines go.
pub struct Console {
    fd: libc::c_int,
}

impl Console {
    /// A console writing to standard output (the kernel console for PID 1).
    pub fn stdout() -> Self {
        Self {
            fd: libc::STDOUT_FILENO,
        }
    }

    /// Writes one line (a newline is appended) with a single `write` call.
    /// Output errors are dropped: there is nowhere else to report them.
    pub fn line(&mut self, args: fmt::Arguments<'_>) {
        let mut text = args.to_string();
        text.push('\n');
        if let Err(err) = self.write_all(text.as_bytes()) {
            if err.raw_os_error() == Some(libc::EBADF) && self.reopen().is_ok() {
                let _ = self.write_all(text.as_bytes());
            }
        }
    }

    /// Prints `NIMBUS_ERROR <what>: <why>`, the contract's error line.
    pub fn error(&mut self, what: &str, why: impl fmt::Display) {
        self.line(format_args!("NIMBUS_ERROR {what}: {why}"));
    }

    /// Makes sure descriptors 0, 1 and 2 are open on the console, for a
    /// child that will use them. Costs one probe write when they already are.
    pub fn ensure_standard_fds(&mut self) {
        if self.write_all(b"").is_err() {
            let _ = self.reopen();
        }
    }

    fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: `bytes` is a live slice; write(2) reads at most its length.
            let n = unsafe { libc::write(self.fd, bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            // n >= 0 was checked above and never exceeds bytes.len().
            bytes = bytes.get(n as usize..).unwrap_or_default();
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        // SAFETY: CONSOLE is a NUL-terminated path; open(2) has no other
        // memory effects.
        let fd = unsafe { libc::open(CONSOLE.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        for target in 0..=2 {
            if target != fd {
                // SAFETY: dup2 on descriptors we own; 0–2 were unusable anyway.
                unsafe { libc::dup2(fd, target) };
            }
        }
        if fd > 2 {
            // SAFETY: fd was opened above and is no longer needed.
            unsafe { libc::close(fd) };
        }
        self.fd = libc::STDOUT_FILENO;
        Ok(())
    }
}
