//! The exit record: one small JSON file (`--exit-file PATH`) that says how
//! a VMM ended, written on every normal exit path, so that a supervisor can
//! tell "the guest powered off" from "the VMM was killed" (a killed VMM
//! leaves no record, or only the one its killer wrote).
//!
//! ```json
//! {"pid":4242,"exit_code":0,"outcome":"powered_off","reason":"guest powered off",
//!  "detail":"vCPU 0: port 0x604","uptime_s":61.2,"ended_at_unix_s":1795000000.5}
//! ```
//!
//! Written atomically (temporary file in the same directory, fsync,
//! rename), so a reader sees the whole record or none.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::exit::ExitReason;

/// How a VMM run ended, in one word a supervisor can switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The guest powered itself off (exit code 0).
    PoweredOff,
    /// The guest asked for a reboot (exit code 3).
    Reboot,
    /// Stopped on request: SIGTERM/SIGINT or the console's quit key.
    Stopped,
    /// Killed by a supervisor (written by that supervisor, not the VMM).
    Killed,
    /// Anything else: VMM failure, invalid configuration, triple fault,
    /// KVM internal or emulation error.
    Failed,
}

impl Outcome {
    /// The outcome of a VMM that ended for `reason`; `stop_requested` when
    /// it was told to stop (a signal, the console's quit key).
    pub fn of(reason: ExitReason, stop_requested: bool) -> Outcome {
        match reason {
            ExitReason::PoweredOff => Outcome::PoweredOff,
            ExitReason::GuestReboot => Outcome::Reboot,
            ExitReason::VmmFailure if stop_requested => Outcome::Stopped,
            _ => Outcome::Failed,
        }
    }

    /// Whether the VM ended the way someone wanted (not a failure).
    pub fn is_clean(self) -> bool {
        !matches!(self, Outcome::Failed)
    }
}

/// The record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The VMM's process id (a supervisor matches it against the pid it
    /// started, so a stale record of an earlier run is not mistaken).
    pub pid: u32,
    /// The process exit code (`None` when killed by a signal).
    pub exit_code: Option<i32>,
    /// One word.
    pub outcome: Outcome,
    /// The exit reason in words.
    pub reason: String,
    /// Details (which vCPU, port, instruction, signal).
    pub detail: String,
    /// Seconds the VM ran.
    pub uptime_s: f64,
    /// When it ended (seconds since the Unix epoch).
    pub ended_at_unix_s: f64,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl ExitRecord {
    /// Writes the record to `path` atomically (temp + fsync + rename).
    pub fn write_atomic(&self, path: &Path) -> io::Result<()> {
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        write_atomic(path, &text)
    }

    /// Reads a record; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> io::Result<Option<ExitRecord>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a part: a temporary file next to it, fsync, rename, fsync of the
/// directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_outcomes() {
        let dir = std::env::temp_dir().join(format!(
            "nimbus-exit-{}-{}",
            std::process::id(),
            unix_now_s()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("exit.json");
        assert_eq!(ExitRecord::read(&path).unwrap(), None);
        let r = ExitRecord {
            pid: 7,
            exit_code: Some(0),
            outcome: Outcome::PoweredOff,
            reason: "guest powered off".into(),
            detail: "vCPU 0: port 0x604".into(),
            uptime_s: 1.5,
            // Exactly representable: serde_json's default float parsing
            // may be one ULP off for arbitrary values.
            ended_at_unix_s: 1_795_000_000.5,
        };
        r.write_atomic(&path).unwrap();
        assert_eq!(ExitRecord::read(&path).unwrap(), Some(r));
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        std::fs::write(&path, b"{garbage").unwrap();
        assert!(ExitRecord::read(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(Outcome::of(ExitReason::VmmFailure, true), Outcome::Stopped);
        assert_eq!(Outcome::of(ExitReason::VmmFailure, false), Outcome::Failed);
        assert_eq!(Outcome::of(ExitReason::TripleFault, true), Outcome::Failed);
        assert!(Outcome::Killed.is_clean());
        assert!(!Outcome::Failed.is_clean());
    }
}
