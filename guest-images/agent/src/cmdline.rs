//! Parsing of the kernel command line into a validated [`BootConfig`].
//!
//! Pure: no system access, so the host can unit-test every branch. Only
//! parameters in the `nimbus.` namespace are ours; everything else belongs to
//! the kernel and is ignored. A garbled or unknown `nimbus.` parameter yields a
//! [`CmdlineError`] and is skipped; the rest of the command line still counts.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

/// Everything the agent was asked to do, validated.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// One entry per `nimbus.net=`, in command-line order, names unique.
    pub nets: Vec<NetConfig>,
    /// One entry per `nimbus.disk=`, in command-line order.
    pub disks: Vec<DiskMount>,
    /// `nimbus.poweroff=1`: power off right after the readiness report.
    pub poweroff: bool,
    /// `nimbus.shell=1`: start a shell on the console after readiness.
    pub shell: bool,
    /// `nimbus.run=CMD:ARG:...` (repeatable): test commands run after
    /// readiness, results on the console (see `commands`).
    pub runs: Vec<String>,
    /// `nimbus.serve=PORT`: serve the test commands on this TCP port
    /// (default 7000 when a NIC is configured; 0 turns it off).
    pub serve: Option<u16>,
    /// `nimbus.http=PORT`: the HTTP endpoint's port (default 80 when a NIC
    /// is configured; 0 turns it off; see `http`).
    pub http: Option<u16>,
    /// `nimbus.name=NAME`: the VM's name, as the host knows it.
    pub name: Option<String>,
}

/// `nimbus.net=IFNAME,ADDR/PREFIX[,gw=GATEWAY]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Kernel interface name, e.g. `eth0`.
    pub ifname: IfName,
    /// Address and prefix length assigned to the interface.
    pub addr: Ipv4Cidr,
    /// Default gateway; always inside `addr`'s subnet.
    pub gateway: Option<Ipv4Addr>,
}

/// `nimbus.disk=DEVICE,MOUNTPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskMount {
    /// Block device under `/dev/`, e.g. `/dev/vdb`.
    pub device: PathBuf,
    /// Absolute, normalised directory to mount it on (created if missing).
    pub mountpoint: PathBuf,
}

/// A network interface name the kernel would accept (1..=15 bytes, no `/`,
/// no whitespace, not `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfName(String);

impl IfName {
    /// Longest name the kernel accepts (`IFNAMSIZ` - 1).
    pub const MAX_LEN: usize = 15;

    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("empty interface name".into());
        }
        if name.len() > Self::MAX_LEN {
            return Err(format!(
                "interface name `{name}` is longer than {} bytes",
                Self::MAX_LEN
            ));
        }
        if name == "." || name == ".." || name.contains(['/', ':']) || !name.is_ascii() {
            return Err(format!("`{name}` is not a valid interface name"));
        }
        if name
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(format!("`{name}` is not a valid interface name"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as the kernel knows it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IPv4 address with its prefix length, e.g. `10.0.0.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// `addr/prefix`; `prefix` must be at most 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 32 {
            return Err(format!("prefix length {prefix} is larger than 32"));
        }
        Ok(Self { addr, prefix })
    }

    /// The host address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The netmask, e.g. 255.255.255.0 for /24.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }

    /// Whether `other` is in this subnet.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask());
        u32::from(self.addr) & mask == u32::from(other) & mask
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One `nimbus.` parameter that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineError {
    /// The parameter as written on the command line.
    pub param: String,
    /// Why it was refused.
    pub reason: String,
}

impl fmt::Display for CmdlineError {
    /// Formats as the `<what>: <why>` part of a `NIMBUS_ERROR` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cmdline `{}`: {} (parameter skipped)",
            self.param, self.reason
        )
    }
}

const NET_SYNTAX: &str = "expected nimbus.net=IFNAME,ADDR/PREFIX[,gw=GATEWAY]";
const DISK_SYNTAX: &str = "expected nimbus.disk=/dev/DEVICE,/MOUNTPOINT";

/// Parses a whole kernel command line (the content of `/proc/cmdline`).
///
/// Returns the configuration made of every valid `nimbus.` parameter and the
/// list of parameters that were refused. Never panics.
pub fn parse(cmdline: &str) -> (BootConfig, Vec<CmdlineError>) {
    let mut config = BootConfig::default();
    let mut errors = Vec::new();
    for token in split_params(cmdline) {
        let Some(rest) = token.strip_prefix("nimbus.") else {
            continue;
        };
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (rest, None),
        };
        let outcome = match (key, value) {
            ("net", Some(v)) => parse_net(v).and_then(|net| {
                if config.nets.iter().any(|n| n.ifname == net.ifname) {
                    Err(format!("interface {} is already configured", net.ifname))
                } else {
                    config.nets.push(net);
                    Ok(())
                }
            }),
            ("disk", Some(v)) => parse_disk(v).and_then(|disk| {
                if config.disks.iter().any(|d| d.mountpoint == disk.mountpoint) {
                    Err(format!(
                        "{} is already a mount point",
                        disk.mountpoint.display()
                    ))
                } else {
                    config.disks.push(disk);
                    Ok(())
                }
            }),
            ("poweroff", Some(v)) => parse_flag(v).map(|b| config.poweroff = b),
            ("run", Some(v)) if !v.is_empty() => {
                config.runs.push(v.replace(':', " "));
                Ok(())
            }
            ("serve", Some(v)) => v
                .parse::<u16>()
                .map(|p| config.serve = Some(p))
                .map_err(|_| "expected nimbus.serve=PORT".to_owned()),
            ("http", Some(v)) => v
                .parse::<u16>()
                .map(|p| config.http = Some(p))
                .map_err(|_| "expected nimbus.http=PORT (0 turns it off)".to_owned()),
            ("name", Some(v)) => parse_name(v).map(|n| config.name = Some(n)),
            ("shell", Some(v)) => parse_flag(v).map(|b| config.shell = b),
            ("net", None) => Err(NET_SYNTAX.to_owned()),
            ("disk", None) => Err(DISK_SYNTAX.to_owned()),
            ("poweroff" | "shell", None) => {
                Err(format!("expected nimbus.{key}=1 or nimbus.{key}=0"))
            }
            _ => Err(
                "unknown nimbus parameter (known: net, disk, poweroff, shell, run, serve, http, name)"
                    .to_owned(),
            ),
        };
        if let Err(reason) = outcome {
            errors.push(CmdlineError {
                param: token,
                reason,
            });
        }
    }
    if config.poweroff && config.shell {
        config.shell = false;
        errors.push(CmdlineError {
            param: "nimbus.shell=1".to_owned(),
            reason: "nimbus.poweroff=1 powers off right after readiness".to_owned(),
        });
    }
    (config, errors)
}

/// Splits like the kernel's `next_arg`: whitespace separates parameters
/// except inside double quotes, and the quotes themselves are dropped.
fn split_params(cmdline: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut in_quote = false;
    let mut started = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                started = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if started {
                    params.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        params.push(current);
    }
    params
}

/// A VM name: 1–64 of `A-Z a-z 0-9 . _ -` (what `nimbus vm create` allows
/// is a subset), so it can go into an HTTP body as it is.
fn parse_name(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 64 {
        return Err("expected nimbus.name=NAME (1 to 64 characters)".to_owned());
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "name `{value}` may only hold letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(value.to_owned())
}

fn parse_flag(value: &str) -> Result<bool, String> {
    match value {
        "1" => Ok(true),
        "0" => Ok(false),
        other => Err(format!("value `{other}` is not 0 or 1")),
    }
}

fn parse_net(value: &str) -> Result<NetConfig, String> {
    let mut fields = value.split(',');
    let (Some(name), Some(cidr)) = (fields.next(), fields.next()) else {
        return Err(NET_SYNTAX.to_owned());
    };
    let ifname = IfName::new(name)?;
    let addr = parse_cidr(cidr)?;
    let mut gateway = None;
    for field in fields {
        match field.split_once('=') {
            Some(("gw", gw)) if gateway.is_none() => {
                let gw: Ipv4Addr = gw
                    .parse()
                    .map_err(|_| format!("gateway `{gw}` is not an IPv4 address"))?;
                if !addr.contains(gw) {
                    return Err(format!("gateway {gw} is outside the subnet of {addr}"));
                }
                if gw == addr.addr() {
                    return Err(format!("gateway {gw} is the interface's own address"));
                }
                gateway = Some(gw);
            }
            Some(("gw", _)) => return Err("gw= given twice".to_owned()),
            _ => return Err(format!("unexpected field `{field}`; {NET_SYNTAX}")),
        }
    }
    Ok(NetConfig {
        ifname,
        addr,
        gateway,
    })
}

fn parse_cidr(text: &str) -> Result<Ipv4Cidr, String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("address `{text}` has no /PREFIX"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("prefix length `{prefix}` is not a number from 0 to 32"))?;
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
        return Err(format!("{addr} cannot be an interface address"));
    }
    Ipv4Cidr::new(addr, prefix)
}

fn parse_disk(value: &str) -> Result<DiskMount, String> {
    let mut fields = value.split(',');
    let (Some(device), Some(mountpoint), None) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(DISK_SYNTAX.to_owned());
    };
    let device = Path::new(device);
    let dev_name = device
        .strip_prefix("/dev")
        .map_err(|_| format!("device `{}` is not under /dev", device.display()))?;
    if dev_name.as_os_str().is_empty() || !is_plain_absolute(device) {
        return Err(format!(
            "device `{}` is not a device path",
            device.display()
        ));
    }
    let mountpoint = Path::new(mountpoint);
    if !is_plain_absolute(mountpoint) {
        return Err(format!(
            "mount point `{}` must be an absolute path without `..`",
            mountpoint.display()
        ));
    }
    // Normalise (drops `//` and `/./`) so the reserved check below is honest.
    let mountpoint: PathBuf = mountpoint.components().collect();
    for reserved in ["/", "/proc", "/sys", "/dev"] {
        if mountpoint == Path::new(reserved) {
            return Err(format!("mount point {reserved} is reserved"));
        }
    }
    Ok(DiskMount {
        device: device.components().collect(),
        mountpoint,
    })
}

fn is_plain_absolute(path: &Path) -> bool {
    path.is_absolute()
        && !path.as_os_str().as_encoded_bytes().contains(&0)
        && path.components().all(|c| {
            matches!(
                c,
                Component::RootDir | Component::Normal(_) | Component::CurDir
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, addr: [u8; 4], prefix: u8, gw: Option<[u8; 4]>) -> NetConfig {
        NetConfig {
            ifname: IfName::new(name).unwrap(),
            addr: Ipv4Cidr::new(addr.into(), prefix).unwrap(),
            gateway: gw.map(Ipv4Addr::from),
        }
    }

    fn only_error(cmdline: &str) -> CmdlineError {
        let (config, errors) = parse(cmdline);
        assert_eq!(config, BootConfig::default(), "{cmdline}");
        assert_eq!(errors.len(), 1, "{cmdline}: {errors:?}");
        errors.into_iter().next().unwrap()
    }

    #[test]
    fn contract_example_full_line() {
        let (config, errors) = parse(
            "console=ttyS0 reboot=k panic=-1 rdinit=/init \
             nimbus.net=eth0,10.0.0.2/24,gw=10.0.0.1 nimbus.poweroff=1 \
             nimbus.disk=/dev/vdb,/mnt/data\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            config.nets,
            vec![net("eth0", [10, 0, 0, 2], 24, Some([10, 0, 0, 1]))]
        );
        assert_eq!(
            config.disks,
            vec![DiskMount {
                device: "/dev/vdb".into(),
                mountpoint: "/mnt/data".into()
            }]
        );
        assert!(config.poweroff);
        assert!(!config.shell);
    }

    #[test]
    fn poweroff_wins_over_shell() {
        let (config, errors) = parse("nimbus.shell=1 nimbus.poweroff=1");
        assert!(config.poweroff && !config.shell);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].reason.contains("powers off"), "{errors:?}");
    }

    #[test]
    fn empty_and_foreign_parameters_are_ignored() {
        for line in ["", "   \n", "console=ttyS0 quiet nimbusnet=1 net=eth0"] {
            assert_eq!(parse(line), (BootConfig::default(), vec![]), "{line}");
        }
    }

    #[test]
    fn net_without_gateway_and_several_nics() {
        let (config, errors) = parse("nimbus.net=eth0,192.168.1.10/16 nimbus.net=eth1,10.1.2.3/32");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            config.nets,
            vec![
                net("eth0", [192, 168, 1, 10], 16, None),
                net("eth1", [10, 1, 2, 3], 32, None)
            ]
        );
    }

    #[test]
    fn garbled_net_parameters_are_refused_with_a_reason() {
        let cases = [
            ("nimbus.net", "expected nimbus.net="),
            ("nimbus.net=", "expected nimbus.net="),
            ("nimbus.net=eth0", "expected nimbus.net="),
            ("nimbus.net=eth0,10.0.0.2", "has no /PREFIX"),
            ("nimbus.net=eth0,10.0.0.2/33", "larger than 32"),
            ("nimbus.net=eth0,10.0.0.2/x", "not a number"),
            ("nimbus.net=eth0,10.0.0.256/24", "not an IPv4 address"),
            (
                "nimbus.net=eth0,0.0.0.0/24",
                "cannot be an interface address",
            ),
            ("nimbus.net=,10.0.0.2/24", "empty interface name"),
            (
                "nimbus.net=averyveryverylongname,10.0.0.2/24",
                "longer than 15",
            ),
            ("nimbus.net=et/h0,10.0.0.2/24", "not a valid interface name"),
            (
                "nimbus.net=eth0,10.0.0.2/24,gw=10.0.1.1",
                "outside the subnet",
            ),
            ("nimbus.net=eth0,10.0.0.2/24,gw=10.0.0.2", "own address"),
            (
                "nimbus.net=eth0,10.0.0.2/24,gw=bogus",
                "not an IPv4 address",
            ),
            (
                "nimbus.net=eth0,10.0.0.2/24,gw=10.0.0.1,gw=10.0.0.3",
                "given twice",
            ),
            ("nimbus.net=eth0,10.0.0.2/24,mtu=9000", "unexpected field"),
        ];
        for (line, reason) in cases {
            let err = only_error(line);
            assert_eq!(err.param, line);
            assert!(err.reason.contains(reason), "{line}: {}", err.reason);
        }
    }

    #[test]
    fn duplicate_interface_keeps_the_first() {
        let (config, errors) = parse("nimbus.net=eth0,10.0.0.2/24 nimbus.net=eth0,10.0.0.3/24");
        assert_eq!(config.nets, vec![net("eth0", [10, 0, 0, 2], 24, None)]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].reason.contains("already configured"));
    }

    #[test]
    fn disks() {
        let (config, errors) =
            parse("nimbus.disk=/dev/vdb,/mnt/data nimbus.disk=/dev/vdc,/srv//x/./y/");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.disks[1].mountpoint, PathBuf::from("/srv/x/y"));
        let cases = [
            ("nimbus.disk=/dev/vdb", "expected nimbus.disk="),
            ("nimbus.disk=/dev/vdb,/mnt,ro", "expected nimbus.disk="),
            ("nimbus.disk=vdb,/mnt/data", "not under /dev"),
            ("nimbus.disk=/dev,/mnt/data", "not a device path"),
            ("nimbus.disk=/dev/../etc/x,/mnt/data", "not a device path"),
            ("nimbus.disk=/dev/vdb,mnt", "absolute path"),
            ("nimbus.disk=/dev/vdb,/mnt/../proc", "absolute path"),
            ("nimbus.disk=/dev/vdb,/", "reserved"),
            ("nimbus.disk=/dev/vdb,/proc/", "reserved"),
        ];
        for (line, reason) in cases {
            let err = only_error(line);
            assert!(err.reason.contains(reason), "{line}: {}", err.reason);
        }
        let (config, errors) = parse("nimbus.disk=/dev/vdb,/mnt nimbus.disk=/dev/vdc,/mnt");
        assert_eq!(config.disks.len(), 1);
        assert!(errors[0].reason.contains("already a mount point"));
    }

    #[test]
    fn flags() {
        assert!(parse("nimbus.poweroff=1").0.poweroff);
        assert!(!parse("nimbus.poweroff=1 nimbus.poweroff=0").0.poweroff);
        assert!(parse("nimbus.shell=1").0.shell);
        for line in [
            "nimbus.poweroff",
            "nimbus.poweroff=yes",
            "nimbus.shell=",
            "nimbus.shell=2",
        ] {
            only_error(line);
        }
    }

    #[test]
    fn unknown_nimbus_parameter_is_reported_and_rest_still_applies() {
        let (config, errors) = parse("nimbus.frobnicate=3 nimbus.poweroff=1 nimbus.");
        assert!(config.poweroff);
        assert_eq!(errors.len(), 2);
        assert!(errors[0].reason.contains("unknown nimbus parameter"));
        assert_eq!(
            errors[0].to_string(),
            "cmdline `nimbus.frobnicate=3`: unknown nimbus parameter \
             (known: net, disk, poweroff, shell, run, serve, http, name) (parameter skipped)"
        );
    }

    #[test]
    fn http_port_and_name() {
        let (c, e) = parse("nimbus.http=8080 nimbus.name=web-1.a_b");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.http, Some(8080));
        assert_eq!(c.name.as_deref(), Some("web-1.a_b"));
        assert_eq!(parse("nimbus.http=0").0.http, Some(0));
        for line in [
            "nimbus.http=x",
            "nimbus.http=65536",
            "nimbus.name=",
            "nimbus.name=a<b>",
            "nimbus.name=ä",
        ] {
            only_error(line);
        }
        only_error(&format!("nimbus.name={}", "a".repeat(65)));
    }

    #[test]
    fn quotes_group_like_the_kernel() {
        let params = split_params("a \"b c\" d=\"e f\"  nimbus.shell=\"1\"");
        assert_eq!(params, vec!["a", "b c", "d=e f", "nimbus.shell=1"]);
        assert!(parse("nimbus.shell=\"1\"").0.shell);
        // An unterminated quote swallows the rest, as in the kernel.
        let (_, errors) = parse("nimbus.net=\"eth0,10.0.0.2/24 nimbus.poweroff=1");
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn hostile_input_never_panics() {
        let nasty = [
            "nimbus.net=\u{0}",
            "nimbus.net=eth0,/",
            "nimbus.net=eth0,1.2.3.4/",
            "nimbus.net=ä,1.2.3.4/8",
            "nimbus.net=eth0,1.2.3.4/255",
            "nimbus.net=eth0,1.2.3.4/-1",
            "nimbus.disk=,",
            "nimbus.disk=/dev/\u{0},/x",
            "nimbus.==",
            "nimbus.net==,=,=",
            "nimbus.shell=1=1",
        ];
        for line in nasty {
            let (_config, errors) = parse(line);
            assert!(!errors.is_empty(), "{line}");
        }
        assert_eq!(parse("\"\"\" \"").1, vec![]);
    }

    #[test]
    fn netmask_and_contains() {
        let cidr = |p| Ipv4Cidr::new(Ipv4Addr::new(10, 1, 2, 3), p).unwrap();
        assert_eq!(cidr(0).netmask(), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(cidr(8).netmask(), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(cidr(24).netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(cidr(31).netmask(), Ipv4Addr::new(255, 255, 255, 254));
        assert_eq!(cidr(32).netmask(), Ipv4Addr::new(255, 255, 255, 255));
        assert!(cidr(24).contains(Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!cidr(24).contains(Ipv4Addr::new(10, 1, 3, 1)));
        assert!(cidr(0).contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(cidr(24).to_string(), "10.1.2.3/24");
    }
}
