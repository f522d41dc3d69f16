//! The guest's HTTP endpoint: what load-balancer probes and tests talk to.
//!
//! HTTP/1.1 on port 80 (`nimbus.http=PORT`, 0 turns it off) whenever a NIC
//! is configured:
//!
//! * `GET /`        → 200, one line naming the VM and its address:
//!   `vm=NAME ip=ADDR` (`nimbus.name=NAME` on the kernel command line)
//! * `GET /healthz` → 200 `ok`
//! * any other path → 404; another method → 405; a request that is not
//!   HTTP → 400 and the connection closes.
//!
//! `HEAD` is answered like `GET` without the body. Keep-alive is HTTP/1.1's
//! default (`Connection: close` ends it; HTTP/1.0 keeps alive only when
//! asked). A small fixed pool of threads accepts on one listener: PID 1
//! never forks, and in this guest a thread costs tens of milliseconds to
//! create (every syscall and page fault runs in the emulated ring 0), so
//! they are made once at boot. An idle keep-alive connection is closed
//! after [`IDLE`] so that it cannot hold a worker forever.
//!
//! Parsing ([`parse`]) is a pure function over the bytes received so far,
//! unit-tested with garbage.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::console::Console;

/// Worker threads (and so connections served at the same time).
const WORKERS: usize = 8;
/// Stack of a worker: they only parse small requests.
const WORKER_STACK: usize = 64 * 1024;
/// Longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(10);

/// What the endpoint says about its VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The VM's name (`nimbus.name=`), or `unnamed`.
    pub name: String,
    /// Its first NIC's address.
    pub ip: Option<Ipv4Addr>,
}

/// Request methods the endpoint knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: GET without the body.
    Head,
    /// Anything else (answered 405).
    Other,
}

/// One parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// Bytes of body that follow the head (Content-Length).
    pub body_len: usize,
}

/// Why bytes are not a request we serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The head is longer than [`MAX_HEAD`].
    TooLong,
    /// Not HTTP/1.x, or a malformed line; the text says what.
    Malformed(&'static str),
}

/// Parses the head at the start of `buf`. `Ok(None)`: not complete yet.
/// `Ok(Some((request, n)))`: the head is the first `n` bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, ParseError> {
    let Some(end) = find_head_end(buf) else {
        return if buf.len() > MAX_HEAD {
            Err(ParseError::TooLong)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(ParseError::TooLong);
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::Malformed("not text"))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let request_line = lines
        .by_ref()
        .find(|l| !l.is_empty())
        .ok_or(ParseError::Malformed("no request line"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ParseError::Malformed("bad method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(ParseError::Malformed("bad request target"));
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(ParseError::Malformed("not HTTP/1.0 or HTTP/1.1")),
    };
    let mut keep_alive = http11;
    let mut body_len = 0usize;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::Malformed("header line without ':'"))?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(ParseError::Malformed("bad header name"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            body_len = value
                .parse()
                .ok()
                .filter(|n| *n <= MAX_HEAD)
                .ok_or(ParseError::Malformed("bad or too large Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ParseError::Malformed("request bodies are not accepted"));
        }
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(Some((
        Request {
            method,
            path,
            keep_alive,
            body_len,
        },
        end,
    )))
}

/// Index just past the blank line ending the head, if it arrived.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// The answer to `req`: (status line, body).
pub fn route(req: &Request, who: &Identity) -> (&'static str, String) {
    match (req.method, req.path.as_str()) {
        (Method::Other, _) => ("405 Method Not Allowed", "method not allowed\n".into()),
        (_, "/") => (
            "200 OK",
            format!(
                "vm={} ip={}\n",
                who.name,
                who.ip.map_or_else(|| "-".to_string(), |a| a.to_string())
            ),
        ),
        (_, "/healthz") => ("200 OK", "ok\n".into()),
        _ => ("404 Not Found", "not found\n".into()),
    }
}

/// The full response bytes.
pub fn response(status: &str, body: &str, head_only: bool, keep_alive: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Serves one connection until it closes, idles out or errs.
fn serve_connection(mut s: TcpStream, who: &Identity) -> io::Result<()> {
    s.set_read_timeout(Some(IDLE))?;
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        match parse(&buf) {
            Ok(Some((req, head))) => {
                // Discard a (small) body.
                while buf.len() < head + req.body_len {
                    let n = s.read(&mut chunk)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.drain(..head + req.body_len);
                let (status, body) = route(&req, who);
                s.write_all(&response(
                    status,
                    &body,
                    req.method == Method::Head,
                    req.keep_alive,
                ))?;
                if !req.keep_alive {
                    return Ok(());
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                let why = match e {
                    ParseError::TooLong => "request head too long\n",
                    ParseError::Malformed(w) => w,
                };
                let _ = s.write_all(&response("400 Bad Request", why, false, false));
                return Ok(());
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Listens on `port` and starts the workers; returns once they run.
pub fn spawn(port: u16, who: Identity, console: &mut Console) {
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
        Ok(l) => l,
        Err(e) => {
            console.error(&format!("http port {port}"), e);
            return;
        }
    };
    let who = Arc::new(who);
    for i in 0..WORKERS {
        let l = match listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                console.error("http listener", e);
                return;
            }
        };
        let who = who.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .stack_size(WORKER_STACK)
            .spawn(move || loop {
                match l.accept() {
                    // Errors of one connection (a reset, an idle timeout)
                    // concern only that client.
                    Ok((s, _)) => drop(serve_connection(s, &who)),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            });
        if let Err(e) = spawned {
            console.error("http worker", e);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (Request, usize) {
        parse(text.as_bytes()).expect("valid").expect("complete")
    }

    #[test]
    fn get_and_keep_alive_defaults() {
        let (r, n) = ok("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
        assert_eq!(n, 27);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/");
        assert!(r.keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(
            !ok("GET / HTTP/1.1\r\nconnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert_eq!(ok("HEAD /healthz?x=1 HTTP/1.1\n\n").0.path, "/healthz");
        assert_eq!(ok("\r\nGET / HTTP/1.1\r\n\r\n").0.path, "/");
        assert_eq!(
            ok("GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
                .0
                .body_len,
            3
        );
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        for text in [
            "",
            "GET",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\r",
        ] {
            assert_eq!(parse(text.as_bytes()), Ok(None), "{text:?}");
        }
    }

    #[test]
    fn garbage_is_refused_and_never_panics() {
        let cases: &[&[u8]] = &[
            b"\r\n\r\n",
            b"hello\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
            b"\x00\x00\x00\x00\r\n\r\n",
        ];
        for c in cases {
            assert!(
                matches!(parse(c), Err(ParseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        let long = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse(&long), Err(ParseError::TooLong));
        let mut long_header = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long_header.extend(std::iter::repeat_n(b'y', MAX_HEAD));
        long_header.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&long_header), Err(ParseError::TooLong));
        // Every prefix of a valid request is either incomplete or valid.
        let full = b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        for i in 0..full.len() {
            assert!(parse(&full[..i]).is_ok(), "prefix {i}");
        }
    }

    #[test]
    fn routes() {
        let who = Identity {
            name: "web-1".into(),
            ip: Some(Ipv4Addr::new(10, 0, 0, 4)),
        };
        let req = |m, p: &str| Request {
            method: m,
            path: p.into(),
            keep_alive: true,
            body_len: 0,
        };
        assert_eq!(
            route(&req(Method::Get, "/"), &who),
            ("200 OK", "vm=web-1 ip=10.0.0.4\n".into())
        );
        assert_eq!(route(&req(Method::Get, "/healthz"), &who).1, "ok\n");
        assert_eq!(route(&req(Method::Head, "/x"), &who).0, "404 Not Found");
        assert_eq!(
            route(&req(Method::Other, "/"), &who).0,
            "405 Method Not Allowed"
        );
        let r = response("200 OK", "ok\n", true, false);
        let text = String::from_utf8(r).expect("text");
        assert!(text.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"));
    }
}
