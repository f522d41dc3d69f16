//! The VMM process seen from outside: start it detached, recognise it
//! later by pid + start time, signal it.
//!
//! A started VMM must outlive the CLI and must not become the CLI's zombie
//! when the CLI lives long (`nimbus up`, an autoscaler): it is started with
//! a double fork (the intermediate child calls setsid, forks the VMM and
//! exits at once), so init or the nearest subreaper reaps it, and the CLI
//! learns its pid through a pipe.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Start time of process `pid` (clock ticks since boot, field 22 of
/// /proc/PID/stat) and whether it is a zombie. `None` if there is no such
/// process.
pub fn start_time(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// (start time, zombie) from a /proc/PID/stat line. The command name may
/// hold spaces and parentheses: fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(u64, bool)> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); start time is field 22.
    let state = *fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

/// Whether `pid` is the live (not zombie) process that started at
/// `start_time`.
pub fn is_alive(pid: u32, start_time_ticks: u64) -> bool {
    matches!(start_time(pid), Some((t, false)) if t == start_time_ticks)
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill(2) with a positive pid; no memory is touched.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts `command` in its own session, not as a child of this process;
/// returns its pid once it has exec'd (an exec failure is returned).
pub fn spawn_detached(mut command: Command) -> io::Result<u32> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let write_fd = write_end.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions (setsid, fork, write, _exit).
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => Ok(()), // the grandchild goes on to exec the VMM
                pid => {
                    let bytes = pid.to_ne_bytes();
                    libc::write(write_fd, bytes.as_ptr().cast(), bytes.len());
                    libc::_exit(0)
                }
            }
        });
    }
    // std waits until the grandchild has exec'd (or reports why it could
    // not): its error pipe is inherited by the grandchild.
    let mut child = command.spawn()?;
    drop(write_end);
    let status = child.wait()?;
    let mut pid_bytes = [0u8; 4];
    let mut reader = std::fs::File::from(read_end);
    reader.read_exact(&mut pid_bytes).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("the intermediate process ended ({status}) without a pid: {e}"),
        )
    })?;
    let pid = i32::from_ne_bytes(pid_bytes);
    u32::try_from(pid).map_err(|_| io::Error::other(format!("bad pid {pid}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn stat_parsing() {
        let line =
            "42 (nimbus) vmm)) S 1 42 42 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 3 0 987654 1000 100";
        assert_eq!(parse_stat(line), Some((987654, false)));
        let zombie = "42 (x) Z 1 42 42 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 3 0 55 0 0";
        assert_eq!(parse_stat(zombie), Some((55, true)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn detached_process_is_not_our_child_and_is_recognised() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let pid = spawn_detached(c).unwrap();
        let (start, zombie) = start_time(pid).unwrap();
        assert!(!zombie);
        assert!(is_alive(pid, start));
        assert!(
            !is_alive(pid, start + 1),
            "another start time is another process"
        );
        // Not our child: waitpid says so.
        // SAFETY: waitpid with WNOHANG on a pid; no memory is touched.
        let rc = unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(rc, -1);
        // Another session than ours (that of the intermediate process, so
        // the VMM, not a session leader, can never get a controlling tty).
        // SAFETY: getsid has no memory effects.
        let (theirs, ours) = unsafe { (libc::getsid(pid as i32), libc::getsid(0)) };
        assert!(theirs > 0 && theirs != ours && theirs != pid as i32);
        signal(pid, libc::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_alive(pid, start) {
            assert!(Instant::now() < deadline, "still alive");
            std::thread::sleep(Duration::from_millis(10));
        }
        let e = spawn_detached(Command::new("/nonexistent/binary")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }
}
