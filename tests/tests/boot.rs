//! Boots the real guest (our kernel, our agent as PID 1) with the real
//! `nimbus` binary. Each test boots one guest and checks several things in
//! it; the tests run in parallel, guest boots take about a minute here.

mod common;

use std::time::Duration;

use common::{assert_no_crash, images, nimbus, parse_readiness, run_with_deadline};

/// Generous: a boot takes ~1 minute here, longer with parallel guests on 2 cores.
const BOOT_LIMIT: Duration = Duration::from_secs(600);
const MIB: u64 = 1024;

#[test]
fn vmlinux_one_cpu_boots_to_readiness_and_powers_off() {
    let mut command = nimbus();
    command.args([
        "run",
        "--cpus",
        "1",
        "--memory",
        "128M",
        "--cmdline",
        "nimbus.poweroff=1",
    ]);
    let out = run_with_deadline(command, BOOT_LIMIT);
    println!(
        "vmlinux, 1 vCPU, 128 MiB: exit after {:.1} s",
        out.elapsed.as_secs_f64()
    );
    assert_no_crash(&out);
    let ready = parse_readiness(&out.stdout)
        .unwrap_or_else(|| panic!("no readiness line\n{}", out.transcript()));
    assert_eq!(ready.cpus, 1, "{}", out.transcript());
    assert!(
        ready.mem_total_kib > 64 * MIB && ready.mem_total_kib <= 128 * MIB,
        "MemTotal {} KiB does not fit 128 MiB\n{}",
        ready.mem_total_kib,
        out.transcript()
    );
    assert!(ready.uptime_s > 0.0);
    assert_eq!(
        out.code,
        Some(0),
        "power-off must exit 0\n{}",
        out.transcript()
    );
}

#[test]
fn bzimage_two_cpus_reports_cpus_and_memory() {
    let images = images();
    let mut command = nimbus();
    command
        .args(["run", "--cpus", "2", "--memory", "256M", "--kernel"])
        .arg(&images.bzimage)
        .arg("--initrd")
        .arg(&images.initramfs)
        .args(["--cmdline", "nimbus.poweroff=1"]);
    let out = run_with_deadline(command, BOOT_LIMIT);
    println!(
        "bzImage, 2 vCPUs, 256 MiB: exit after {:.1} s",
        out.elapsed.as_secs_f64()
    );
    assert_no_crash(&out);
    let ready = parse_readiness(&out.stdout)
        .unwrap_or_else(|| panic!("no readiness line\n{}", out.transcript()));
    assert_eq!(ready.cpus, 2, "{}", out.transcript());
    assert!(
        ready.mem_total_kib > 192 * MIB && ready.mem_total_kib <= 256 * MIB,
        "MemTotal {} KiB does not fit 256 MiB\n{}",
        ready.mem_total_kib,
        out.transcript()
    );
    assert_eq!(
        out.code,
        Some(0),
        "power-off must exit 0\n{}",
        out.transcript()
    );
}
