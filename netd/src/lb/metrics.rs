//! Counters of the data path and their Prometheus text exposition
//! (`nimbus-netd --metrics-listen ADDR`, `GET /metrics`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::Balancer;

/// Connection and byte counters of a frontend (rule) or a backend.
///
/// Sharded by thread: every data-path thread updates its own cache line,
/// so that counting a relayed chunk does not bounce a line shared with the
/// other cores; readers add the shards up.
#[derive(Debug, Default)]
pub struct Counters {
    shards: [Shard; SHARDS],
}

/// Shards per counter set; threads beyond this share shards.
const SHARDS: usize = 8;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard {
    /// Opened minus closed on this shard: wraps below zero when a flow
    /// closes on another thread than it opened on; the sum is exact.
    active: AtomicU64,
    total: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: AtomicU64,
}

/// This thread's shard index.
fn shard() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// Open flows.
    pub active: u64,
    /// Flows ever opened.
    pub total: u64,
    /// Bytes from clients towards backends.
    pub bytes_in: u64,
    /// Bytes from backends towards clients.
    pub bytes_out: u64,
    /// Failed connection attempts, relay errors, flows without a backend.
    pub errors: u64,
}

impl Counters {
    fn mine(&self) -> &Shard {
        &self.shards[shard()]
    }

    fn sum(&self, field: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().fold(0u64, |acc, s| {
            acc.wrapping_add(field(s).load(Ordering::Relaxed))
        })
    }

    /// A flow opened.
    pub fn open(&self) {
        let s = self.mine();
        s.active.fetch_add(1, Ordering::Relaxed);
        s.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A flow closed.
    pub fn close(&self) {
        self.mine().active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open flows now. A reader racing a flow that opened on one shard
    /// and closed on another can see the sum below zero for a moment:
    /// that reads as none.
    pub fn active(&self) -> u64 {
        u64::try_from(self.sum(|s| &s.active) as i64).unwrap_or(0)
    }

    /// Bytes client -> backend.
    pub fn add_in(&self, n: u64) {
        self.mine().bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes backend -> client.
    pub fn add_out(&self, n: u64) {
        self.mine().bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// One error.
    pub fn error(&self) {
        self.mine().errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            active: self.active(),
            total: self.sum(|s| &s.total),
            bytes_in: self.sum(|s| &s.bytes_in),
            bytes_out: self.sum(|s| &s.bytes_out),
            errors: self.sum(|s| &s.errors),
        }
    }
}

/// Closes a flow on drop, so every exit path counts.
pub struct OpenFlow<'a>(pub &'a Counters);

impl Drop for OpenFlow<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One sample line per labelled value of a family.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, u64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: vec![],
        }
    }
}

/// Renders every counter in Prometheus's text format (version 0.0.4).
pub fn render(balancer: &Balancer) -> String {
    let mut fams = [
        Family::new(
            "nimbus_lb_frontend_connections_active",
            "gauge",
            "Open flows on a load-balancing rule's frontend.",
        ),
        Family::new(
            "nimbus_lb_frontend_connections_total",
            "counter",
            "Flows accepted on a rule's frontend.",
        ),
        Family::new(
            "nimbus_lb_frontend_bytes_total",
            "counter",
            "Bytes through a rule's frontend (direction in = from clients).",
        ),
        Family::new(
            "nimbus_lb_frontend_errors_total",
            "counter",
            "Flows of a rule that found no backend or failed.",
        ),
        Family::new(
            "nimbus_lb_backend_connections_active",
            "gauge",
            "Open flows to a backend.",
        ),
        Family::new(
            "nimbus_lb_backend_connections_total",
            "counter",
            "Flows sent to a backend.",
        ),
        Family::new(
            "nimbus_lb_backend_bytes_total",
            "counter",
            "Bytes to (in) and from (out) a backend.",
        ),
        Family::new(
            "nimbus_lb_backend_errors_total",
            "counter",
            "Failed connection attempts and relay errors of a backend.",
        ),
        Family::new(
            "nimbus_lb_backend_up",
            "gauge",
            "1 when the backend's health probe passes (or it has none).",
        ),
        Family::new(
            "nimbus_lb_backend_draining",
            "gauge",
            "1 while a removed backend finishes its open flows.",
        ),
        Family::new(
            "nimbus_lb_backend_passive_downs_total",
            "counter",
            "Times failed connection attempts in a row took a backend out before its probe did.",
        ),
    ];
    for rule in balancer.rules() {
        let fl = format!(
            "lb=\"{}\",rule=\"{}\",frontend=\"{}\",protocol=\"{}\"",
            escape(rule.lb.as_str()),
            escape(rule.rule.as_str()),
            rule.frontend,
            rule.settings.protocol
        );
        let s = rule.counters.snapshot();
        fams[0].samples.push((fl.clone(), s.active));
        fams[1].samples.push((fl.clone(), s.total));
        fams[2]
            .samples
            .push((format!("{fl},direction=\"in\""), s.bytes_in));
        fams[2]
            .samples
            .push((format!("{fl},direction=\"out\""), s.bytes_out));
        fams[3].samples.push((fl, s.errors));
        for b in rule.pool().members.iter() {
            let bl = format!(
                "lb=\"{}\",rule=\"{}\",backend=\"{}\",nic=\"{}\"",
                escape(rule.lb.as_str()),
                escape(rule.rule.as_str()),
                b.addr,
                escape(b.nic.as_str())
            );
            let s = b.counters.snapshot();
            fams[4].samples.push((bl.clone(), s.active));
            fams[5].samples.push((bl.clone(), s.total));
            fams[6]
                .samples
                .push((format!("{bl},direction=\"in\""), s.bytes_in));
            fams[6]
                .samples
                .push((format!("{bl},direction=\"out\""), s.bytes_out));
            fams[7].samples.push((bl.clone(), s.errors));
            fams[8]
                .samples
                .push((bl.clone(), u64::from(b.health.is_up())));
            fams[9]
                .samples
                .push((bl.clone(), u64::from(b.draining.load(Ordering::Relaxed))));
            fams[10].samples.push((bl, b.passive.downs()));
        }
    }
    let mut out = String::new();
    for f in &fams {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for (labels, v) in &f.samples {
            let _ = writeln!(out, "{}{{{labels}}} {v}", f.name);
        }
    }
    out
}

/// Serves `GET /metrics` (any path) on `addr` until the task is dropped.
pub async fn serve(listener: TcpListener, balancer: Arc<Balancer>) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "metrics endpoint ready");
    }
    loop {
        let (mut conn, _) = listener.accept().await?;
        let balancer = balancer.clone();
        tokio::spawn(async move {
            // Read the request head (bounded); the answer does not depend on it.
            let mut buf = vec![0u8; 4096];
            let mut have = 0;
            while have < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    conn.read(&mut buf[have..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => have += n,
                }
                if buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let body = render(&balancer);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if let Err(e) = conn.write_all(head.as_bytes()).await {
                warn!(error = %e, "metrics client");
                return;
            }
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_counters_add_up_across_threads() {
        let c = Arc::new(Counters::default());
        c.open();
        c.add_in(5);
        let other = c.clone();
        // A flow that opened here and closes on another thread.
        std::thread::spawn(move || {
            other.close();
            other.add_out(3);
            other.error();
        })
        .join()
        .unwrap();
        let want = Snapshot {
            active: 0,
            total: 1,
            bytes_in: 5,
            bytes_out: 3,
            errors: 1,
        };
        assert_eq!(c.snapshot(), want);
        // A close seen before its open reads as no flows, not 2^64 - 1.
        c.close();
        assert_eq!(c.active(), 0);
    }
}
