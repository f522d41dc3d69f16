//! The interactive shell started with `nimbus.shell=1`.
//!
//! Spawned with `posix_spawn` (glibc uses `clone(CLONE_VM|CLONE_VFORK)`: no
//! copy of the agent's address space, which matters where a fork costs
//! ≈ 230 ms). Busybox's `cttyhack` makes the real console device (ttyS0) the
//! shell's controlling terminal, so Ctrl-C and job control work; without it
//! the plain shell runs.

use std::ffi::CStr;
use std::io;
use std::ptr;

/// argv candidates, tried in order.
const COMMANDS: [&[&CStr]; 2] = [&[c"/bin/cttyhack", c"/bin/sh"], &[c"/bin/sh"]];

const ENV: [&CStr; 4] = [
    c"PATH=/sbin:/bin:/usr/sbin:/usr/bin",
    c"HOME=/",
    c"TERM=vt100",
    c"SHELL=/bin/sh",
];

/// Starts the shell on the console (descriptors 0–2, inherited) in a new
/// session with an empty signal mask. Returns its pid.
pub fn spawn() -> io::Result<libc::pid_t> {
    let mut last_err = io::Error::from_raw_os_error(libc::ENOENT);
    for argv in COMMANDS {
        match spawn_one(argv) {
            Ok(pid) => return Ok(pid),
            Err(err) => last_err = err,
        }
    }
    Err(last_err)
}

fn spawn_one(argv: &[&CStr]) -> io::Result<libc::pid_t> {
    let Some(path) = argv.first() else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(ptr::null_mut());
    let mut env_ptrs: Vec<*mut libc::c_char> = ENV.iter().map(|e| e.as_ptr().cast_mut()).collect();
    env_ptrs.push(ptr::null_mut());

    // SAFETY: the attribute object and signal set live on this stack frame
    // and are initialised by the calls below before use and destroyed after.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawnattr_init(&mut attr))?;
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let flags = libc::POSIX_SPAWN_SETSID | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short;
        let setup = check(libc::posix_spawnattr_setflags(&mut attr, flags))
            .and_then(|()| check(libc::posix_spawnattr_setsigmask(&mut attr, &empty)));
        let mut pid: libc::pid_t = 0;
        let result = setup.and_then(|()| {
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                ptr::null(),
                &attr,
                argv_ptrs.as_ptr(),
                env_ptrs.as_ptr(),
            ))
        });
        libc::posix_spawnattr_destroy(&mut attr);
        result.map(|()| pid)
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
