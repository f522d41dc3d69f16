//! The TCP data path's threads: one single-threaded tokio runtime per
//! core, HAProxy's threading model. Every thread accepts on each TCP
//! rule's listener; a connection lives and ends on the thread that
//! accepted it. Nothing on
//! the relay path wakes another thread or is stolen by one, which on a
//! multi-threaded work-stealing runtime cost a futex wake-up and a cache
//! miss per readiness event.
//!
//! The control plane (API, probes, UDP, metrics) stays on netd's main
//! runtime.

use std::thread;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tracing::warn;

/// Upper bound on data-path threads, whatever the core count.
const MAX_THREADS: usize = 64;

/// The data-path threads; they stop when this is dropped.
pub struct Workers {
    handles: Vec<Handle>,
    stop: Vec<oneshot::Sender<()>>,
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
        Workers { handles, stop }
    }

    /// Runtimes to spread a rule's listeners over: the data-path threads,
    /// or the current runtime when there are none. Must be called inside
    /// a tokio runtime.
    pub fn handles(&self) -> Vec<Handle> {
        if self.handles.is_empty() {
            vec![Handle::current()]
        } else {
            self.handles.clone()
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
    }
}
