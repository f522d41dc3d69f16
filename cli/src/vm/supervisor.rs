//! Starting and stopping a VM's nimbus-vmm process.
//!
//! `start` spawns a detached VMM (own session, stdio to files; see
//! `process`), records its pid and start time, and waits until its API
//! answers (and, if asked, for the guest's `NIMBUS_READY` line). `stop`
//! asks the guest to power off through the API (the serial shutdown line,
//! repeated every few seconds in case the guest was still booting and did
//! not read it yet), and kills the VMM with SIGKILL after the timeout;
//! `force` kills at once. A kill is written down as an exit record with
//! outcome `killed`, so the VM shows as stopped, not failed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmm::api::protocol::Request;
use vmm::exit_record::{unix_now_s, ExitRecord, Outcome};

use super::api_client;
use super::disks::guest_device;
use super::error::{io_err, VmError};
use super::nics;
use super::process;
use super::store::{RunRecord, StoredVm, VmDir};
use super::Context;

/// How long `start` waits for the VMM's API socket.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `stop` repeats the shutdown request.
const SHUTDOWN_REPEAT: Duration = Duration::from_secs(5);

/// How to start.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Wait this long for the guest's readiness line (None: do not wait).
    pub wait_ready: Option<Duration>,
    /// Print progress on stderr while waiting.
    pub progress: bool,
}

/// How to stop.
#[derive(Debug, Clone)]
pub struct StopOptions {
    /// Give the guest this long to power off, then kill.
    pub timeout: Duration,
    /// Kill at once.
    pub force: bool,
}

impl Default for StopOptions {
    fn default() -> Self {
        StopOptions {
            timeout: Duration::from_secs(30),
            force: false,
        }
    }
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    WasNotRunning,
    /// The guest powered off.
    Graceful,
    /// It was killed (force, or the timeout passed).
    Killed,
}

/// The live VMM of `dir`, if any: (run record).
pub fn live_run(dir: &VmDir) -> Result<Option<RunRecord>, VmError> {
    Ok(dir
        .run_record()?
        .filter(|r| process::is_alive(r.pid, r.start_time)))
}

/// Whether the VM's VMM process runs.
pub fn is_active(dir: &VmDir) -> Result<bool, VmError> {
    Ok(live_run(dir)?.is_some())
}

/// The complete guest command line for `vm`.
pub fn guest_cmdline(vm: &StoredVm) -> String {
    // The guest agent names itself with it (its HTTP endpoint says which
    // VM answered).
    let mut extra: Vec<String> = vec![format!("nimbus.name={}", vm.spec.name)];
    if vm.root_disk.is_some() {
        extra.push("root=/dev/vda rw init=/init".into());
    }
    let first_data = usize::from(vm.root_disk.is_some());
    for (i, disk) in vm.disks.iter().enumerate() {
        if let Some(mount) = &disk.mount {
            extra.push(format!(
                "nimbus.disk={},{mount}",
                guest_device(first_data + i)
            ));
        }
    }
    for (i, nic) in vm.nics.iter().enumerate() {
        extra.push(nics::agent_parameter(i, nic));
    }
    extra.extend(vm.spec.cmdline.iter().cloned());
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    crate::run::compose_cmdline(vmm::guest_cmdline::host_defaults(), &refs)
}

fn vmm_command(ctx: &Context, dir: &VmDir, vm: &StoredVm) -> Result<Command, VmError> {
    let vmm_path = match &ctx.vmm {
        Some(p) => p.clone(),
        None => crate::run::locate_vmm().map_err(|e| VmError::StartFailed {
            vm: dir.name.clone(),
            reason: format!("{e:#}"),
        })?,
    };
    let mut c = Command::new(vmm_path);
    c.arg("--name")
        .arg(&dir.name)
        .arg("--kernel")
        .arg(&vm.kernel)
        .arg("--cmdline")
        .arg(guest_cmdline(vm))
        .arg("--cpus")
        .arg(vm.spec.vcpus.to_string())
        .arg("--memory")
        .arg(vm.spec.memory_mib.to_string())
        .arg("--serial-output")
        .arg(dir.console_log())
        .arg("--api-socket")
        .arg(dir.api_socket())
        .arg("--console-socket")
        .arg(dir.console_socket())
        .arg("--exit-file")
        .arg(dir.exit_file());
    if let Some(initrd) = &vm.initrd {
        c.arg("--initrd").arg(initrd);
    }
    if let Some(root) = &vm.root_disk {
        c.arg("--disk").arg(format!("{},id=root", root.display()));
    }
    for disk in &vm.disks {
        let mut spec = disk.path.display().to_string();
        if disk.read_only {
            spec.push_str(",ro");
        }
        c.arg("--disk").arg(spec);
    }
    for nic in &vm.nics {
        c.arg("--nic").arg(nics::vmm_option(nic));
    }
    let log_path = dir.vmm_log();
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err(&dir.name, "open", &log_path))?;
    let log2 = log
        .try_clone()
        .map_err(io_err(&dir.name, "open", &log_path))?;
    c.stdin(Stdio::null()).stdout(log).stderr(log2);
    Ok(c)
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// Starts VM `name`. Refused if it runs already.
pub fn start(ctx: &Context, name: &str, opts: &StartOptions) -> Result<(), VmError> {
    let dir = ctx.state.vm(name);
    // The lock covers spawning and the API coming up, not the guest's boot:
    // a `stop` from elsewhere must not wait for readiness.
    let (pid, start_time) = spawn_locked(ctx, &dir)?;
    if let Some(limit) = opts.wait_ready {
        wait_ready(&dir, pid, start_time, limit, opts.progress)?;
    }
    Ok(())
}

fn spawn_locked(ctx: &Context, dir: &VmDir) -> Result<(u32, u64), VmError> {
    let name = dir.name.as_str();
    let mut vm = dir.load()?;
    let _lock = dir.lock()?;
    if is_active(dir)? {
        return Err(VmError::AlreadyRunning(name.to_string()));
    }
    // netd may have re-created a NIC since: ask again.
    let fresh = nics::resolve(&ctx.netd_socket, name, &vm.spec.nics)?;
    if fresh != vm.nics {
        vm.nics = fresh;
        dir.save(&vm)?;
    }
    for (field, path) in [("kernel", Some(&vm.kernel)), ("initrd", vm.initrd.as_ref())] {
        if let Some(p) = path.filter(|p| !p.is_file()) {
            return Err(VmError::Image {
                vm: name.to_string(),
                field,
                path: p.clone(),
                reason: "no longer exists (rebuild the images or re-create the VM)".into(),
            });
        }
    }
    let log = dir.console_log();
    if log.exists() {
        let _ = std::fs::rename(&log, log.with_extension("log.1"));
    }
    for stale in [dir.exit_file(), dir.api_socket(), dir.console_socket()] {
        let _ = std::fs::remove_file(stale);
    }
    let command = vmm_command(ctx, dir, &vm)?;
    let pid = process::spawn_detached(command).map_err(|e| VmError::StartFailed {
        vm: name.to_string(),
        reason: e.to_string(),
    })?;
    let start_time = process::start_time(pid).map(|(t, _)| t).unwrap_or(0);
    dir.save_run_record(&RunRecord {
        pid,
        start_time,
        started_at_unix_s: unix_now_s(),
    })?;
    wait_for_api(dir, pid, start_time)?;
    Ok((pid, start_time))
}

fn ended_reason(dir: &VmDir) -> String {
    let why = match dir.exit_record() {
        Some(r) => format!("{}: {}", r.reason, r.detail),
        None => "it ended without an exit record".into(),
    };
    format!(
        "{why}; {}: {}",
        dir.vmm_log().display(),
        tail(&dir.vmm_log(), 3)
    )
}

fn wait_for_api(dir: &VmDir, pid: u32, start_time: u64) -> Result<(), VmError> {
    let deadline = Instant::now() + API_TIMEOUT;
    loop {
        if api_client::status(&dir.api_socket()).is_ok() {
            return Ok(());
        }
        if !process::is_alive(pid, start_time) {
            return Err(VmError::StartFailed {
                vm: dir.name.clone(),
                reason: ended_reason(dir),
            });
        }
        if Instant::now() > deadline {
            return Err(VmError::StartFailed {
                vm: dir.name.clone(),
                reason: format!(
                    "its API socket {} did not answer within {} s",
                    dir.api_socket().display(),
                    API_TIMEOUT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `NIMBUS_READY` in the console log.
fn wait_ready(
    dir: &VmDir,
    pid: u32,
    start_time: u64,
    limit: Duration,
    progress: bool,
) -> Result<(), VmError> {
    let started = Instant::now();
    let mut next_report = Duration::from_secs(10);
    loop {
        let text = std::fs::read(dir.console_log()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        if let Some(line) = text.lines().find(|l| l.contains("NIMBUS_READY")) {
            if progress {
                eprintln!(
                    "{}: ready after {:.0} s: {}",
                    dir.name,
                    started.elapsed().as_secs_f64(),
                    line.trim()
                );
            }
            return Ok(());
        }
        if !process::is_alive(pid, start_time) {
            return Err(VmError::NotReady {
                vm: dir.name.clone(),
                reason: format!(
                    "the VM ended before it was ready: {}; console: {}",
                    ended_reason(dir),
                    tail(&dir.console_log(), 3)
                ),
            });
        }
        let waited = started.elapsed();
        if waited > limit {
            return Err(VmError::NotReady {
                vm: dir.name.clone(),
                reason: format!(
                    "no NIMBUS_READY on the console within {} s (it keeps running; see `nimbus vm logs {}`); last console line: {}",
                    limit.as_secs(),
                    dir.name,
                    tail(&dir.console_log(), 1)
                ),
            });
        }
        if progress && waited >= next_report {
            let last = tail(&dir.console_log(), 1);
            let last: String = last.chars().take(100).collect();
            eprintln!(
                "{}: waiting for the guest, {} s: {last}",
                dir.name,
                waited.as_secs()
            );
            next_report += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_gone(pid: u32, start_time: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while process::is_alive(pid, start_time) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn kill(dir: &VmDir, run: &RunRecord, why: &str) -> Result<(), VmError> {
    match process::signal(run.pid, libc::SIGKILL) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => return Err(io_err(&dir.name, "kill nimbus-vmm", dir.path.clone())(e)),
    }
    if !wait_gone(run.pid, run.start_time, Duration::from_secs(10)) {
        return Err(VmError::Api {
            vm: dir.name.clone(),
            reason: format!("nimbus-vmm (pid {}) survived SIGKILL for 10 s", run.pid),
        });
    }
    // The VMM may have ended by itself just before: keep its own record.
    if dir.exit_record().is_some_and(|r| r.pid == run.pid) {
        return Ok(());
    }
    let record = ExitRecord {
        pid: run.pid,
        exit_code: None,
        outcome: Outcome::Killed,
        reason: "killed by nimbus vm stop".into(),
        detail: why.to_string(),
        uptime_s: (unix_now_s() - run.started_at_unix_s).max(0.0),
        ended_at_unix_s: unix_now_s(),
    };
    record
        .write_atomic(&dir.exit_file())
        .map_err(io_err(&dir.name, "write", dir.exit_file()))
}

/// Stops VM `name`: graceful power-off, SIGKILL after the timeout.
pub fn stop(ctx: &Context, name: &str, opts: &StopOptions) -> Result<Stopped, VmError> {
    let dir = ctx.state.vm(name);
    if !dir.exists() {
        return Err(VmError::NotFound(name.to_string()));
    }
    let _lock = dir.lock()?;
    let Some(run) = live_run(&dir)? else {
        return Ok(Stopped::WasNotRunning);
    };
    let outcome = if opts.force {
        kill(&dir, &run, "--force")?;
        Stopped::Killed
    } else {
        let deadline = Instant::now() + opts.timeout;
        let mut graceful = false;
        while Instant::now() < deadline {
            // Refused or unanswered while the guest still boots: try again.
            let _ = api_client::call_ok(&dir.api_socket(), Request::Shutdown);
            let wait = SHUTDOWN_REPEAT.min(deadline.saturating_duration_since(Instant::now()));
            if wait_gone(run.pid, run.start_time, wait) {
                graceful = true;
                break;
            }
        }
        if graceful {
            Stopped::Graceful
        } else {
            kill(
                &dir,
                &run,
                &format!(
                    "the guest did not power off within {} s",
                    opts.timeout.as_secs()
                ),
            )?;
            Stopped::Killed
        }
    };
    for socket in [dir.api_socket(), dir.console_socket()] {
        let _ = std::fs::remove_file(socket);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::spec::VmSpec;
    use crate::vm::store::{DiskBinding, NicBinding};

    #[test]
    fn cmdline_carries_root_disks_and_nics() {
        let vm = StoredVm {
            spec: VmSpec {
                cmdline: Some("nimbus.serve=7001".into()),
                ..VmSpec::new("a")
            },
            kernel: "/k".into(),
            initrd: None,
            root_disk: Some("/r".into()),
            disks: vec![
                DiskBinding {
                    path: "/d0".into(),
                    read_only: false,
                    mount: Some("/mnt/data0".into()),
                    owned: true,
                },
                DiskBinding {
                    path: "/d1".into(),
                    read_only: true,
                    mount: None,
                    owned: false,
                },
            ],
            nics: vec![NicBinding {
                name: "n".into(),
                tap: "nt-1".into(),
                mac: "02:00:00:00:00:01".into(),
                ip: "10.0.0.4".into(),
                prefix: 24,
                gateway: None,
            }],
            created_at_unix_s: 0.0,
        };
        let c = guest_cmdline(&vm);
        assert!(c.starts_with("console=ttyS0"), "{c}");
        assert!(c.contains(" root=/dev/vda rw init=/init"), "{c}");
        assert!(c.contains(" nimbus.disk=/dev/vdb,/mnt/data0"), "{c}");
        assert!(!c.contains("/dev/vdc"), "{c}");
        assert!(c.contains(" nimbus.net=eth0,10.0.0.4/24"), "{c}");
        assert!(c.ends_with(" nimbus.serve=7001"), "{c}");
        assert!(
            c.contains(&format!(" nimbus.name={} ", vm.spec.name)),
            "{c}"
        );
    }
}
