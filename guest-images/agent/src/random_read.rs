//! `randread PATH N`: N reads of 4 KiB at pseudo-random 4 KiB-aligned
//! offsets with O_DIRECT (no guest page cache), timed inside the guest, for
//! the 4 KiB random-read IOPS figure of `scripts/bench/blk.sh`.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

const BLOCK: usize = 4096;

/// A 4 KiB buffer aligned for O_DIRECT.
#[repr(C, align(4096))]
struct Aligned([u8; BLOCK]);

/// Runs the reads; answers `OK ops=N secs=S iops=X`.
pub fn random_read(path: &str, ops: u64) -> io::Result<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let blocks = file.metadata().map(|m| m.len())?;
    // Block devices report length 0 in metadata: ask for their end instead.
    let size = if blocks == 0 {
        use std::io::Seek;
        (&file).seek(io::SeekFrom::End(0))?
    } else {
        blocks
    };
    let count = size / BLOCK as u64;
    if count == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "smaller than one 4 KiB block",
        ));
    }
    let mut buf = Box::new(Aligned([0; BLOCK]));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let start = Instant::now();
    for _ in 0..ops {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = (x % count) * BLOCK as u64;
        file.read_exact_at(&mut buf.0, offset)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let iops = if secs > 0.0 { ops as f64 / secs } else { 0.0 };
    Ok(format!("OK ops={ops} secs={secs:.3} iops={iops:.0}"))
}
