//! A small blocking client for the CLI and tests.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::protocol::{Request, Response};
use crate::error::NetError;

/// Why a call did not produce netd's answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot reach nimbus-netd at {path}: {source} (is it running? start it with `nimbus netd run`)")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("talking to nimbus-netd: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not valid.
    #[error("nimbus-netd sent an invalid answer: {0}")]
    Protocol(String),
    /// netd refused or failed the request.
    #[error("{0}")]
    Refused(NetError),
}

/// A connection to netd.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, request: &Request) -> Result<serde_json::Value, ClientError> {
        let mut text =
            serde_json::to_string(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        text.push('\n');
        self.writer.write_all(text.as_bytes())?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ClientError::Protocol(
                "connection closed before an answer".into(),
            ));
        }
        let response: Response =
            serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        response.into_result().map_err(ClientError::Refused)
    }
}
