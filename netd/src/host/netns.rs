//! Running link configuration inside another network namespace: a
//! dedicated thread enters the namespace (setns affects only the calling
//! thread) and runs a small tokio runtime with its own rtnetlink socket.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::error::NetError;

/// Path of a named namespace (as `ip netns add` creates them).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Opens the named namespace.
pub fn open(name: &str) -> Result<File, NetError> {
    File::open(path(name))
        .map_err(|e| NetError::host(format!("opening network namespace {name}"), e))
}

/// Runs `job` inside namespace `name` and waits for its result.
pub async fn run_in<F, Fut, T>(name: &str, job: F) -> Result<T, NetError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
    T: Send + 'static,
{
    let ns = open(name)?;
    let label = name.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            // SAFETY: `ns` is an open namespace file; setns only changes
            // this thread's network namespace, and this thread ends when
            // the job is done.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NetError::host(
                    format!("entering network namespace {label}"),
                    std::io::Error::last_os_error(),
                ));
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| NetError::host("starting a runtime", e))?;
            rt.block_on(job())
        })();
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| {
        NetError::host(
            format!("configuring namespace {name}"),
            "the worker thread died",
        )
    })?
}
