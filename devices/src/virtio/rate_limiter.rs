//! Token buckets that cap a device's throughput (bytes/s) and operations/s,
//! so that disk or NIC tiers can be expressed as IOPS and bandwidth caps.

use std::time::{Duration, Instant};

/// One bucket: `rate` tokens per second, holding at most one second's worth.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` tokens per second.
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.rate as f64);
    }

    /// Takes `n` tokens (the balance may go negative: a request larger than
    /// the bucket still passes, and the debt is paid by waiting) and returns
    /// how long to wait before the next operation.
    pub fn consume(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 || self.rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate as f64)
        }
    }
}

/// Limits in bytes per second and operations per second; `None` is
/// unlimited.
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    bytes: Option<TokenBucket>,
    ops: Option<TokenBucket>,
}

impl RateLimiter {
    /// A limiter with the given caps (zero or `None` = no cap).
    pub fn new(bytes_per_s: Option<u64>, ops_per_s: Option<u64>) -> Self {
        Self {
            bytes: bytes_per_s.filter(|r| *r > 0).map(TokenBucket::new),
            ops: ops_per_s.filter(|r| *r > 0).map(TokenBucket::new),
        }
    }

    /// Whether any cap is set.
    pub fn is_limited(&self) -> bool {
        self.bytes.is_some() || self.ops.is_some()
    }

    /// Accounts one operation of `bytes` bytes; returns how long the device
    /// should wait before the next one.
    pub fn consume(&mut self, bytes: u64) -> Duration {
        let now = Instant::now();
        let a = self
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |b| b.consume(bytes, now));
        let b = self
            .ops
            .as_mut()
            .map_or(Duration::ZERO, |b| b.consume(1, now));
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_throttles() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100);
        assert_eq!(b.consume(100, t0), Duration::ZERO);
        let wait = b.consume(50, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        // After a second the debt is paid and 50 tokens are back.
        assert_eq!(b.consume(50, t0 + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn unlimited_never_waits() {
        let mut r = RateLimiter::new(None, Some(0));
        assert!(!r.is_limited());
        assert_eq!(r.consume(u64::MAX), Duration::ZERO);
    }

    #[test]
    fn ops_cap_applies() {
        let mut r = RateLimiter::new(None, Some(10));
        for _ in 0..10 {
            r.consume(4096);
        }
        assert!(r.consume(4096) > Duration::from_millis(50));
    }
}
