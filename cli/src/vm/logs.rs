//! `nimbus vm logs NAME [--tail N] [--follow]`: the serial console log.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use super::error::{io_err, VmError};
use super::supervisor;
use super::Context;

/// The last `n` lines of `text` (all when `n` is None).
pub fn last_lines(text: &str, n: Option<usize>) -> &str {
    let Some(n) = n else {
        return text;
    };
    if n == 0 {
        return "";
    }
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let mut seen = 0;
    for (i, b) in trimmed.bytes().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

/// Prints the console log; with `follow`, keeps printing what is appended
/// until the VM is no longer running.
pub fn print(ctx: &Context, name: &str, tail: Option<usize>, follow: bool) -> Result<(), VmError> {
    let dir = ctx.state.vm(name);
    if !dir.exists() {
        return Err(VmError::NotFound(name.to_string()));
    }
    let path = dir.console_log();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => return Ok(()),
        Err(e) => return Err(io_err(name, "open", &path)(e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(io_err(name, "read", &path))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out = std::io::stdout();
    let _ = out.write_all(last_lines(&text, tail).as_bytes());
    let _ = out.flush();
    if !follow {
        return Ok(());
    }
    let mut pos = bytes.len() as u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let running = supervisor::is_active(&dir)?;
        // A restart rotates the log: start over on the new file.
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            file = std::fs::File::open(&path).map_err(io_err(name, "open", &path))?;
            pos = 0;
        }
        file.seek(SeekFrom::Start(pos))
            .map_err(io_err(name, "read", &path))?;
        let n = file.read(&mut buf).map_err(io_err(name, "read", &path))?;
        if n > 0 {
            pos += n as u64;
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            continue;
        }
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines() {
        let t = "a\nb\nc\n";
        assert_eq!(last_lines(t, None), t);
        assert_eq!(last_lines(t, Some(1)), "c\n");
        assert_eq!(last_lines(t, Some(2)), "b\nc\n");
        assert_eq!(last_lines(t, Some(9)), t);
        assert_eq!(last_lines(t, Some(0)), "");
        assert_eq!(last_lines("x\ny", Some(1)), "y");
        assert_eq!(last_lines("", Some(3)), "");
    }
}
