//! Health probes: one task per (load balancer, probe, backend address).
//! A backend leaves the rotation after `unhealthy_threshold` failed probes
//! in a row (so after about interval × threshold) and returns after one
//! that passes; passive checking ([`super::passive`]) may take it out
//! sooner, and the probe brings it back the same way. Probes come from
//! the host, so their source is the subnet's gateway address: what the
//! `AzureLoadBalancer` tag allows.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

use crate::model::{Probe, ProbeCheck};

/// Longest a single probe may take.
const MAX_PROBE_TIME: Duration = Duration::from_secs(2);

/// A backend's health as its probe (and passive checking, see
/// [`super::passive`]) sees it.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    probed: bool,
    failures: AtomicU32,
    /// Bumped on every change of `up`, so that passive checking counts
    /// failures in a row within one spell in rotation.
    generation: AtomicU32,
    last: Mutex<String>,
    /// Why the backend is out of rotation (empty while it is in). Every
    /// change of `up` happens under this lock, so the two agree; the data
    /// path only ever reads `up`.
    reason: Mutex<String>,
}

impl Health {
    /// Always up: backends of rules without a probe.
    pub fn up() -> Self {
        Health {
            up: AtomicBool::new(true),
            probed: false,
            failures: AtomicU32::new(0),
            generation: AtomicU32::new(0),
            last: Mutex::new(String::new()),
            reason: Mutex::new(String::new()),
        }
    }

    /// Up until proven otherwise (Azure and HAProxy start backends up too,
    /// so a new pool serves at once); the first probe runs immediately.
    pub fn probed() -> Self {
        Health {
            probed: true,
            ..Health::up()
        }
    }

    /// Down until its first probe passes: a backend that joins a pool
    /// already in service (a new scale-set instance still booting) gets no
    /// flow before it answers, as in Azure, where a new instance enters
    /// the rotation once its probe succeeds.
    pub fn pending() -> Self {
        let h = Health::probed();
        let why = "joined a pool in service: waiting for the first probe to pass";
        h.set(false, why.into());
        if let Ok(mut last) = h.last.lock() {
            *last = why.into();
        }
        h
    }

    /// True when new flows may go there.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Changes of `up` so far.
    pub fn generation(&self) -> u32 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Puts the backend in rotation or takes it out, with the reason;
    /// true when that changed it.
    fn set(&self, up: bool, reason: String) -> bool {
        let mut why = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if self.up.swap(up, Ordering::Relaxed) == up {
            return false;
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        *why = if up { String::new() } else { reason };
        true
    }

    /// Takes a probed backend out of rotation on passive evidence; its
    /// probe puts it back once it passes. True when it was in rotation.
    /// A backend without a probe stays: nothing would bring it back.
    pub fn mark_down(&self, reason: String) -> bool {
        self.probed && self.set(false, reason)
    }

    /// For `lb show`: state, why it is down, probe failures in a row and
    /// the last probe result.
    pub fn view(&self) -> serde_json::Value {
        let last = self.last.lock().map(|s| s.clone()).unwrap_or_default();
        let reason = self.reason.lock().map(|s| s.clone()).unwrap_or_default();
        serde_json::json!({
            "state": match (self.probed, self.is_up()) {
                (false, _) => "Unprobed",
                (true, true) => "Up",
                (true, false) => "Down",
            },
            "reason": if reason.is_empty() { None } else { Some(reason) },
            "failures_in_a_row": self.failures.load(Ordering::Relaxed),
            "last_result": if last.is_empty() { None } else { Some(last) },
        })
    }

    /// Takes one probe result.
    pub(super) fn record(&self, result: Result<(), String>, threshold: u32, who: &str) {
        let text = match &result {
            Ok(()) => "ok".to_string(),
            Err(e) => e.clone(),
        };
        if let Ok(mut last) = self.last.lock() {
            *last = text;
        }
        match result {
            Ok(()) => {
                self.failures.store(0, Ordering::Relaxed);
                if self.set(true, String::new()) {
                    info!(backend = who, "probe passes: backend back in rotation");
                }
            }
            Err(e) => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= threshold && self.set(false, format!("probe: {n} failures in a row ({e})"))
                {
                    info!(backend = who, error = %e, failures = n, "probe fails: backend out of rotation");
                }
            }
        }
    }
}

/// One probe attempt.
pub async fn check(probe: &Probe, addr: SocketAddrV4) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(probe.interval_seconds)).min(MAX_PROBE_TIME);
    let attempt = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let ProbeCheck::Http {
            path,
            expected_status,
        } = &probe.check
        else {
            return Ok(());
        };
        let req = format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: nimbus-lb-probe\r\nConnection: close\r\n\r\n",
            addr.ip()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 64];
        let mut have = 0;
        while have < 12 {
            let n = s
                .read(&mut buf[have..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            have += n;
        }
        let line = String::from_utf8_lossy(&buf[..have]);
        let status: Option<u16> = line
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|s| s.parse().ok());
        match status {
            Some(s) if s == *expected_status => Ok(()),
            Some(s) => Err(format!("HTTP status {s}, expected {expected_status}")),
            None => Err("not an HTTP response".into()),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Probes `addr` forever (the caller aborts the task).
pub async fn run(probe: Probe, addr: SocketAddrV4, health: Arc<Health>) {
    let interval = Duration::from_secs(u64::from(probe.interval_seconds));
    let who = format!("{addr}");
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = check(&probe, addr).await;
        health.record(r, probe.unhealthy_threshold, &who);
    }
}
