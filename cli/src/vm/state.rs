//! A VM's state, derived from the state directory and the live process
//! table only (never remembered), so it is right after a CLI crash too.
//!
//! | run.json | process | exit.json (same pid) | state |
//! | --- | --- | --- | --- |
//! | none | - | - | stopped (never started) |
//! | pid + start time | alive | - | running or paused (asked over the API) |
//! | pid + start time | gone | clean outcome | stopped |
//! | pid + start time | gone | failed outcome | failed |
//! | pid + start time | gone | none, or another pid's | failed (killed or crashed) |

use serde::Serialize;
use vmm::exit_record::ExitRecord;

use super::store::RunRecord;

/// What a VM is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// The VMM runs the guest.
    Running,
    /// The VMM runs, its vCPUs are parked.
    Paused,
    /// No VMM; the last one ended cleanly (or there was none).
    Stopped,
    /// No VMM; the last one failed, crashed or was killed from outside.
    Failed,
}

impl VmState {
    /// Whether a VMM process exists.
    #[allow(dead_code)] // library API (topology engine)
    pub fn is_active(self) -> bool {
        matches!(self, VmState::Running | VmState::Paused)
    }

    /// The word for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
        }
    }
}

/// The state and, when not running, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    /// The state (`Running` stands for running-or-paused: the API says which).
    pub state: VmState,
    /// Why it is stopped or failed.
    pub reason: Option<String>,
}

/// Derives the state from what is on disk and whether the recorded VMM
/// process is alive (same pid and start time, not a zombie).
pub fn derive(run: Option<&RunRecord>, alive: bool, exit: Option<&ExitRecord>) -> Derived {
    let Some(run) = run else {
        return Derived {
            state: VmState::Stopped,
            reason: Some("never started".into()),
        };
    };
    if alive {
        return Derived {
            state: VmState::Running,
            reason: None,
        };
    }
    match exit.filter(|e| e.pid == run.pid) {
        Some(e) => Derived {
            state: if e.outcome.is_clean() {
                VmState::Stopped
            } else {
                VmState::Failed
            },
            reason: Some(if e.detail.is_empty() {
                e.reason.clone()
            } else {
                format!("{} ({})", e.reason, e.detail)
            }),
        },
        None => Derived {
            state: VmState::Failed,
            reason: Some(format!(
                "nimbus-vmm (pid {}) ended without an exit record: killed or crashed",
                run.pid
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm::exit_record::Outcome;

    fn run(pid: u32) -> RunRecord {
        RunRecord {
            pid,
            start_time: 1,
            started_at_unix_s: 0.0,
        }
    }

    fn exit(pid: u32, outcome: Outcome) -> ExitRecord {
        ExitRecord {
            pid,
            exit_code: Some(0),
            outcome,
            reason: "guest powered off".into(),
            detail: "vCPU 0: port 0x604".into(),
            uptime_s: 1.0,
            ended_at_unix_s: 0.0,
        }
    }

    #[test]
    fn failed_versus_stopped() {
        assert_eq!(derive(None, false, None).state, VmState::Stopped);
        assert_eq!(derive(Some(&run(5)), true, None).state, VmState::Running);
        // Alive wins over a stale record.
        let stale = exit(5, Outcome::PoweredOff);
        assert_eq!(
            derive(Some(&run(5)), true, Some(&stale)).state,
            VmState::Running
        );
        let d = derive(Some(&run(5)), false, Some(&stale));
        assert_eq!(d.state, VmState::Stopped);
        assert!(d.reason.unwrap().contains("port 0x604"));
        for clean in [Outcome::Reboot, Outcome::Stopped, Outcome::Killed] {
            let e = exit(5, clean);
            assert_eq!(
                derive(Some(&run(5)), false, Some(&e)).state,
                VmState::Stopped
            );
        }
        let e = exit(5, Outcome::Failed);
        assert_eq!(
            derive(Some(&run(5)), false, Some(&e)).state,
            VmState::Failed
        );
        // Gone without a record: SIGKILL from outside, a crash.
        let d = derive(Some(&run(5)), false, None);
        assert_eq!(d.state, VmState::Failed);
        assert!(d.reason.unwrap().contains("without an exit record"));
        // A record of an earlier run (another pid) does not count.
        let old = exit(4, Outcome::PoweredOff);
        assert_eq!(
            derive(Some(&run(5)), false, Some(&old)).state,
            VmState::Failed
        );
    }
}
