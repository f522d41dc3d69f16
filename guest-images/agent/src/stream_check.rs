//! The agent's test data: a fixed pseudo-random stream (`Pattern`) and its
//! FNV-1a 64 checksum (`Fnv`). The agent writes, sends and checks this
//! stream; the end-to-end tests on the host generate the same bytes and
//! expect the same checksum.

/// FNV-1a, 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// The checksum as the agent prints it: 16 lower-case hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The data stream: xorshift64 from a fixed seed, 8 bytes per step.
#[derive(Clone, Debug)]
pub struct Pattern {
    state: u64,
}

impl Default for Pattern {
    fn default() -> Self {
        Self::new()
    }
}

impl Pattern {
    pub fn new() -> Self {
        Pattern {
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }
    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// The first `n` bytes of the stream.
pub fn pattern(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    Pattern::new().fill(&mut out);
    out
}

/// The agent's answer for `n` bytes of the stream: `OK bytes=N fnv=H`.
pub fn expected_answer(n: usize) -> String {
    let mut h = Fnv::new();
    h.update(&pattern(n));
    format!("OK bytes={n} fnv={}", h.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // FNV-1a 64 of "a" is a published test vector.
        let mut h = Fnv::new();
        h.update(b"a");
        assert_eq!(h.hex(), "af63dc4c8601ec8c");
        // Fills of whole 8-byte steps continue the stream.
        let mut p = Pattern::new();
        let (mut a, mut b) = ([0u8; 8], [0u8; 16]);
        p.fill(&mut a);
        p.fill(&mut b);
        let whole = pattern(24);
        assert_eq!(whole[..8], a);
        assert_eq!(whole[8..], b);
        assert_ne!(a, [0u8; 8]);
        assert_eq!(
            expected_answer(0),
            format!("OK bytes=0 fnv={}", Fnv::new().hex())
        );
    }
}
