//! Drives the real binary in its host-safe modes: `--check-cmdline` (parse
//! and print the plan) and the refusal to run as anything but PID 1.

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nimbus-agent"))
        .args(args)
        .output()
        .expect("run nimbus-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn contract_command_line_gives_the_plan() {
    let (code, stdout, _) = agent(&[
        "--check-cmdline",
        "console=ttyS0 reboot=k panic=-1 rdinit=/init nimbus.net=eth0,10.0.0.2/24,gw=10.0.0.1 nimbus.poweroff=1",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains("NIMBUS_ERROR"), "{stdout}");
    assert!(stdout.contains("plan: net eth0 address 10.0.0.2/24 netmask 255.255.255.0 up\n"));
    assert!(stdout.contains("plan: net eth0 default route via 10.0.0.1\n"));
    assert!(stdout.ends_with("plan: sync and power off\n"), "{stdout}");
}

#[test]
fn garbled_parameters_are_reported_and_skipped() {
    let (code, stdout, _) = agent(&[
        "--check-cmdline",
        "nimbus.net=eth0,10.0.0.300/24 nimbus.bogus=1 nimbus.shell=1",
    ]);
    assert_eq!(code, 1, "{stdout}");
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("NIMBUS_ERROR "))
        .collect();
    assert_eq!(errors.len(), 2, "{stdout}");
    assert!(errors[0].starts_with("NIMBUS_ERROR agent: cmdline `nimbus.net=eth0,10.0.0.300/24`: "));
    assert!(!stdout.contains("plan: net"), "{stdout}");
    assert!(
        stdout.contains("plan: start /bin/sh on the console"),
        "{stdout}"
    );
}

#[test]
fn refuses_to_act_unless_pid_1() {
    let (code, stdout, stderr) = agent(&[]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.contains("not PID 1"), "{stderr}");
}
