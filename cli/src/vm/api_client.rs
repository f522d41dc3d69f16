//! A blocking client for nimbus-vmm's API socket (`vmm::api`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vmm::api::protocol::{Request, Response, VmStatus};

/// How long one request may take (a pause waits for vCPUs to park).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request and returns the answer, or why there is none.
pub fn call(socket: &Path, request: Request) -> Result<Response, String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(&request).map_err(|e| e.to_string())?;
    line.push('\n');
    writer
        .write_all(line.as_bytes())
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    if answer.is_empty() {
        return Err(format!("{}: closed without an answer", socket.display()));
    }
    serde_json::from_str(&answer).map_err(|e| format!("invalid answer {answer:?}: {e}"))
}

/// Sends a request that must succeed.
pub fn call_ok(socket: &Path, request: Request) -> Result<Response, String> {
    let r = call(socket, request)?;
    if r.ok {
        Ok(r)
    } else {
        Err(r.error.unwrap_or_else(|| "refused without a reason".into()))
    }
}

/// The VMM's status.
pub fn status(socket: &Path) -> Result<VmStatus, String> {
    call_ok(socket, Request::Status)?
        .status
        .ok_or_else(|| "status answer without a status".to_string())
}
