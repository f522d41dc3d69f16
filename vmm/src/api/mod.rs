//! The VMM's API socket (`--api-socket PATH`): a Unix stream socket that
//! speaks JSON lines (the format is in [`protocol`]).
//!
//! ```text
//! $ socat - UNIX-CONNECT:/var/lib/nimbus/vms/web-1/api.sock
//! {"op":"status"}
//! {"ok":true,"status":{"pid":4242,"state":"running","uptime_s":12.5,"vcpus":1,
//!  "memory_mib":128,"process_cpu_s":9.1,"vcpu_cpu":[{"id":0,"cpu_s":8.7}],
//!  "console_attached":false}}
//! {"op":"pause"}
//! {"ok":true,"state":"paused"}
//! ```
//!
//! Every connection is served on its own small thread, at most
//! [`MAX_CONNECTIONS`] at once; a connection idle for [`IDLE_TIMEOUT`] is
//! closed. Nothing a client sends can stop the VMM: bad lines get an error
//! answer, over-long lines are skipped up to their newline.

pub mod cpu_time;
pub mod protocol;

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::legacy::SerialConsole;

use crate::console_socket::{feed_serial, ConsoleClient};
use crate::vcpu_control::{RunState, VcpuControl};
use protocol::{parse_request, Request, Response, RunningState, VcpuTime, VmStatus};

/// Connections served at once; more are answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `pause` waits for the vCPUs to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the API can see and touch.
pub struct ApiContext {
    /// vCPU run state.
    pub control: Arc<VcpuControl>,
    /// The serial console (the shutdown line goes to its input).
    pub serial: Arc<Mutex<SerialConsole>>,
    /// The console socket's client, if any.
    pub console: Arc<ConsoleClient>,
    /// When the VM started.
    pub started: Instant,
    /// vCPUs configured.
    pub vcpus: u8,
    /// Guest memory, MiB.
    pub memory_mib: u64,
}

/// Binds a Unix socket at `path`, mode 0600. A socket file left by a VMM
/// that is gone is replaced; one that still answers is `AddrInUse`.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is served by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Binds `path` and serves the API on a thread.
pub fn spawn(path: &Path, ctx: Arc<ApiContext>) -> io::Result<()> {
    let listener = bind(path)?;
    std::thread::Builder::new()
        .name("api".into())
        .stack_size(128 * 1024)
        .spawn(move || accept_loop(listener, ctx))?;
    Ok(())
}

fn accept_loop(listener: UnixListener, ctx: Arc<ApiContext>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            continue;
        };
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.write_all(
                Response::error(format!("more than {MAX_CONNECTIONS} connections"))
                    .to_line()
                    .as_bytes(),
            );
            continue;
        }
        let (ctx, open2) = (ctx.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let _ = serve(stream, &ctx);
                open2.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One line read from a client.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A complete line (newline stripped).
    Complete(Vec<u8>),
    /// More than `MAX_LINE` bytes before the newline; skipped.
    TooLong(usize),
    /// The client closed the connection.
    Eof,
}

/// Reads one line of at most `max` bytes; a longer one is consumed up to
/// its newline and reported as `TooLong` without being kept in memory.
fn read_line_capped(reader: &mut impl BufRead, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    let mut total = 0usize;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(if total == 0 {
                Line::Eof
            } else if total > max {
                Line::TooLong(total)
            } else {
                Line::Complete(line)
            });
        }
        let (used, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let data = &chunk[..if done { used - 1 } else { used }];
        total += data.len();
        if total <= max {
            line.extend_from_slice(data);
        } else {
            line.clear();
        }
        reader.consume(used);
        if done {
            return Ok(if total > max {
                Line::TooLong(total)
            } else {
                Line::Complete(line)
            });
        }
    }
}

fn serve(stream: UnixStream, ctx: &ApiContext) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let answer = match read_line_capped(&mut reader, protocol::MAX_LINE)? {
            Line::Eof => return Ok(()),
            Line::TooLong(n) => Response::error(format!(
                "request of {n} bytes: longer than {}",
                protocol::MAX_LINE
            )),
            Line::Complete(line) => match parse_request(&line) {
                Ok(request) => handle(ctx, request),
                Err(why) => Response::error(why),
            },
        };
        writer.write_all(answer.to_line().as_bytes())?;
    }
}

fn running_state(control: &VcpuControl) -> RunningState {
    match control.state() {
        RunState::Paused => RunningState::Paused,
        RunState::Running | RunState::Stopping => RunningState::Running,
    }
}

/// Carries out one request.
pub fn handle(ctx: &ApiContext, request: Request) -> Response {
    match request {
        Request::Status => Response {
            ok: true,
            status: Some(status(ctx)),
            ..Response::default()
        },
        Request::Pause => match ctx.control.pause(PAUSE_TIMEOUT) {
            Ok(()) => Response::state(RunningState::Paused),
            Err(e) => Response::error(e.to_string()),
        },
        Request::Resume => match ctx.control.resume() {
            Ok(()) => Response::state(RunningState::Running),
            Err(e) => Response::error(e.to_string()),
        },
        Request::Shutdown => {
            // A paused guest cannot read its console.
            if let Err(e) = ctx.control.resume() {
                return Response::error(e.to_string());
            }
            let line = format!("\n{}\n", protocol::SHUTDOWN_LINE);
            let fed = feed_serial(&ctx.serial, line.as_bytes(), Duration::from_secs(2));
            if fed < line.len() {
                return Response::error(format!(
                    "the guest's serial input is full ({fed} of {} bytes queued): \
                     the guest is not reading its console",
                    line.len()
                ));
            }
            tracing::info!("shutdown requested through the API");
            Response::state(RunningState::Running)
        }
    }
}

fn status(ctx: &ApiContext) -> VmStatus {
    VmStatus {
        pid: std::process::id(),
        state: running_state(&ctx.control),
        uptime_s: ctx.started.elapsed().as_secs_f64(),
        vcpus: ctx.vcpus,
        memory_mib: ctx.memory_mib,
        process_cpu_s: cpu_time::process_cpu_s(),
        vcpu_cpu: ctx
            .control
            .thread_ids()
            .into_iter()
            .filter_map(|(id, tid)| {
                Some(VcpuTime {
                    id,
                    cpu_s: cpu_time::thread_cpu_s(tid)?,
                })
            })
            .collect(),
        console_attached: ctx.console.attached(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Line> {
        // A tiny buffer makes lines straddle reads.
        let mut r = BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        loop {
            let l = read_line_capped(&mut r, max).unwrap();
            let eof = l == Line::Eof;
            out.push(l);
            if eof {
                return out;
            }
        }
    }

    #[test]
    fn long_lines_are_skipped_not_kept() {
        assert_eq!(
            lines(b"ab\nabcdefgh\ncd", 4),
            vec![
                Line::Complete(b"ab".to_vec()),
                Line::TooLong(8),
                Line::Complete(b"cd".to_vec()),
                Line::Eof
            ]
        );
        assert_eq!(lines(b"", 4), vec![Line::Eof]);
        assert_eq!(lines(b"\n\n", 4).len(), 3);
        assert_eq!(lines(b"abcdefg", 4), vec![Line::TooLong(7), Line::Eof]);
    }

    #[test]
    fn bind_replaces_stale_sockets_only() {
        let dir = std::env::temp_dir().join(format!("nimbus-api-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let first = bind(&path).unwrap();
        assert_eq!(bind(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(first);
        let _second = bind(&path).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            bind(&file).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
