//! The API socket's wire format: JSON lines.
//!
//! Each request is one JSON object on one line (at most [`MAX_LINE`]
//! bytes); each gets exactly one JSON line back. Requests:
//!
//! | request | answer |
//! | --- | --- |
//! | `{"op":"status"}` | `{"ok":true,"status":{...}}` (see [`VmStatus`]) |
//! | `{"op":"pause"}` | `{"ok":true,"state":"paused"}` once every vCPU is parked |
//! | `{"op":"resume"}` | `{"ok":true,"state":"running"}` |
//! | `{"op":"shutdown"}` | `{"ok":true,"state":"running"}` once the power-off request is on the guest's serial input (the VMM exits when the guest has powered off) |
//!
//! Anything else (not UTF-8, not JSON, an unknown op or field, a line that
//! is too long) gets `{"ok":false,"error":"..."}` and the connection stays
//! usable. Pausing a paused VM and resuming a running one are not errors.

use serde::{Deserialize, Serialize};

/// Longest request line accepted (bytes, newline excluded).
pub const MAX_LINE: usize = 4096;

/// The line the VMM puts on the guest's serial input to ask for a graceful
/// power-off. The guest agent (guest-images/agent/src/console_commands.rs)
/// watches its console for exactly this line, syncs and powers off.
pub const SHUTDOWN_LINE: &str = "NIMBUS_POWEROFF";

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// State, uptime, sizes and CPU times.
    Status,
    /// Park every vCPU.
    Pause,
    /// Let them run again.
    Resume,
    /// Ask the guest to power off (serial protocol; resumes a paused VM).
    Shutdown,
}

/// Whether the vCPUs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunningState {
    /// vCPUs run the guest.
    Running,
    /// vCPUs are parked.
    Paused,
}

/// CPU time of one vCPU thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuTime {
    /// vCPU index.
    pub id: u8,
    /// Seconds of CPU its thread used so far.
    pub cpu_s: f64,
}

/// The answer to `status`. A caller computes average vCPU utilization from
/// two samples: Δ(sum of `vcpu_cpu[].cpu_s`) / Δ`uptime_s` / `vcpus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    /// The VMM's process id.
    pub pid: u32,
    /// Running or paused.
    pub state: RunningState,
    /// Seconds since the VMM started the VM.
    pub uptime_s: f64,
    /// vCPUs configured.
    pub vcpus: u8,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// CPU seconds used by the whole VMM process.
    pub process_cpu_s: f64,
    /// CPU seconds per vCPU thread (threads that ended are left out).
    pub vcpu_cpu: Vec<VcpuTime>,
    /// Whether a console client is attached.
    pub console_attached: bool,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The state after the request (pause/resume/shutdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunningState>,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VmStatus>,
}

impl Response {
    /// A refusal.
    pub fn error(why: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(why.into()),
            ..Response::default()
        }
    }

    /// Success, reporting the run state.
    pub fn state(state: RunningState) -> Response {
        Response {
            ok: true,
            state: Some(state),
            ..Response::default()
        }
    }

    /// The line to send (newline included).
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"unencodable answer"}"#.into());
        s.push('\n');
        s
    }
}

/// Parses one request line (without its newline). The error says what is
/// wrong, for the client.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_LINE {
        return Err(format!(
            "request of {} bytes: longer than {MAX_LINE}",
            line.len()
        ));
    }
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "empty request; expected {\"op\":\"status\"} or pause, resume, shutdown".into(),
        );
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("bad request: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("bad request: expected a JSON object such as {\"op\":\"status\"}".into());
    };
    // serde ignores extra fields next to the tag of a unit variant.
    if let Some(extra) = object.keys().find(|k| *k != "op") {
        return Err(format!("bad request: unknown field `{extra}`"));
    }
    serde_json::from_value(value).map_err(|e| format!("bad request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_op() {
        assert_eq!(parse_request(br#"{"op":"status"}"#), Ok(Request::Status));
        assert_eq!(
            parse_request(b" {\"op\": \"pause\"} \r"),
            Ok(Request::Pause)
        );
        assert_eq!(parse_request(br#"{"op":"resume"}"#), Ok(Request::Resume));
        assert_eq!(
            parse_request(br#"{"op":"shutdown"}"#),
            Ok(Request::Shutdown)
        );
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        let long = vec![b'x'; MAX_LINE + 1];
        let cases: [(&[u8], &str); 9] = [
            (b"", "empty request"),
            (b"   ", "empty request"),
            (b"\xff\xfe\x00", "not UTF-8"),
            (b"{", "bad request"),
            (b"null", "bad request"),
            (b"[1,2]", "bad request"),
            (br#"{"op":"reboot"}"#, "unknown variant"),
            (br#"{"op":"status","x":1}"#, "unknown field"),
            (&long, "longer than"),
        ];
        for (input, want) in cases {
            let e = parse_request(input).unwrap_err();
            assert!(e.contains(want), "{input:?}: {e}");
        }
        assert!(parse_request(br#"{"op":7}"#).is_err());
        assert!(parse_request(br#"{"OP":"status"}"#).is_err());
    }

    #[test]
    fn answers_are_single_json_lines() {
        let line = Response::error("a\nb").to_line();
        assert_eq!(line.matches('\n').count(), 1);
        let back: Response = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(back.error.as_deref(), Some("a\nb"));
        assert_eq!(
            Response::state(RunningState::Paused).to_line(),
            "{\"ok\":true,\"state\":\"paused\"}\n"
        );
    }
}
