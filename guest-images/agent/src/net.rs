//! NIC set-up with the classic socket ioctls (no netlink, no `ip` binary):
//! address, netmask, link up, default route. Five syscalls per NIC plus one
//! socket for all of them.

mod route_abi;

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::cmdline::{IfName, NetConfig};

/// An AF_INET datagram socket used only as a handle for interface ioctls.
pub struct NetControl {
    sock: OwnedFd,
}

impl NetControl {
    /// Opens the control socket.
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; no memory is passed.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { sock })
    }

    /// Brings `lo` up; the kernel gives it 127.0.0.1/8 by itself.
    pub fn loopback_up(&self) -> io::Result<()> {
        self.link_up(c"lo", "lo")
    }

    /// Configures one NIC: address, netmask, up, then the default route
    /// (which needs the connected route that "up" creates).
    pub fn configure(&self, net: &NetConfig) -> io::Result<()> {
        let name = ifname_cstr(&net.ifname);
        let name = name.as_c_str();
        let what = net.ifname.as_str();
        self.set_addr(name, libc::SIOCSIFADDR, net.addr.addr())
            .map_err(|e| context(e, what, "set address"))?;
        self.set_addr(name, libc::SIOCSIFNETMASK, net.addr.netmask())
            .map_err(|e| context(e, what, "set netmask"))?;
        self.link_up(name, what)?;
        if let Some(gw) = net.gateway {
            self.add_default_route(gw)
                .map_err(|e| context(e, what, &format!("add default route via {gw}")))?;
        }
        Ok(())
    }

    fn link_up(&self, name: &CStr, what: &str) -> io::Result<()> {
        let mut req = ifreq(name);
        // Writing the whole flag word: the interface is fresh, so there are no
        // other flags (promisc, ...) to preserve, and a SIOCGIFFLAGS is saved.
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        self.ioctl(libc::SIOCSIFFLAGS, &mut req)
            .map_err(|e| context(e, what, "set link up"))
    }

    fn set_addr(&self, name: &CStr, request: libc::c_ulong, addr: Ipv4Addr) -> io::Result<()> {
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        self.ioctl(request, &mut req)
    }

    fn add_default_route(&self, gateway: Ipv4Addr) -> io::Result<()> {
        // SAFETY: rtentry is plain old data (integers, sockaddrs and null
        // pointers); all-zero is its documented "unset" value.
        let mut rt: route_abi::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(gateway);
        rt.rt_flags = route_abi::RTF_UP | route_abi::RTF_GATEWAY;
        // SAFETY: SIOCADDRT reads a `struct rtentry`, which `rt` is (layout
        // checked by a unit test); rt_dev is null, so no other memory is read.
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCADDRT as _, &mut rt) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn ioctl(&self, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: every request used here (SIOCSIF*) reads or writes exactly
        // one `struct ifreq`, which `req` points to.
        let rc =
            unsafe { libc::ioctl(self.sock.as_raw_fd(), request as _, req as *mut libc::ifreq) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

fn context(err: io::Error, ifname: &str, step: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{ifname}: {step}: {err}"))
}

fn ifname_cstr(name: &IfName) -> std::ffi::CString {
    // IfName is validated ASCII without NUL bytes; fall back to an empty name
    // (the ioctl then fails with ENODEV) rather than panic.
    std::ffi::CString::new(name.as_str()).unwrap_or_default()
}

fn ifreq(name: &CStr) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // IfName guarantees at most 15 bytes, so the name stays NUL-terminated.
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .take(libc::IFNAMSIZ - 1)
        .zip(name.to_bytes())
    {
        *dst = *src as libc::c_char;
    }
    req
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes and plain old data;
    // the kernel reinterprets one as the other the same way.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_in_is_network_order() {
        let sa = sockaddr_in(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // sa_data = port (2 bytes) then the address bytes in order.
        let bytes: Vec<u8> = sa.sa_data.iter().map(|b| *b as u8).collect();
        assert_eq!(&bytes[..6], &[0, 0, 10, 0, 0, 2]);
    }

    /// Runs the real ioctls in a throwaway network namespace (a thread of
    /// its own, so the test process keeps the host's). Needs CAP_SYS_ADMIN;
    /// skipped without it.
    #[test]
    fn configures_an_interface_in_a_private_network_namespace() {
        let outcome = std::thread::spawn(|| {
            // SAFETY: unshare(2) with a constant flag; it only moves this
            // thread into a new, empty network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            let net = NetControl::open().expect("socket");
            net.loopback_up().expect("lo up");
            let missing = NetConfig {
                ifname: IfName::new("eth0").unwrap(),
                addr: crate::cmdline::Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 2), 24).unwrap(),
                gateway: None,
            };
            let err = net.configure(&missing).unwrap_err();
            assert_eq!(err.raw_os_error(), None, "wrapped with context");
            assert!(err.to_string().starts_with("eth0: set address: "), "{err}");
            // `lo` stands in for a NIC: address, netmask, up, default route.
            let (config, errors) = crate::cmdline::parse("nimbus.net=lo,10.9.9.2/24,gw=10.9.9.1");
            assert!(errors.is_empty());
            net.configure(&config.nets[0]).expect("configure lo");
            for (request, want) in [
                (libc::SIOCGIFADDR, [0, 0, 10, 9, 9, 2]),
                (libc::SIOCGIFNETMASK, [0, 0, 255, 255, 255, 0]),
            ] {
                let mut req = ifreq(c"lo");
                net.ioctl(request, &mut req).expect("read back");
                // SAFETY: both requests fill in the address member.
                let sa = unsafe { req.ifr_ifru.ifru_addr };
                let got: Vec<u8> = sa.sa_data[..6].iter().map(|b| *b as u8).collect();
                assert_eq!(got, want);
            }
            Some(std::fs::read_to_string("/proc/thread-self/net/route").expect("route table"))
        })
        .join()
        .expect("namespace thread");
        let Some(routes) = outcome else {
            eprintln!("skipped: no CAP_SYS_ADMIN for a private network namespace");
            return;
        };
        // Iface Destination Gateway Flags ...: default via 10.9.9.1
        // (little-endian hex), RTF_UP|RTF_GATEWAY.
        assert!(
            routes
                .lines()
                .any(|l| l.starts_with("lo\t00000000\t0109090A\t0003\t")),
            "{routes}"
        );
    }

    #[test]
    fn ifreq_name_is_terminated() {
        let req = ifreq(c"eth0");
        let name: Vec<u8> = req.ifr_name.iter().map(|b| *b as u8).collect();
        assert_eq!(&name[..5], b"eth0\0");
    }
}
