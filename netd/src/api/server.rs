//! The socket server: one task per connection, requests answered in order.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use super::protocol::{Request, Response};
use crate::daemon::Daemon;
use crate::error::NetError;

/// Longest request line accepted (a 10,000-rule NSG is ~3 MB).
const MAX_LINE: usize = 64 << 20;

/// Binds `path` (replacing a stale socket), restricted to root (0600).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves connections until the listener fails.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let daemon = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, daemon).await {
                debug!(error = %e, "connection ended");
            }
        });
    }
}

async fn connection(stream: UnixStream, daemon: Arc<Daemon>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let response = if line.len() > MAX_LINE {
            Response::from_result(Err(NetError::BadRequest {
                reason: "request too large".into(),
            }))
        } else {
            match serde_json::from_str::<Request>(line.trim_end()) {
                Ok(request) => daemon.handle(request).await,
                Err(e) => {
                    warn!(error = %e, "malformed request");
                    Response::from_result(Err(NetError::BadRequest {
                        reason: e.to_string(),
                    }))
                }
            }
        };
        let mut text = serde_json::to_string(&response).unwrap_or_else(|e| {
            format!(r#"{{"ok":false,"error":{{"error":"bad_request","reason":"unencodable response: {e}"}}}}"#)
        });
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
}
