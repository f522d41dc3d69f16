//! Run, pause and stop for the vCPU threads.
//!
//! The main and API threads change the wanted [`RunState`]; each vCPU thread
//! looks at it before every KVM_RUN and parks while it is `Paused`. A vCPU
//! that sits inside KVM_RUN (a halted guest can stay there for a long time)
//! is kicked out with a real-time signal, as Firecracker and Cloud
//! Hypervisor do. The kick's handler also sets `kvm_run.immediate_exit` for
//! the thread it lands on: a kick that arrives after the state check but
//! before the thread enters KVM_RUN would otherwise be lost, and KVM_RUN
//! then returns EINTR at once instead of running the guest. The requester
//! waits until every live vCPU has acknowledged (parked), kicking again
//! every millisecond as a second line of defence.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_run;

/// What the vCPU threads should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Running the guest.
    Running,
    /// Parked outside KVM_RUN until resumed.
    Paused,
    /// Ending: leave the run loop.
    Stopping,
}

impl RunState {
    fn to_u8(self) -> u8 {
        match self {
            RunState::Running => 0,
            RunState::Paused => 1,
            RunState::Stopping => 2,
        }
    }

    fn from_u8(v: u8) -> RunState {
        match v {
            0 => RunState::Running,
            1 => RunState::Paused,
            _ => RunState::Stopping,
        }
    }
}

/// Why a pause did not complete.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// Some vCPU did not park in time.
    #[error("{parked} of {live} vCPUs parked within {timeout_ms} ms")]
    PauseTimeout {
        /// vCPUs parked.
        parked: usize,
        /// vCPUs still running their loop.
        live: usize,
        /// How long the request waited.
        timeout_ms: u128,
    },
    /// The VM is ending.
    #[error("the VM is stopping")]
    Stopping,
}

#[derive(Debug, Default)]
struct Threads {
    /// (vCPU index, kernel thread id, pthread) of every vCPU thread that
    /// still runs its loop.
    live: Vec<(u8, libc::pid_t, libc::pthread_t)>,
    /// How many of them are parked.
    parked: usize,
}

/// Shared by the vCPU threads and whoever controls them.
#[derive(Debug)]
pub struct VcpuControl {
    state: AtomicU8,
    threads: Mutex<Threads>,
    changed: Condvar,
    kick_signal: i32,
}

thread_local! {
    // The calling vCPU thread's kvm_run mapping, for the kick handler.
    // `const` initialisation and no destructor: safe to read in a handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick signal's handler: makes the interrupted (or next) KVM_RUN of
/// this thread return at once.
pub extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer was set by this very thread from its live
        // VcpuFd mapping and is cleared before that mapping goes away; a
        // volatile byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
    std::sync::atomic::fence(Ordering::Release);
}

/// Registration of one vCPU thread; unregisters on drop.
pub struct VcpuThreadGuard<'a> {
    control: &'a VcpuControl,
    id: u8,
}

impl Drop for VcpuThreadGuard<'_> {
    fn drop(&mut self) {
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
        let mut t = self.control.lock();
        t.live.retain(|(id, _, _)| *id != self.id);
        drop(t);
        self.control.changed.notify_all();
    }
}

fn gettid() -> libc::pid_t {
    // SAFETY: gettid(2) has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

impl VcpuControl {
    /// vCPUs run; `kick_signal` interrupts KVM_RUN.
    pub fn new(kick_signal: i32) -> VcpuControl {
        VcpuControl {
            state: AtomicU8::new(RunState::Running.to_u8()),
            threads: Mutex::new(Threads::default()),
            changed: Condvar::new(),
            kick_signal,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Threads> {
        // A vCPU thread that panicked while holding the lock leaves the
        // counters usable.
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The wanted state.
    pub fn state(&self) -> RunState {
        RunState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Called by a vCPU thread before its loop; `run` is its kvm_run
    /// mapping (kept alive by the caller until the guard is dropped).
    pub fn register(&self, id: u8, run: *mut kvm_run) -> VcpuThreadGuard<'_> {
        KVM_RUN.with(|c| c.set(run));
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.lock().live.push((id, gettid(), me));
        VcpuThreadGuard { control: self, id }
    }

    /// Kernel thread ids of the live vCPU threads, by vCPU index.
    pub fn thread_ids(&self) -> Vec<(u8, libc::pid_t)> {
        let mut v: Vec<_> = self
            .lock()
            .live
            .iter()
            .map(|(id, tid, _)| (*id, *tid))
            .collect();
        v.sort_unstable();
        v
    }

    /// Called by a vCPU thread before each KVM_RUN: parks while paused.
    /// Returns false when the thread must leave its loop.
    pub fn before_run(&self) -> bool {
        match self.state() {
            RunState::Running => true,
            RunState::Stopping => false,
            RunState::Paused => {
                let mut t = self.lock();
                t.parked += 1;
                self.changed.notify_all();
                while self.state() == RunState::Paused {
                    t = self.changed.wait(t).unwrap_or_else(|e| e.into_inner());
                }
                t.parked -= 1;
                self.state() == RunState::Running
            }
        }
    }

    fn kick_all(&self) {
        for (_, _, thread) in &self.lock().live {
            // SAFETY: the pthread is live: it is removed from `live` before
            // its thread ends, under the same lock held here.
            unsafe { libc::pthread_kill(*thread, self.kick_signal) };
        }
    }

    /// Parks every vCPU; returns when all have parked (or `timeout`).
    pub fn pause(&self, timeout: Duration) -> Result<(), ControlError> {
        let swapped = self.state.compare_exchange(
            RunState::Running.to_u8(),
            RunState::Paused.to_u8(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if let Err(now) = swapped {
            if RunState::from_u8(now) == RunState::Stopping {
                return Err(ControlError::Stopping);
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            {
                let t = self.lock();
                if t.parked >= t.live.len() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(ControlError::PauseTimeout {
                        parked: t.parked,
                        live: t.live.len(),
                        timeout_ms: timeout.as_millis(),
                    });
                }
            }
            self.kick_all();
            let t = self.lock();
            let _ = self
                .changed
                .wait_timeout(t, Duration::from_millis(1))
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) -> Result<(), ControlError> {
        let swapped = self.state.compare_exchange(
            RunState::Paused.to_u8(),
            RunState::Running.to_u8(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if swapped == Err(RunState::Stopping.to_u8()) {
            return Err(ControlError::Stopping);
        }
        let _t = self.lock();
        self.changed.notify_all();
        Ok(())
    }

    /// Asks every vCPU thread to leave its loop (wakes parked ones, kicks
    /// running ones) and waits up to `timeout` for them to go.
    pub fn stop(&self, timeout: Duration) -> bool {
        self.state
            .store(RunState::Stopping.to_u8(), Ordering::Release);
        let deadline = Instant::now() + timeout;
        loop {
            {
                let t = self.lock();
                self.changed.notify_all();
                if t.live.is_empty() {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.kick_all();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Threads standing in for vCPUs (no KVM): they loop on `before_run`.
    fn spawn_loops(c: &Arc<VcpuControl>, n: u8) -> Vec<std::thread::JoinHandle<u64>> {
        crate::signals::install_vcpu_kick_handler().unwrap();
        (0..n)
            .map(|id| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let _g = c.register(id, std::ptr::null_mut());
                    let mut turns = 0u64;
                    while c.before_run() {
                        turns += 1;
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    turns
                })
            })
            .collect()
    }

    #[test]
    fn pause_parks_every_thread_and_resume_and_stop_release_them() {
        let c = Arc::new(VcpuControl::new(crate::signals::vcpu_kick_signal()));
        let threads = spawn_loops(&c, 3);
        while c.thread_ids().len() < 3 {
            std::thread::yield_now();
        }
        c.pause(Duration::from_secs(5)).unwrap();
        assert_eq!(c.state(), RunState::Paused);
        // Pausing twice is fine.
        c.pause(Duration::from_secs(5)).unwrap();
        c.resume().unwrap();
        c.resume().unwrap();
        c.pause(Duration::from_secs(5)).unwrap();
        assert!(c.stop(Duration::from_secs(5)));
        assert_eq!(c.pause(Duration::from_secs(1)), Err(ControlError::Stopping));
        assert_eq!(c.resume(), Err(ControlError::Stopping));
        for t in threads {
            assert!(t.join().unwrap() > 0);
        }
        assert!(c.thread_ids().is_empty());
    }
}
