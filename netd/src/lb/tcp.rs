//! The TCP data path: accept on the frontend, pick a backend, connect
//! (trying the next eligible backend when a connection attempt fails, so
//! a backend that just died costs no client its request, and counting the
//! failure for passive checking, [`super::passive`]), optionally send
//! a PROXY v2 header, then relay both ways until both sides are done, the
//! flow is idle for the rule's idle timeout, or the rule goes away.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::metrics::{Counters, OpenFlow};
use super::proxy_header::{self, Transport};
use super::select::{Flow, Pool};
use super::workers::Lane;
use super::RuleRuntime;

/// Longest wait for a backend's SYN-ACK before trying another backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Relay buffer per direction: large enough for bulk streams, small
/// enough for many thousands of idle connections.
const BUFFER: usize = 32 * 1024;
/// Relay buffers a thread keeps for reuse (1 MiB per thread at most).
const SPARE_BUFFERS: usize = 32;

thread_local! {
    /// Relay buffers of closed connections, reused by the next ones on
    /// the same thread instead of allocating and zeroing 64 KiB each.
    static SPARE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A relay buffer, returned to the thread's spares when dropped.
struct Buffer(Box<[u8]>);

impl Buffer {
    fn get() -> Self {
        let spare = SPARE.with(|s| s.borrow_mut().pop());
        Buffer(spare.unwrap_or_else(|| vec![0u8; BUFFER].into_boxed_slice()))
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_BUFFERS {
                s.push(buf);
            }
        });
    }
}

/// What a thread's connections share: the rule and this thread's copy of
/// its pool, behind one reference count that only this thread touches.
struct Local {
    rule: Arc<RuleRuntime>,
    pool: Arc<Pool>,
    /// Ends when the accept loop's sender is dropped, i.e. when the loop
    /// is aborted (rule stopped). A channel of this thread's own keeps
    /// connections off the rule's, whose lock both threads would otherwise
    /// take on every wake-up.
    stop: watch::Receiver<bool>,
    /// This thread's connection count among the others'.
    lane: Lane,
}

/// A connection counted on its thread's lane until it ends, however it
/// ends (the task finishing, aborted or unwinding).
struct OnLane<'a>(&'a Lane);

impl Drop for OnLane<'_> {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// How long a thread that holds clearly more connections than another
/// ([`Lane::is_heavy`]) leaves a new connection to the others before it
/// accepts it itself (one timer tick).
const HANDOFF_GRACE: Duration = Duration::from_millis(1);

/// Accepts connections until the task is aborted. Runs on one data-path
/// thread; the connections it accepts stay there.
///
/// Every thread's listener becomes readable for each new connection, and
/// whichever thread calls accept(2) first gets it. A heavy thread waits
/// [`HANDOFF_GRACE`] first, so a lighter one takes it; if none did, the
/// heavy thread accepts it after all (a connection never waits on a
/// balance).
pub async fn serve(rule: Arc<RuleRuntime>, listener: std::net::TcpListener, lane: Lane) {
    // The listener is non-blocking (see `tcp_listener`); readiness is
    // watched here rather than by tokio's TcpListener, whose accept()
    // cannot be held back once the socket is readable.
    // SAFETY: the std listener owns its open socket descriptor and the
    // AsyncFd owns the listener from here on; nothing closes or replaces
    // that descriptor before the AsyncFd is dropped, and `as_raw_fd` of a
    // TcpListener always returns the one it owns.
    let registered = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, frontend = %rule.frontend, "registering the listener failed");
            return;
        }
    };
    // Never sent on; dropped with this future.
    let (_stop, stop) = watch::channel(false);
    let mut generation = rule.pool_generation.load(Ordering::Acquire);
    let mut local = Arc::new(Local {
        pool: rule.pool(),
        rule,
        stop,
        lane,
    });
    let mut waited = false;
    loop {
        let mut ready = match listener.readable().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, frontend = %local.rule.frontend, "listener failed");
                return;
            }
        };
        if !waited && local.lane.is_heavy() {
            // Dropping the guard keeps the readiness: the next round
            // accepts at once, or finds the connection taken (EAGAIN).
            drop(ready);
            waited = true;
            tokio::time::sleep(HANDOFF_GRACE).await;
            continue;
        }
        waited = false;
        // Err(_): WouldBlock, another thread took it; readiness cleared.
        let Ok(accepted) = ready.try_io(|l| l.get_ref().accept()) else {
            continue;
        };
        let registered = accepted.and_then(|(client, peer)| {
            client.set_nonblocking(true)?;
            Ok((TcpStream::from_std(client)?, peer))
        });
        match registered {
            Ok((client, peer)) => {
                let now = local.rule.pool_generation.load(Ordering::Acquire);
                if now != generation {
                    // The pool was swapped: a new copy for new flows; the
                    // open ones keep theirs.
                    generation = now;
                    local = Arc::new(Local {
                        rule: local.rule.clone(),
                        pool: local.rule.pool(),
                        stop: local.stop.clone(),
                        lane: local.lane.clone(),
                    });
                }
                let local = local.clone();
                local.lane.opened();
                tokio::spawn(async move {
                    let _counted = OnLane(&local.lane);
                    handle(&local, client, peer).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, frontend = %local.rule.frontend, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(local: &Local, client: TcpStream, peer: SocketAddr) {
    let Local {
        rule, pool, stop, ..
    } = local;
    let _ = client.set_nodelay(true);
    rule.counters.open();
    let _front = OpenFlow(&rule.counters);
    let flow = Flow {
        src: peer,
        dst: rule.frontend.into(),
        proto: 6,
    };
    let mut tried = Vec::new();
    let (index, mut upstream) = loop {
        let Some(i) = pool.pick(rule.settings.algorithm, &flow, &tried) else {
            debug!(frontend = %rule.frontend, "no backend available");
            rule.counters.error();
            return;
        };
        let b = &pool.members[i];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(b.addr)).await {
            Ok(Ok(s)) => {
                b.passive.connected();
                break (i, s);
            }
            Ok(Err(e)) => {
                debug!(backend = %b.addr, error = %e, "connect failed; trying another backend");
                b.passive.failed(&b.health, b.addr, &e);
            }
            Err(_) => {
                debug!(backend = %b.addr, "connect timed out; trying another backend");
                let e = format!("no answer within {} ms", CONNECT_TIMEOUT.as_millis());
                b.passive.failed(&b.health, b.addr, &e);
            }
        }
        b.counters.error();
        tried.push(i);
    };
    let backend = &pool.members[index];
    backend.counters.open();
    let _back = OpenFlow(&backend.counters);
    let _ = upstream.set_nodelay(true);
    if rule.settings.proxy_protocol {
        let header = proxy_header::encode(peer, rule.frontend.into(), Transport::Stream);
        if upstream.write_all(&header).await.is_err() {
            backend.counters.error();
            return;
        }
    }
    let idle = rule.settings.idle_timeout;
    if let Err(e) = relay(
        client,
        upstream,
        idle,
        &rule.counters,
        &backend.counters,
        stop.clone(),
    )
    .await
    {
        debug!(backend = %backend.addr, error = %e, "relay ended with an error");
        backend.counters.error();
    }
}

/// Copies both ways; returns when both directions finished (each end's
/// FIN passed on), on idle timeout, or when `stop` turns true.
async fn relay(
    mut client: TcpStream,
    mut backend: TcpStream,
    idle: Duration,
    front: &Counters,
    back: &Counters,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let mut up = Pipe::new();
    let mut down = Pipe::new();
    // Both directions in one future, polled in place: no task, lock or
    // channel between them.
    let copy = poll_fn(|cx| {
        let mut moved = false;
        let other = down.done;
        let up_done = up.poll_copy(cx, &mut client, &mut backend, other, &mut moved, |n| {
            front.add_in(n);
            back.add_in(n);
        })?;
        let other = up.done;
        let down_done = down.poll_copy(cx, &mut backend, &mut client, other, &mut moved, |n| {
            front.add_out(n);
            back.add_out(n);
        })?;
        if moved {
            last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        if up_done.is_ready() && down_done.is_ready() {
            Poll::Ready(Ok::<(), io::Error>(()))
        } else {
            Poll::Pending
        }
    });
    let watchdog = async {
        loop {
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        biased;
        r = copy => r,
        () = watchdog => Ok(()),
        _ = stop.wait_for(|s| *s) => Ok(()),
    }
}

/// One direction of a relay: read into the buffer, write it all out, and
/// pass the reader's FIN on as a write shutdown.
struct Pipe {
    buf: Option<Buffer>,
    pos: usize,
    end: usize,
    eof: bool,
    done: bool,
}

impl Pipe {
    fn new() -> Self {
        Pipe {
            buf: None,
            pos: 0,
            end: 0,
            eof: false,
            done: false,
        }
    }

    /// Ready(Ok) once this direction is finished. `moved` is set when
    /// bytes went through. `last` says the other direction is finished,
    /// so both sockets are about to be closed.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut TcpStream,
        w: &mut TcpStream,
        last: bool,
        moved: &mut bool,
        count: impl Fn(u64),
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.end && !self.eof {
                // Taken only when there is something to carry, and given
                // back when drained: idle keep-alive connections hold none.
                let buf = self.buf.get_or_insert_with(Buffer::get);
                let mut rb = ReadBuf::new(&mut buf.0);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        self.buf = None;
                        return Poll::Pending;
                    }
                    Poll::Ready(res) => res?,
                }
                let n = rb.filled().len();
                if n == 0 {
                    self.eof = true;
                    self.buf = None;
                } else {
                    self.pos = 0;
                    self.end = n;
                }
            }
            while self.pos < self.end {
                let Some(buf) = &self.buf else { break };
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &buf.0[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                count(n as u64);
                *moved = true;
            }
            if self.eof {
                // Pass the half-close on; the other direction may go on.
                // When it is already over, the close that follows sends
                // the FIN (`w` has nothing unread: its reader saw EOF), so
                // the shutdown would be one syscall per flow for nothing.
                if !last {
                    let _ = ready!(Pin::new(&mut *w).poll_shutdown(cx));
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Both ends of one loopback connection.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn relay_passes_a_half_close_on_and_counts_bytes() {
        let (mut client, front_end) = pair().await;
        let (back_end, mut backend) = pair().await;
        let (front, back) = (Counters::default(), Counters::default());
        let (_stop, stop) = watch::channel(false);
        let big = vec![7u8; 200_000];
        let peers = async {
            client.write_all(b"request").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            backend.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"request");
            // The backend answers after the client's half-close.
            backend.write_all(&big).await.unwrap();
            drop(backend);
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, big);
        };
        let relay = relay(
            front_end,
            back_end,
            Duration::from_secs(30),
            &front,
            &back,
            stop,
        );
        let (r, ()) = tokio::join!(relay, peers);
        r.unwrap();
        for c in [&front, &back] {
            assert_eq!(c.snapshot().bytes_in, 7);
            assert_eq!(c.snapshot().bytes_out, 200_000);
        }
    }

    #[tokio::test]
    async fn relay_ends_when_idle_or_stopped() {
        let (_client, front_end) = pair().await;
        let (back_end, _backend) = pair().await;
        let (front, back) = (Counters::default(), Counters::default());
        let (_stop, stop) = watch::channel(false);
        let idle = relay(
            front_end,
            back_end,
            Duration::from_millis(100),
            &front,
            &back,
            stop,
        );
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .expect("idle timeout")
            .unwrap();

        let (_client, front_end) = pair().await;
        let (back_end, _backend) = pair().await;
        let (stop_tx, stop) = watch::channel(false);
        let stopped = relay(
            front_end,
            back_end,
            Duration::from_secs(30),
            &front,
            &back,
            stop,
        );
        drop(stop_tx);
        tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .expect("ended by the accept loop going away")
            .unwrap();
    }
}
