//! The TCP data path's threads: one single-threaded tokio runtime per
//! core, HAProxy's threading model. Every thread accepts on each TCP
//! rule's listener; a connection lives and ends on the thread that
//! accepted it. Nothing on
//! the relay path wakes another thread or is stolen by one, which on a
//! multi-threaded work-stealing runtime cost a futex wake-up and a cache
//! miss per readiness event.
//!
//! Since connections stay where they were accepted, who accepts decides
//! the balance: with long keep-alive connections, accept order alone left
//! one thread with 40 % more of them than the other in some runs, and that
//! thread's core became the bottleneck (measured with `scripts/bench/lb.sh`:
//! 25–28 k instead of 34–35 k requests/s, p99 5.7–6.9 ms instead of 3.9–4.1).
//! So every thread counts its open connections ([`Lane`]), and a thread
//! that holds clearly more than the lightest one lets the lighter one take
//! the next connection (see [`super::tcp::serve`]): HAProxy likewise hands
//! accepted connections to its least loaded thread.
//!
//! The control plane (API, probes, UDP, metrics) stays on netd's main
//! runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tracing::warn;

/// Upper bound on data-path threads, whatever the core count.
const MAX_THREADS: usize = 64;

/// One thread's count of open connections, alone on its cache line so
/// that the threads' updates do not contend.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Slot(AtomicUsize);

/// Open TCP connections per data-path thread.
#[derive(Debug)]
pub struct Loads(Box<[Slot]>);

impl Loads {
    fn new(threads: usize) -> Arc<Self> {
        Arc::new(Loads(
            (0..threads.max(1)).map(|_| Slot::default()).collect(),
        ))
    }
}

/// A data-path thread's place among the others: its index and everyone's
/// connection counts.
#[derive(Debug, Clone)]
pub struct Lane {
    index: usize,
    loads: Arc<Loads>,
}

impl Lane {
    /// A lane of its own (a single thread, as in tests).
    pub fn alone() -> Self {
        Lane {
            index: 0,
            loads: Loads::new(1),
        }
    }

    fn slot(&self) -> &AtomicUsize {
        &self.loads.0[self.index].0
    }

    /// A connection opened on this thread.
    pub fn opened(&self) {
        self.slot().fetch_add(1, Ordering::Relaxed);
    }

    /// A connection of this thread closed.
    pub fn closed(&self) {
        self.slot().fetch_sub(1, Ordering::Relaxed);
    }

    /// True when this thread holds clearly more connections than the
    /// lightest one: more than one, and 1/8, above it (so threads that
    /// are about even never wait on each other).
    pub fn is_heavy(&self) -> bool {
        let mine = self.slot().load(Ordering::Relaxed);
        let lightest = self
            .loads
            .0
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .min()
            .unwrap_or(mine);
        mine > lightest + 1 + lightest / 8
    }
}

/// The data-path threads; they stop when this is dropped.
pub struct Workers {
    handles: Vec<Handle>,
    stop: Vec<oneshot::Sender<()>>,
    loads: Arc<Loads>,
}

impl Workers {
    /// One thread per available core (HAProxy's default `nbthread`).
    pub fn per_core() -> Self {
        let n = thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .min(MAX_THREADS);
        Self::start(n)
    }

    /// `n` threads. Threads that cannot be started are left out; with none
    /// at all, [`Workers::handles`] falls back to the caller's runtime.
    pub fn start(n: usize) -> Self {
        let mut handles = Vec::with_capacity(n);
        let mut stop = Vec::with_capacity(n);
        for i in 0..n {
            let rt = match Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "starting a load-balancer runtime");
                    continue;
                }
            };
            let handle = rt.handle().clone();
            let (tx, rx) = oneshot::channel::<()>();
            let spawned = thread::Builder::new()
                .name(format!("nimbus-lb-{i}"))
                .spawn(move || {
                    // Runs the spawned tasks until the Workers are dropped;
                    // dropping the runtime then cancels what is left.
                    let _ = rt.block_on(rx);
                });
            match spawned {
                Ok(_) => {
                    handles.push(handle);
                    stop.push(tx);
                }
                Err(e) => warn!(error = %e, "starting a load-balancer thread"),
            }
        }
        let loads = Loads::new(handles.len());
        Workers {
            handles,
            stop,
            loads,
        }
    }

    /// Runtimes to spread a rule's listeners over, each with its lane:
    /// the data-path threads, or the current runtime when there are none.
    /// Must be called inside a tokio runtime.
    pub fn lanes(&self) -> Vec<(Handle, Lane)> {
        if self.handles.is_empty() {
            return vec![(Handle::current(), Lane::alone())];
        }
        self.handles
            .iter()
            .enumerate()
            .map(|(index, h)| {
                (
                    h.clone(),
                    Lane {
                        index,
                        loads: self.loads.clone(),
                    },
                )
            })
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_heavy_only_when_clearly_above_the_lightest() {
        let loads = Loads::new(2);
        let a = Lane {
            index: 0,
            loads: loads.clone(),
        };
        let b = Lane { index: 1, loads };
        assert!(!a.is_heavy() && !b.is_heavy());
        a.opened();
        assert!(!a.is_heavy(), "one more is even");
        a.opened();
        assert!(a.is_heavy() && !b.is_heavy());
        for _ in 0..40 {
            b.opened();
        }
        for _ in 0..40 {
            a.opened();
        }
        // 42 against 40: within 1 + 40/8.
        assert!(!a.is_heavy() && !b.is_heavy());
        for _ in 0..5 {
            a.opened();
        }
        assert!(a.is_heavy());
        for _ in 0..47 {
            a.closed();
        }
        assert!(b.is_heavy() && !a.is_heavy());
        assert!(!Lane::alone().is_heavy());
    }
}
