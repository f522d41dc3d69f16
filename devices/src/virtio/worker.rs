//! A device's queue-processing thread and how it is stopped.

use std::io;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

/// A running device thread. Dropping it stops the thread and waits for it.
pub(crate) struct Worker {
    kill: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Spawns `body`, which gets an eventfd that becomes readable when the
    /// thread must end (it should poll it with its other fds).
    pub(crate) fn spawn<F>(name: String, body: F) -> io::Result<Self>
    where
        F: FnOnce(EventFd) + Send + 'static,
    {
        let kill = EventFd::new(libc::EFD_NONBLOCK)?;
        let theirs = kill.try_clone()?;
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || body(theirs))?;
        Ok(Self {
            kill,
            handle: Some(handle),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.kill.write(1);
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("a virtio device thread panicked");
            }
        }
    }
}
