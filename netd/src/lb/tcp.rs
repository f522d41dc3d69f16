//! The TCP data path: accept on the frontend, pick a backend, connect
//! (trying the next eligible backend when a connection attempt fails, so
//! a backend that just died costs no client its request), optionally send
//! a PROXY v2 header, then relay both ways until both sides are done, the
//! flow is idle for the rule's idle timeout, or the rule goes away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::metrics::{Counters, OpenFlow};
use super::proxy_header::{self, Transport};
use super::select::Flow;
use super::RuleRuntime;

/// Longest wait for a backend's SYN-ACK before trying another backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Relay buffer per direction: large enough for bulk streams, small
/// enough for many thousands of idle connections.
const BUFFER: usize = 32 * 1024;

/// Accepts connections until the task is aborted.
pub async fn serve(rule: Arc<RuleRuntime>, listener: TcpListener, stop: watch::Receiver<bool>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let rule = rule.clone();
                let stop = stop.clone();
                tokio::spawn(async move { handle(rule, client, peer, stop).await });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, frontend = %rule.frontend, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(
    rule: Arc<RuleRuntime>,
    client: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let _ = client.set_nodelay(true);
    rule.counters.open();
    let _front = OpenFlow(&rule.counters);
    let pool = rule.pool();
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
            Ok(Ok(s)) => break (i, s),
            Ok(Err(e)) => {
                debug!(backend = %b.addr, error = %e, "connect failed; trying another backend")
            }
            Err(_) => debug!(backend = %b.addr, "connect timed out; trying another backend"),
        }
        b.counters.error();
        tried.push(i);
    };
    let backend = pool.members[index].clone();
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
        stop,
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
    client: TcpStream,
    backend: TcpStream,
    idle: Duration,
    front: &Counters,
    back: &Counters,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (mut cr, mut cw) = client.into_split();
    let (mut br, mut bw) = backend.into_split();
    let up = pump(&mut cr, &mut bw, &last, start, |n| {
        front.add_in(n);
        back.add_in(n);
    });
    let down = pump(&mut br, &mut cw, &last, start, |n| {
        front.add_out(n);
        back.add_out(n);
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
        r = async { tokio::try_join!(up, down) } => r.map(|_| ()),
        () = watchdog => Ok(()),
        _ = stop.wait_for(|s| *s) => Ok(()),
    }
}

async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    last: &AtomicU64,
    start: Instant,
    count: impl Fn(u64),
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on; the other direction may go on.
            let _ = w.shutdown().await;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        count(n as u64);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
