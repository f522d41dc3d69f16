//! virtio-blk end to end: a real guest with its root on /dev/vda.
//!
//! One test, three boots of the same root image (a copy of the default
//! rootfs):
//! 1. write a file + fsync; a read-only second disk refuses writes; power off.
//! 2. the file reads back with the same checksum; write a second file +
//!    fsync; then the VMM is killed with SIGKILL (no clean shutdown).
//! 3. the second file is intact; two more disks, capped at 256 KiB/s and
//!    at 10 IOPS, take at least as long to read as their caps allow.

mod common;
mod virtio;

use std::process::Command;

use nimbus_agent::stream_check::expected_answer;
use virtio::{Guest, TempDir};

const FILE_BYTES: usize = 1 << 20;

fn guest_cmd(images: &common::Images, base: &str, disks: &[String], extra: &str) -> Command {
    let mut c = Command::new(virtio::vmm_path());
    c.arg("--kernel")
        .arg(&images.vmlinux)
        .arg("--memory")
        .arg("128")
        .arg("--cmdline")
        .arg(format!("{base} root=/dev/vda rw init=/init {extra}"));
    for d in disks {
        c.arg("--disk").arg(d);
    }
    c
}

#[test]
fn root_disk_persists_across_boots_and_sigkill_ro_refuses_writes() {
    let images = common::images();
    let base = virtio::base_cmdline();
    let dir = TempDir::new("virtio-blk");
    let root = dir.0.join("root.img");
    std::fs::copy(&images.rootfs, &root).expect("copy rootfs");
    let ro = dir.0.join("ro.img");
    std::fs::write(&ro, vec![0x5au8; 64 * 1024]).expect("ro image");
    let disks = vec![
        format!("{},id=root-disk", root.display()),
        format!("{},ro", ro.display()),
    ];
    let want = expected_answer(FILE_BYTES);

    // Boot 1.
    let mut g = Guest::start(
        guest_cmd(
            &images,
            &base,
            &disks,
            &format!(
                "nimbus.run=write:/persist.bin:{FILE_BYTES} nimbus.run=write:/dev/vdb:4096 \
                 nimbus.run=read:/dev/vdb nimbus.poweroff=1"
            ),
        ),
        &dir.0,
        "boot1",
    );
    let line = g.wait_for("NIMBUS_RESULT write /persist.bin");
    assert!(line.ends_with(&want), "{line}\n{}", g.transcript());
    let line = g.wait_for("NIMBUS_RESULT write /dev/vdb");
    assert!(line.contains("ERR"), "read-only disk took a write: {line}");
    let line = g.wait_for("NIMBUS_RESULT read /dev/vdb");
    assert!(line.contains("OK bytes=65536"), "{line}");
    assert_eq!(g.wait_exit(), Some(0), "{}", g.transcript());
    assert!(
        std::fs::read(&ro)
            .expect("ro image")
            .iter()
            .all(|b| *b == 0x5a),
        "read-only image changed"
    );
    assert!(!g.transcript().contains("panicked"), "{}", g.transcript());

    // Boot 2: persistence across power-off, then SIGKILL after fsync.
    let mut g = Guest::start(
        guest_cmd(
            &images,
            &base,
            &disks,
            &format!("nimbus.run=read:/persist.bin nimbus.run=write:/killed.bin:{FILE_BYTES}"),
        ),
        &dir.0,
        "boot2",
    );
    let line = g.wait_for("NIMBUS_RESULT read /persist.bin");
    assert!(line.ends_with(&want), "{line}\n{}", g.transcript());
    let line = g.wait_for("NIMBUS_RESULT write /killed.bin");
    assert!(line.ends_with(&want), "{line}");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(g.child.id() as i32, libc::SIGKILL) };
    let _ = g.child.wait();

    // Boot 3: what was fsynced before the SIGKILL is on the image; and
    // two rate-limited disks hold the guest to their caps (timed inside
    // the guest with O_DIRECT, so no page cache hides the device).
    let capped_bw = dir.0.join("bw.img");
    std::fs::write(&capped_bw, vec![0u8; CAPPED_BYTES]).expect("bw image");
    let capped_iops = dir.0.join("iops.img");
    std::fs::write(&capped_iops, vec![0u8; 1 << 20]).expect("iops image");
    let mut disks3 = disks.clone();
    disks3.push(format!("{},bw={CAP_BW}", capped_bw.display()));
    disks3.push(format!("{},iops={CAP_IOPS}", capped_iops.display()));
    let mut g = Guest::start(
        guest_cmd(
            &images,
            &base,
            &disks3,
            &format!(
                "nimbus.run=read:/killed.bin nimbus.run=dread:/dev/vdc \
                 nimbus.run=randread:/dev/vdd:{CAPPED_OPS} nimbus.poweroff=1"
            ),
        ),
        &dir.0,
        "boot3",
    );
    let line = g.wait_for("NIMBUS_RESULT read /killed.bin");
    assert!(line.ends_with(&want), "{line}\n{}", g.transcript());

    // The bucket starts with one second's worth, then refills at the cap.
    // A request's cost is waited for before the next one, so the last
    // request (at most 1 MiB: `dread` reads 1 MiB at a time) is not.
    let line = g.wait_for("NIMBUS_RESULT dread /dev/vdc");
    let secs = field(&line, "secs");
    let floor = (CAPPED_BYTES as f64 - CAP_BW as f64 - f64::from(1 << 20)) / CAP_BW as f64;
    println!("{CAPPED_BYTES} bytes at bw={CAP_BW}: {secs:.2} s (floor {floor:.1} s): {line}");
    assert!(
        line.contains(&format!("OK bytes={CAPPED_BYTES} ")),
        "{line}"
    );
    assert!(secs >= floor * 0.9, "bandwidth cap not applied: {line}");
    let line = g.wait_for("NIMBUS_RESULT randread /dev/vdd");
    let secs = field(&line, "secs");
    let floor = f64::from(CAPPED_OPS - CAP_IOPS - 1) / f64::from(CAP_IOPS);
    println!("{CAPPED_OPS} reads at iops={CAP_IOPS}: {secs:.2} s (floor {floor:.1} s): {line}");
    assert!(line.contains(&format!("OK ops={CAPPED_OPS} ")), "{line}");
    assert!(secs >= floor * 0.9, "IOPS cap not applied: {line}");
    assert_eq!(g.wait_exit(), Some(0), "{}", g.transcript());
}

/// Size of the bandwidth-capped disk, and its cap in bytes/s: unlimited,
/// this guest reads sequentially at about 2.9 MiB/s (`scripts/bench/blk.sh`).
const CAPPED_BYTES: usize = 2 << 20;
const CAP_BW: u64 = 256 << 10;
/// Random reads on the IOPS-capped disk, and its cap.
const CAPPED_OPS: u32 = 60;
const CAP_IOPS: u32 = 10;

/// The number after `key=` in an agent answer (NaN when missing).
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn image_not_multiple_of_512_is_refused_before_boot() {
    let dir = TempDir::new("virtio-blk-odd");
    let odd = dir.0.join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).expect("image");
    let kernel = dir.0.join("vmlinux");
    std::fs::write(&kernel, b"\x7fELF\x02\x01\x01\0").expect("fake kernel");
    let mut c = Command::new(virtio::vmm_path());
    c.arg("--kernel")
        .arg(&kernel)
        .arg("--disk")
        .arg(odd.display().to_string());
    let out = common::run_with_deadline(c, std::time::Duration::from_secs(30));
    assert_eq!(out.code, Some(2), "{}", out.transcript());
    assert!(
        out.stderr.contains("not a multiple of 512"),
        "{}",
        out.transcript()
    );
}
