//! `--check-cmdline "<string>"`: parse a command line and print what the
//! agent would do, touching nothing. Safe on any host; used by tests.

use crate::cmdline::{self, BootConfig};

/// What PID 1 would do for `config`, one step per line.
pub fn plan_lines(config: &BootConfig) -> Vec<String> {
    let mut lines = vec![
        "plan: mount proc on /proc, sysfs on /sys, devtmpfs on /dev".to_owned(),
        "plan: link lo up".to_owned(),
    ];
    for nic in &config.nets {
        lines.push(format!(
            "plan: net {} address {} netmask {} up",
            nic.ifname,
            nic.addr,
            nic.addr.netmask()
        ));
        if let Some(gw) = nic.gateway {
            lines.push(format!("plan: net {} default route via {gw}", nic.ifname));
        }
    }
    for disk in &config.disks {
        lines.push(format!(
            "plan: mount {} (ext4) on {}",
            disk.device.display(),
            disk.mountpoint.display()
        ));
    }
    lines.push("plan: print NIMBUS_READY".to_owned());
    lines.push(
        if config.poweroff {
            "plan: sync and power off"
        } else if config.shell {
            "plan: start /bin/sh on the console, then reap children forever"
        } else {
            "plan: reap children forever"
        }
        .to_owned(),
    );
    lines
}

/// Prints the `NIMBUS_ERROR` lines and the plan for `cmdline` on stdout.
/// Returns the process exit code: 0 when every `nimbus.` parameter was valid.
pub fn run(cmdline: &str) -> i32 {
    let (config, errors) = cmdline::parse(cmdline);
    for err in &errors {
        println!("NIMBUS_ERROR agent: {err}");
    }
    for line in plan_lines(&config) {
        println!("{line}");
    }
    i32::from(!errors.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_for_a_full_command_line() {
        let (config, _) = cmdline::parse(
            "nimbus.net=eth0,10.0.0.2/24,gw=10.0.0.1 nimbus.disk=/dev/vdb,/mnt/data nimbus.poweroff=1",
        );
        assert_eq!(
            plan_lines(&config),
            vec![
                "plan: mount proc on /proc, sysfs on /sys, devtmpfs on /dev",
                "plan: link lo up",
                "plan: net eth0 address 10.0.0.2/24 netmask 255.255.255.0 up",
                "plan: net eth0 default route via 10.0.0.1",
                "plan: mount /dev/vdb (ext4) on /mnt/data",
                "plan: print NIMBUS_READY",
                "plan: sync and power off",
            ]
        );
    }

    #[test]
    fn plan_without_parameters_stays_up() {
        let lines = plan_lines(&BootConfig::default());
        assert_eq!(
            lines.last().map(String::as_str),
            Some("plan: reap children forever")
        );
    }
}
