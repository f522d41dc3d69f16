//! VMs and a scale set brought up by `nimbus up` (real `nimbus-vmm`
//! processes on KVM, NICs from a real netd in a private namespace): a
//! second `up` restarts nothing, fewer replicas delete an instance and
//! take it out of the load balancer's pool, `down` leaves no VMM, no VM
//! and no record. The guests need not finish booting for any of this.
//!
//! Needs root, /dev/kvm, `nimbus-vmm` next to `nimbus` (`cargo build
//! --workspace --bins`) and the default guest images already built
//! (`nimbus image build`); without them the test fails and says what is
//! missing.

mod common;
mod guests;

use common::Host;
use guests::vms;
use serde_json::Value;

const FILE: &str = "name: vmt
vnets:
  app:
    address_space: 10.61.0.0/16
    subnets: {web: {cidr: 10.61.1.0/24}}
public_ips:
  ip: {}
load_balancers:
  web:
    frontend: {public_ip: ip}
    pools: {web: {scale_set: web}}
    rules: {http: {frontend_port: 80, pool: web}}
vms:
  admin: {subnet: web, size: Lab0, tags: {role: admin}}
scale_sets:
  web: {replicas: 2, subnet: web, size: Lab0}
";

#[test]
fn vms_and_scale_sets_come_up_scale_in_and_go_down() {
    // scripts/test.sh builds the images first; a missing prerequisite is
    // a failure, not a skip.
    guests::require_guests();
    let host = Host::new();
    let path = host.dir.join("vmt.yaml");
    std::fs::write(&path, FILE).expect("write file");
    let file = path.to_string_lossy().into_owned();

    let up = host.nimbus_in_ns(&["up", &file]);
    assert_eq!(up.code, Some(0), "{}", up.transcript());
    for vm in ["vmt-admin", "vmt-web-0", "vmt-web-1"] {
        assert!(
            up.stdout.contains(&format!("created vm {vm} (started)")),
            "{}",
            up.transcript()
        );
    }
    let first = vms(&host);
    let names: Vec<&str> = first.iter().map(|(n, _, _, _)| n.as_str()).collect();
    assert_eq!(names, ["vmt-admin", "vmt-web-0", "vmt-web-1"]);
    assert!(
        first
            .iter()
            .all(|(_, s, p, _)| s == "running" && p.is_some()),
        "{first:?}"
    );
    let lb = host.ok(&["lb", "show", "vmt-web", "--output", "json"]);
    let members = |lb: &str| -> usize {
        let v: Value = serde_json::from_str(lb).expect("lb JSON");
        v["pools"][0]["members"]
            .as_array()
            .map(Vec::len)
            .unwrap_or_default()
    };
    assert_eq!(members(&lb.stdout), 2);

    let again = host.nimbus_in_ns(&["up", &file]);
    assert_eq!(again.code, Some(0), "{}", again.transcript());
    assert!(
        again.stdout.contains("up to date, nothing changed"),
        "{}",
        again.transcript()
    );
    assert_eq!(vms(&host), first, "no VM was restarted");

    std::fs::write(&path, FILE.replace("replicas: 2", "replicas: 1")).expect("write file");
    let scaled = host.nimbus_in_ns(&["up", &file]);
    assert_eq!(scaled.code, Some(0), "{}", scaled.transcript());
    assert!(
        scaled.stdout.contains("deleted vm vmt-web-1"),
        "{}",
        scaled.transcript()
    );
    assert!(
        scaled.stdout.contains("-vmt-web-1 from pool web"),
        "{}",
        scaled.transcript()
    );
    let lb = host.ok(&["lb", "show", "vmt-web", "--output", "json"]);
    assert_eq!(members(&lb.stdout), 1);
    assert_eq!(vms(&host).len(), 2);

    let down = host.nimbus_in_ns(&["down", &file]);
    assert_eq!(down.code, Some(0), "{}", down.transcript());
    assert!(vms(&host).is_empty());
    assert!(!host.state_dir().join("topologies/vmt.json").exists());
    // Only netd is left in the namespace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while host.pids().len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        host.pids().len(),
        1,
        "a VMM outlived down: {:?}",
        host.pids()
    );
}
