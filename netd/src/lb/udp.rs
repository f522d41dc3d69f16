//! The UDP data path: a session per client address (source IP and port),
//! with its own connected socket towards the backend chosen for the
//! session's first datagram. Replies go back from the frontend address.
//! A session ends after the rule's idle timeout without traffic either way.
//!
//! With `proxy_protocol`, every datagram to the backend starts with a
//! PROXY v2 header (command PROXY, transport DGRAM) naming the client and
//! the frontend, as the spec (section 2.2) has it for datagrams: there
//! is no connection to send it once on, and any datagram may be the
//! first the backend sees. The header is encoded once per session and
//! written into room kept in front of the received datagram, so adding
//! it copies no payload. Replies come back as they are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::metrics::OpenFlow;
use super::proxy_header::{self, Transport};
use super::select::{Backend, Flow};
use super::RuleRuntime;

/// Resolves once the rule is stopped (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// Room kept in front of every received datagram for a PROXY v2 header.
const HEADER_ROOM: usize = proxy_header::MAX_LEN;

struct Session {
    backend: Arc<Backend>,
    socket: Arc<UdpSocket>,
    /// The PROXY v2 header every datagram to the backend starts with.
    header: Option<Vec<u8>>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: AtomicU64,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<Session>>>>;

/// Relays datagrams until the task is aborted.
pub async fn serve(rule: Arc<RuleRuntime>, front: Arc<UdpSocket>, stop: watch::Receiver<bool>) {
    let sessions: Sessions = Arc::default();
    let epoch = Instant::now();
    let mut buf = vec![0u8; HEADER_ROOM + 65_536];
    loop {
        let (n, peer) = match front.recv_from(&mut buf[HEADER_ROOM..]).await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, frontend = %rule.frontend, "udp receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let existing = sessions.lock().ok().and_then(|m| m.get(&peer).cloned());
        let session = match existing {
            Some(s) => s,
            None => match open(&rule, &front, &sessions, peer, epoch, stop.clone()).await {
                Some(s) => s,
                None => {
                    rule.counters.error();
                    continue;
                }
            },
        };
        session
            .last
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let start = match &session.header {
            Some(h) => match HEADER_ROOM.checked_sub(h.len()) {
                Some(start) => {
                    buf[start..HEADER_ROOM].copy_from_slice(h);
                    start
                }
                // Never: `encode` makes at most `MAX_LEN` bytes.
                None => HEADER_ROOM,
            },
            None => HEADER_ROOM,
        };
        match session.socket.send(&buf[start..HEADER_ROOM + n]).await {
            Ok(_) => {
                rule.counters.add_in(n as u64);
                session.backend.counters.add_in(n as u64);
            }
            Err(e) => {
                debug!(backend = %session.backend.addr, error = %e, "udp send failed");
                session.backend.counters.error();
            }
        }
    }
}

async fn open(
    rule: &Arc<RuleRuntime>,
    front: &Arc<UdpSocket>,
    sessions: &Sessions,
    peer: SocketAddr,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
) -> Option<Arc<Session>> {
    let pool = rule.pool();
    let flow = Flow {
        src: peer,
        dst: rule.frontend.into(),
        proto: 17,
    };
    let i = pool.pick(rule.settings.algorithm, &flow, &[])?;
    let backend = pool.members[i].clone();
    let socket = match UdpSocket::bind("0.0.0.0:0").await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "udp session socket");
            return None;
        }
    };
    if let Err(e) = socket.connect(backend.addr).await {
        debug!(backend = %backend.addr, error = %e, "udp connect");
        backend.counters.error();
        return None;
    }
    let header = rule
        .settings
        .proxy_protocol
        .then(|| proxy_header::encode(peer, rule.frontend.into(), Transport::Datagram));
    let session = Arc::new(Session {
        backend: backend.clone(),
        socket: Arc::new(socket),
        header,
        last: AtomicU64::new(epoch.elapsed().as_millis() as u64),
    });
    if let Ok(mut m) = sessions.lock() {
        m.insert(peer, session.clone());
    }
    rule.counters.open();
    backend.counters.open();
    let (rule, front, sessions, s) = (
        rule.clone(),
        front.clone(),
        sessions.clone(),
        session.clone(),
    );
    tokio::spawn(async move {
        let _front_flow = OpenFlow(&rule.counters);
        let _back_flow = OpenFlow(&s.backend.counters);
        let idle = rule.settings.idle_timeout;
        let mut buf = vec![0u8; 65_536];
        loop {
            let quiet = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(s.last.load(Ordering::Relaxed)));
            if quiet >= idle {
                break;
            }
            tokio::select! {
                r = s.socket.recv(&mut buf) => match r {
                    Ok(n) => {
                        s.last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        if front.send_to(&buf[..n], peer).await.is_ok() {
                            rule.counters.add_out(n as u64);
                            s.backend.counters.add_out(n as u64);
                        }
                    }
                    // ICMP port unreachable from the backend, for one.
                    Err(_) => s.backend.counters.error(),
                },
                () = tokio::time::sleep(idle - quiet) => {}
                () = stopped(&mut stop) => break,
            }
        }
        if let Ok(mut m) = sessions.lock() {
            if m.get(&peer).is_some_and(|x| Arc::ptr_eq(x, &s)) {
                m.remove(&peer);
            }
        }
    });
    Some(session)
}
