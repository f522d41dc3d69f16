//! One line per finished action, with the time since the command started,
//! written whole even when several threads finish at once.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// Progress printer shared by the worker threads.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    out: Mutex<()>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            started: Instant::now(),
            out: Mutex::new(()),
        }
    }
}

impl Progress {
    /// Prints `[  1.23s] text`.
    pub fn line(&self, text: impl AsRef<str>) {
        let _guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "[{:>6.2}s] {}",
            self.started.elapsed().as_secs_f64(),
            text.as_ref()
        );
        let _ = out.flush();
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
