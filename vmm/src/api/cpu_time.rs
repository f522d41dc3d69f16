//! CPU time of the VMM process and of single threads, for `status`.

/// CPU seconds used by the whole process.
pub fn process_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU seconds used by thread `tid` of this process: from schedstat
/// (nanoseconds), else from stat (clock ticks). `None` if the thread is gone.
pub fn thread_cpu_s(tid: libc::pid_t) -> Option<f64> {
    let base = format!("/proc/self/task/{tid}");
    if let Ok(text) = std::fs::read_to_string(format!("{base}/schedstat")) {
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return Some(ns as f64 / 1e9);
        }
    }
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_s())
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime from a /proc/.../stat line. The command name (field 2)
/// may contain spaces and parentheses: fields are counted after the last ')'.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_times() {
        let busy = std::time::Instant::now();
        while busy.elapsed().as_millis() < 30 {}
        assert!(process_cpu_s() > 0.0);
        // SAFETY: gettid cannot fail.
        let me = unsafe { libc::gettid() };
        assert!(thread_cpu_s(me).unwrap() > 0.0);
        assert_eq!(thread_cpu_s(i32::MAX), None);
        let line = "42 (a b) c) S 1 1 1 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }
}
