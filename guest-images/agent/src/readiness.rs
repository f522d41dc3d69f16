//! The readiness report: the one line the host waits for on the console.
//!
//! Format (CONTRACT.md):
//! `NIMBUS_READY uptime_s=<f64> cpus=<online cpus> mem_total_kib=<MemTotal> version=<agent version>`

use std::fmt;
use std::io;
use std::path::Path;

use crate::console::Console;
use crate::small_file::read_once;

/// What the readiness line reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// Seconds since boot.
    pub uptime_s: f64,
    /// Online CPUs.
    pub cpus: u32,
    /// `MemTotal` from `/proc/meminfo`, KiB.
    pub mem_total_kib: u64,
    /// The agent's version.
    pub version: &'static str,
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NIMBUS_READY uptime_s={:.2} cpus={} mem_total_kib={} version={}",
            self.uptime_s, self.cpus, self.mem_total_kib, self.version
        )
    }
}

impl Readiness {
    /// Gathers the figures from procfs/sysfs, falling back to syscalls when a
    /// file is missing (each fallback is reported as a `NIMBUS_ERROR`).
    pub fn gather(console: &mut Console) -> Self {
        let mut buf = [0u8; 512];
        let uptime_s = match read_once(Path::new("/proc/uptime"), &mut buf).map(parse_uptime) {
            Ok(Some(up)) => up,
            other => {
                console.error("readiness /proc/uptime", describe(other));
                boottime_s()
            }
        };
        let cpus = match read_once(Path::new("/sys/devices/system/cpu/online"), &mut buf)
            .map(parse_cpu_list)
        {
            Ok(Some(n)) => n,
            other => {
                console.error("readiness /sys/devices/system/cpu/online", describe(other));
                // SAFETY: sysconf has no memory effects.
                let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
                u32::try_from(n).unwrap_or(0)
            }
        };
        // MemTotal is the first line: a small buffer and one read suffice.
        let mem_total_kib =
            match read_once(Path::new("/proc/meminfo"), &mut buf).map(parse_mem_total) {
                Ok(Some(kib)) => kib,
                other => {
                    console.error("readiness /proc/meminfo", describe(other));
                    sysinfo_total_kib()
                }
            };
        Self {
            uptime_s,
            cpus,
            mem_total_kib,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

fn describe<T>(outcome: io::Result<Option<T>>) -> String {
    match outcome {
        Ok(_) => "unexpected content; using a syscall instead".to_owned(),
        Err(err) => format!("{err}; using a syscall instead"),
    }
}

fn boottime_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call fills in.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn sysinfo_total_kib() -> u64 {
    // SAFETY: sysinfo is plain old data; all-zero is a valid value.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid sysinfo struct the call fills in.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return 0;
    }
    info.totalram.saturating_mul(u64::from(info.mem_unit)) / 1024
}

/// First field of `/proc/uptime` ("12.34 5.67\n").
pub fn parse_uptime(text: &str) -> Option<f64> {
    let up: f64 = text.split_whitespace().next()?.parse().ok()?;
    (up.is_finite() && up >= 0.0).then_some(up)
}

/// Number of CPUs in a kernel CPU list such as "0-3,5,7-8\n".
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut count: u32 = 0;
    for range in text.split(',') {
        let n = match range.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
                hi.checked_sub(lo)?.checked_add(1)?
            }
            None => {
                range.parse::<u32>().ok()?;
                1
            }
        };
        count = count.checked_add(n)?;
    }
    Some(count)
}

/// `MemTotal` in KiB from `/proc/meminfo` content (possibly truncated after
/// the first lines).
pub fn parse_mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let kib = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_is_the_contract() {
        let r = Readiness {
            uptime_s: 73.456,
            cpus: 1,
            mem_total_kib: 118_520,
            version: "0.1.0",
        };
        assert_eq!(
            r.to_string(),
            "NIMBUS_READY uptime_s=73.46 cpus=1 mem_total_kib=118520 version=0.1.0"
        );
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime("12.34 5.67\n"), Some(12.34));
        assert_eq!(parse_uptime("0.00 0.00"), Some(0.0));
        for bad in ["", "\n", "abc 1", "-1 2", "NaN 1", "inf 1"] {
            assert_eq!(parse_uptime(bad), None, "{bad}");
        }
    }

    #[test]
    fn cpu_list() {
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(7));
        for bad in ["", "\n", "3-1", "a", "0-", "0,,1", "0-4294967295,0"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad}");
        }
    }

    #[test]
    fn mem_total() {
        let meminfo = "MemTotal:         118520 kB\nMemFree:          100000 kB\nMemAv";
        assert_eq!(parse_mem_total(meminfo), Some(118_520));
        assert_eq!(parse_mem_total("MemFree: 1 kB\nMemTotal: 2 kB\n"), Some(2));
        for bad in [
            "",
            "MemTotal:",
            "MemTotal: x kB",
            "MemTotal: 12 MB",
            "MemTotal: 12",
        ] {
            assert_eq!(parse_mem_total(bad), None, "{bad}");
        }
    }
}
