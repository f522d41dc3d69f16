//! The serial console over a Unix socket (`--console-socket PATH`).
//!
//! A client that connects gets the guest's serial output as raw bytes and
//! whatever it sends goes to the serial input (the UART's receive FIFO),
//! unchanged: no framing, no escaping. Detach keys are the client's
//! business (`nimbus vm console` uses Ctrl-]). Output keeps going to the
//! log file (`--serial-output`) whether a client is attached or not.
//!
//! Why a socket of its own rather than an API op that upgrades the
//! connection: the API is line-oriented JSON while a console is a raw byte
//! stream both ways; a separate socket keeps both trivial to parse, lets a
//! supervisor query `status` or send `shutdown` while a console is
//! attached, and can be given other permissions than the API.
//!
//! One client at a time: a second one is told so and closed. Output to a
//! client never blocks the vCPU that wrote it: it is sent with
//! MSG_DONTWAIT, and bytes a slow client has no room for are dropped for
//! that client (the log file still has them).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::legacy::SerialConsole;

/// The attached client, shared by the output path and the socket thread.
#[derive(Default)]
pub struct ConsoleClient {
    stream: Mutex<Option<(u64, UnixStream)>>,
    next_id: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl ConsoleClient {
    /// Whether a client is attached.
    pub fn attached(&self) -> bool {
        self.stream.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Bytes a slow client had no room for.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes.load(Ordering::Relaxed)
    }

    fn send(&self, bytes: &[u8]) {
        let Ok(mut guard) = self.stream.lock() else {
            return;
        };
        let Some((_, stream)) = guard.as_ref() else {
            return;
        };
        // SAFETY: `bytes` is a live slice; send(2) reads at most its length
        // from it. MSG_DONTWAIT: never block the vCPU; MSG_NOSIGNAL: a
        // closed peer is an error, not SIGPIPE.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                self.dropped_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            } else {
                *guard = None;
            }
        } else if (n as usize) < bytes.len() {
            self.dropped_bytes
                .fetch_add((bytes.len() - n as usize) as u64, Ordering::Relaxed);
        }
    }

    fn detach(&self, id: u64) {
        if let Ok(mut guard) = self.stream.lock() {
            if guard.as_ref().is_some_and(|(cur, _)| *cur == id) {
                *guard = None;
            }
        }
    }
}

/// Serial output: the log (file or stdout) and the attached client.
pub struct ConsoleTee {
    log: devices::legacy::serial::ConsoleOutput,
    client: Arc<ConsoleClient>,
}

impl ConsoleTee {
    /// Writes to `log` and to whatever client attaches to `client`.
    pub fn new(log: devices::legacy::serial::ConsoleOutput, client: Arc<ConsoleClient>) -> Self {
        ConsoleTee { log, client }
    }
}

impl Write for ConsoleTee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.client.send(buf);
        self.log.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.log.flush()
    }
}

/// Queues `bytes` on the serial input, waiting (up to `patience`) while the
/// guest drains its FIFO. Returns how many bytes went in.
pub fn feed_serial(serial: &Mutex<SerialConsole>, bytes: &[u8], patience: Duration) -> usize {
    let deadline = std::time::Instant::now() + patience;
    let mut done = 0;
    while done < bytes.len() {
        let taken = match serial.lock() {
            Ok(mut s) => s.enqueue_input(&bytes[done..]),
            Err(_) => return done,
        };
        done += taken;
        if taken == 0 {
            if std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    done
}

/// Binds `path` (replacing a stale socket file) and serves console
/// clients on a thread.
pub fn spawn(
    path: &Path,
    client: Arc<ConsoleClient>,
    serial: Arc<Mutex<SerialConsole>>,
) -> io::Result<()> {
    let listener = crate::api::bind(path)?;
    std::thread::Builder::new()
        .name("console-sock".into())
        .stack_size(128 * 1024)
        .spawn(move || accept_loop(listener, client, serial))?;
    Ok(())
}

fn accept_loop(
    listener: UnixListener,
    client: Arc<ConsoleClient>,
    serial: Arc<Mutex<SerialConsole>>,
) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            continue;
        };
        let id = client.next_id.fetch_add(1, Ordering::Relaxed);
        let reader = match stream.try_clone() {
            Ok(r) => r,
            Err(_) => continue,
        };
        {
            let Ok(mut guard) = client.stream.lock() else {
                return;
            };
            if guard.is_some() {
                let _ = stream.write_all(b"nimbus-vmm: a console client is already attached\r\n");
                continue;
            }
            *guard = Some((id, stream));
        }
        let (client, serial) = (client.clone(), serial.clone());
        let spawned = std::thread::Builder::new()
            .name("console-in".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                forward_input(reader, &serial);
                client.detach(id);
            });
        if spawned.is_err() {
            tracing::warn!("console: cannot start an input thread");
        }
    }
}

fn forward_input(mut reader: UnixStream, serial: &Mutex<SerialConsole>) {
    let mut buf = [0u8; 256];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        // A guest that never reads its console must not pile input up here
        // forever: after a minute of no room, drop the rest of the chunk.
        feed_serial(serial, &buf[..n], Duration::from_secs(60));
    }
}
