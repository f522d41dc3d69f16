//! Process signals: SIGTERM/SIGINT stop the VM cleanly; a real-time signal
//! kicks vCPU threads out of KVM_RUN.

use std::io;
use std::sync::mpsc::Sender;

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::vcpu::VmEvent;

/// The signal that interrupts a vCPU's KVM_RUN.
pub fn vcpu_kick_signal() -> i32 {
    SIGRTMIN()
}

/// Installs the kick signal's handler, so that it interrupts KVM_RUN
/// (EINTR, and `immediate_exit` for a KVM_RUN about to start; see
/// `vcpu_control`) instead of killing the process.
pub fn install_vcpu_kick_handler() -> io::Result<()> {
    register_signal_handler(vcpu_kick_signal(), crate::vcpu_control::kick_handler)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; SIGINT/SIGTERM are valid signals.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    set
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it
/// creates afterwards; [`spawn_signal_thread`] then receives them.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is initialised; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for SIGINT/SIGTERM on a small thread and reports them.
pub fn spawn_signal_thread(events: Sender<VmEvent>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let set = termination_set();
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised and `sig` is a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0
                && events.send(VmEvent::Signal(sig)).is_err()
            {
                return;
            }
        })?;
    Ok(())
}
