//! Test commands: write/read/checksum a file, TCP echo and bulk transfers.
//!
//! Served on a TCP port (one connection at a time, in one thread: PID 1
//! never forks) and runnable from the command line (`nimbus.run=`). A
//! command is one text line; the answer is one line `OK key=value ...` or
//! `ERR why`. Data is a fixed pseudo-random stream (`Pattern`) and checked
//! with FNV-1a 64, so both ends can compute the expected checksum.
//!
//! * `write PATH N`   write N bytes of the pattern, fsync  -> `OK bytes=N fnv=..`
//! * `read PATH`      read the whole file                  -> `OK bytes=N fnv=..`
//! * `recv N`         read N bytes from the connection     -> `OK bytes=N fnv=..`
//! * `send N`         send N bytes of the pattern, then close
//! * `echo`           echo everything until EOF
//! * `fetch IP:PORT N` connect, ask `send N`, read it       -> `OK bytes=N fnv=..`
//! * `dread PATH`, `dwrite PATH N`, `randread PATH N`: O_DIRECT disk
//!   figures, timed in the guest (see `direct_io`)
//! * `sync`, `poweroff`

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use crate::console::Console;
use nimbus_agent::stream_check::{Fnv, Pattern};

const CHUNK: usize = 64 * 1024;

fn ok(bytes: u64, fnv: &Fnv) -> String {
    format!("OK bytes={bytes} fnv={}", fnv.hex())
}

fn num(s: Option<&str>) -> io::Result<u64> {
    s.and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "expected a byte count"))
}

fn write_file(path: &str, n: u64) -> io::Result<String> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let (mut p, mut h, mut buf) = (Pattern::new(), Fnv::new(), vec![0u8; CHUNK]);
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        p.fill(&mut buf[..k]);
        f.write_all(&buf[..k])?;
        h.update(&buf[..k]);
        left -= k as u64;
    }
    f.sync_all()?;
    Ok(ok(n, &h))
}

fn read_all(mut r: impl Read, limit: Option<u64>) -> io::Result<(u64, Fnv)> {
    let (mut h, mut buf, mut total) = (Fnv::new(), vec![0u8; CHUNK], 0u64);
    loop {
        let want = limit.map_or(CHUNK as u64, |l| (l - total).min(CHUNK as u64)) as usize;
        if want == 0 {
            break;
        }
        match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                total += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((total, h))
}

fn send(mut w: impl Write, n: u64) -> io::Result<()> {
    let (mut p, mut buf, mut left) = (Pattern::new(), vec![0u8; CHUNK], n);
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        p.fill(&mut buf[..k]);
        w.write_all(&buf[..k])?;
        left -= k as u64;
    }
    w.flush()
}

fn fetch(addr: &str, n: u64) -> io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    writeln!(s, "send {n}")?;
    let (got, h) = read_all(&s, None)?;
    Ok(ok(got, &h))
}

/// Runs one command that needs no connection; `None` if it is not one.
pub fn run_local(line: &str, console: &mut Console) -> Option<io::Result<String>> {
    let mut w = line.split_whitespace();
    let cmd = w.next()?;
    Some(match cmd {
        "write" => match (w.next(), num(w.next())) {
            (Some(p), Ok(n)) => write_file(p, n),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "write PATH N")),
        },
        "read" => match w.next() {
            Some(p) => File::open(p)
                .and_then(|f| read_all(f, None))
                .map(|(n, h)| ok(n, &h)),
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "read PATH")),
        },
        "fetch" => match (w.next(), num(w.next())) {
            (Some(a), Ok(n)) => fetch(a, n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fetch IP:PORT N",
            )),
        },
        "dread" => match w.next() {
            Some(p) => crate::direct_io::read(p),
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "dread PATH")),
        },
        "dwrite" => match (w.next(), num(w.next())) {
            (Some(p), Ok(n)) => crate::direct_io::write(p, n),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "dwrite PATH N")),
        },
        "randread" => match (w.next(), num(w.next())) {
            (Some(p), Ok(n)) => crate::direct_io::random_read(p, n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "randread PATH N",
            )),
        },
        "sync" => {
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
            Ok("OK".into())
        }
        "poweroff" => crate::power::power_off(console),
        _ => return None,
    })
}

fn handle(stream: TcpStream, console: &mut Console) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut out = stream;
    let mut w = line.split_whitespace();
    let answer = match w.next() {
        Some("echo") => {
            let buffered = reader.buffer().to_vec();
            out.write_all(&buffered)?;
            io::copy(reader.get_mut(), &mut out)?;
            return Ok(());
        }
        Some("send") => return send(&mut out, num(w.next())?),
        Some("recv") => {
            let n = num(w.next())?;
            let (got, h) = read_all(&mut reader, Some(n))?;
            ok(got, &h)
        }
        _ => match run_local(&line, console) {
            Some(Ok(a)) => a,
            Some(Err(e)) => format!("ERR {e}"),
            None => "ERR unknown command".into(),
        },
    };
    writeln!(out, "{answer}")
}

/// Serves commands on `port` forever, one connection at a time.
pub fn serve(port: u16) {
    let mut console = Console::stdout();
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            console.error(&format!("serve port {port}"), e);
            return;
        }
    };
    for stream in listener.incoming().flatten() {
        if let Err(e) = handle(stream, &mut console) {
            console.error("serve", e);
        }
    }
}
