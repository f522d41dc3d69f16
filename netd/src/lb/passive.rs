//! Passive health checking, HAProxy's `observe layer4` with
//! `on-error mark-down`: the TCP data path's own connection attempts
//! count as checks. When as many attempts in a row as the probe's
//! unhealthy threshold fail (refused, reset, or no SYN-ACK within the
//! connect timeout), the backend leaves the rotation at once instead of
//! after interval × threshold of failed probes; the client's connection
//! itself is not lost, it is retried on another backend ([`super::tcp`]).
//! The probe brings the backend back, as after a probe-driven removal.
//!
//! Choices:
//!
//! * It is a setting of the probe (`passive`, on by default), not of the
//!   rule: it acts on the probe's verdict ([`Health`]), which the rules
//!   using the probe share, and only a probe can bring a backend back, so
//!   rules without a probe have none. The threshold is the probe's
//!   unhealthy threshold, as a user reads "N failures take it out".
//! * Failures are counted per backend of a rule (its address and port),
//!   across all data-path threads, and only within one spell in rotation:
//!   a success ends the run, and failures from before the backend last
//!   left or returned do not count (the health's generation).
//! * TCP only: a UDP "connection" to a backend cannot fail to open.
//! * The per-connection cost is one relaxed atomic load on success (a
//!   store only right after failures); failures take a compare-and-swap,
//!   and the lock of [`Health`] is only taken to take the backend out.

use std::fmt;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::info;

use super::probe::Health;

/// One backend's run of failed connection attempts.
#[derive(Debug, Default)]
pub struct Passive {
    /// Failures in a row that take the backend out; None: off.
    threshold: Option<u32>,
    /// The health's generation the run started in (high half) and its
    /// length (low half), in one word so that both change together.
    run: AtomicU64,
    /// Times this took the backend out.
    downs: AtomicU64,
}

impl Passive {
    /// Passive checking after `threshold` failures in a row (None: off).
    pub fn new(threshold: Option<u32>) -> Self {
        Passive {
            threshold: threshold.filter(|t| *t > 0),
            ..Passive::default()
        }
    }

    /// True when passive checking is on.
    pub fn is_on(&self) -> bool {
        self.threshold.is_some()
    }

    /// Times passive checking took the backend out.
    pub fn downs(&self) -> u64 {
        self.downs.load(Ordering::Relaxed)
    }

    /// A connection attempt succeeded: the run ends.
    #[inline]
    pub fn connected(&self) {
        if self.run.load(Ordering::Relaxed) as u32 != 0 {
            self.run.store(0, Ordering::Relaxed);
        }
    }

    /// A connection attempt to `backend` failed with `error`. Takes the
    /// backend out of rotation when that makes `threshold` failures in a
    /// row since its health last changed; true when it did.
    pub fn failed(&self, health: &Health, backend: SocketAddrV4, error: &dyn fmt::Display) -> bool {
        let Some(threshold) = self.threshold else {
            return false;
        };
        let generation = health.generation();
        let next = |run: u64| {
            let n = if (run >> 32) as u32 == generation {
                (run as u32).saturating_add(1)
            } else {
                1
            };
            (u64::from(generation) << 32) | u64::from(n)
        };
        let before = match self
            .run
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| Some(next(r)))
        {
            Ok(r) | Err(r) => r,
        };
        let n = next(before) as u32;
        if n < threshold || !health.is_up() {
            return false;
        }
        let reason = format!("passive: {n} connect failures in a row to {backend} ({error})");
        if !health.mark_down(reason) {
            return false;
        }
        self.downs.fetch_add(1, Ordering::Relaxed);
        info!(%backend, error = %error, failures = n, "passive check: backend out of rotation until its probe passes");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddrV4 {
        "10.0.1.6:80".parse().unwrap()
    }

    fn reason(h: &Health) -> String {
        h.view()["reason"].as_str().unwrap_or_default().to_string()
    }

    #[test]
    fn threshold_failures_in_a_row_take_the_backend_out() {
        let h = Health::probed();
        let p = Passive::new(Some(3));
        assert!(!p.failed(&h, addr(), &"connection refused"));
        assert!(!p.failed(&h, addr(), &"connection refused"));
        // A success ends the run.
        p.connected();
        assert!(!p.failed(&h, addr(), &"connection refused"));
        assert!(!p.failed(&h, addr(), &"connection refused"));
        assert!(h.is_up());
        assert!(p.failed(&h, addr(), &"connection refused"));
        assert!(!h.is_up());
        assert_eq!(p.downs(), 1);
        assert_eq!(
            reason(&h),
            "passive: 3 connect failures in a row to 10.0.1.6:80 (connection refused)"
        );
        assert_eq!(h.view()["state"], "Down");
        // Further failures (flows that picked it just before) change nothing.
        assert!(!p.failed(&h, addr(), &"connection refused"));
        assert_eq!(p.downs(), 1);
    }

    #[test]
    fn a_run_from_before_the_backend_left_or_returned_does_not_count() {
        let h = Health::probed();
        let p = Passive::new(Some(3));
        assert!(!p.failed(&h, addr(), &"refused"));
        assert!(!p.failed(&h, addr(), &"refused"));
        // Its probe takes it out, then brings it back.
        h.record(Err("connect: refused".into()), 1, "test");
        assert_eq!(reason(&h), "probe: 1 failures in a row (connect: refused)");
        h.record(Ok(()), 1, "test");
        assert!(h.is_up());
        assert_eq!(h.view()["reason"], serde_json::Value::Null);
        // Three new failures, not one, take it out again.
        assert!(!p.failed(&h, addr(), &"refused"));
        assert!(!p.failed(&h, addr(), &"refused"));
        assert!(p.failed(&h, addr(), &"refused"));
        assert!(!h.is_up());
    }

    #[test]
    fn off_or_without_a_probe_it_never_takes_a_backend_out() {
        let h = Health::probed();
        let p = Passive::new(None);
        for _ in 0..10 {
            assert!(!p.failed(&h, addr(), &"refused"));
        }
        assert!(h.is_up() && !p.is_on());
        assert!(!Passive::new(Some(0)).is_on());
        // No probe: nothing would bring it back, so it stays.
        let h = Health::up();
        let p = Passive::new(Some(1));
        assert!(!p.failed(&h, addr(), &"refused"));
        assert!(h.is_up());
        assert_eq!(h.view()["state"], "Unprobed");
    }

    #[test]
    fn failures_from_many_threads_add_up() {
        let h = std::sync::Arc::new(Health::probed());
        let p = std::sync::Arc::new(Passive::new(Some(8)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (h, p) = (h.clone(), p.clone());
                std::thread::spawn(move || {
                    (0..2)
                        .filter(|_| p.failed(&h, addr(), &"timed out"))
                        .count()
                })
            })
            .collect();
        let downs: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(downs, 1);
        assert!(!h.is_up());
    }
}
