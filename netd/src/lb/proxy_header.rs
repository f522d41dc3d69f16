//! PROXY protocol version 2 (haproxy.org/download/2.6/doc/proxy-protocol.txt):
//! the binary header a proxy sends first on a backend connection (or in
//! front of every datagram, for UDP) so that the backend learns the
//! client's address. Understood by HAProxy, nginx (`proxy_protocol`),
//! Envoy, dnsdist, and easy to parse in a guest.

use std::net::SocketAddr;

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// Longest header [`encode`] makes: 16 bytes and two IPv6 addresses and
/// ports.
pub const MAX_LEN: usize = 16 + 36;

/// Transport of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SOCK_STREAM.
    Stream,
    /// SOCK_DGRAM.
    Datagram,
}

/// Encodes a `PROXY` command header for a connection from `client` to
/// `frontend`. Mixed families (never produced here) are sent as `LOCAL`.
pub fn encode(client: SocketAddr, frontend: SocketAddr, transport: Transport) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_LEN);
    out.extend_from_slice(&SIGNATURE);
    let t = match transport {
        Transport::Stream => 0x1,
        Transport::Datagram => 0x2,
    };
    match (client, frontend) {
        (SocketAddr::V4(c), SocketAddr::V4(f)) => {
            out.push(0x21); // version 2, PROXY
            out.push(0x10 | t); // AF_INET
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&f.ip().octets());
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&f.port().to_be_bytes());
        }
        (SocketAddr::V6(c), SocketAddr::V6(f)) => {
            out.push(0x21);
            out.push(0x20 | t); // AF_INET6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&f.ip().octets());
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&f.port().to_be_bytes());
        }
        _ => {
            out.push(0x20); // version 2, LOCAL
            out.push(0x00);
            out.extend_from_slice(&0u16.to_be_bytes());
        }
    }
    out
}

/// Parses a v2 header at the start of `buf`: the client address and the
/// header length. For backends and tests; the load balancer only sends.
pub fn decode(buf: &[u8]) -> Option<(Option<SocketAddr>, usize)> {
    if buf.len() < 16 || buf[..12] != SIGNATURE || buf[12] >> 4 != 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let body = buf.get(16..16 + len)?;
    if buf[12] & 0x0f == 0 {
        return Some((None, 16 + len));
    }
    let client = match buf[13] >> 4 {
        1 if len >= 12 => {
            let ip = std::net::Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        2 if len >= 36 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&body[..16]);
            let ip = std::net::Ipv6Addr::from(o);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        _ => None,
    };
    Some((client, 16 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_matches_the_spec() {
        let h = encode(
            "192.0.2.7:40000".parse().unwrap(),
            "10.0.1.100:80".parse().unwrap(),
            Transport::Stream,
        );
        assert_eq!(h.len(), 28);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0x00, 0x0c]);
        assert_eq!(&h[16..20], &[192, 0, 2, 7]);
        assert_eq!(&h[24..26], &40000u16.to_be_bytes());
        let (client, len) = decode(&h).unwrap();
        assert_eq!(client, Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(len, 28);
    }

    #[test]
    fn udp_over_ipv4_header_is_byte_exact() {
        let h = encode(
            "192.0.2.7:40000".parse().unwrap(),
            "10.0.1.200:53".parse().unwrap(),
            Transport::Datagram,
        );
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[
            0x21, // version 2, command PROXY
            0x12, // AF_INET, DGRAM: "UDP over IPv4"
            0x00, 0x0c, // 12 bytes of addresses follow
            192, 0, 2, 7, // source: the client
            10, 0, 1, 200, // destination: the frontend
            0x9c, 0x40, // source port 40000
            0x00, 0x35, // destination port 53
        ]);
        assert_eq!(h, want);
        assert!(h.len() <= MAX_LEN);
        // A datagram's payload follows the header directly.
        let mut datagram = h.clone();
        datagram.extend_from_slice(b"query");
        let (client, len) = decode(&datagram).unwrap();
        assert_eq!(client, Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(&datagram[len..], b"query");
    }

    #[test]
    fn ipv6_and_mixed() {
        let h = encode(
            "[2001:db8::1]:5".parse().unwrap(),
            "[2001:db8::2]:6".parse().unwrap(),
            Transport::Datagram,
        );
        assert_eq!(h[13], 0x22);
        assert_eq!(h.len(), MAX_LEN);
        assert_eq!(
            decode(&h).unwrap().0,
            Some("[2001:db8::1]:5".parse().unwrap())
        );
        let h = encode(
            "192.0.2.7:1".parse().unwrap(),
            "[2001:db8::2]:6".parse().unwrap(),
            Transport::Stream,
        );
        assert_eq!(decode(&h), Some((None, 16)));
        assert_eq!(decode(b"GET / HTTP/1.0\r\n\r\n"), None);
    }
}
