//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), written here:
//! the crates that exist are unmaintained or pull in a hasher and a
//! generic backend trait for 60 lines of arithmetic, and none supports
//! weights.
//!
//! Every backend owns a pseudo-random permutation of the table slots
//! (`offset`, `skip` from two hashes of its key); backends take turns
//! claiming their next free preferred slot until the table is full, a
//! backend with weight `w` taking `w` turns per round. A lookup is one
//! index: `table[hash % M]`. Because each backend's preferences do not
//! depend on the others, adding or removing one backend changes few slots
//! that belonged to others (≈ 1/N move on an addition).
//!
//! The data path builds two tables (see [`super::select`]): one over all
//! pool members and one over the currently available ones, used only for
//! flows whose first choice is unavailable. A backend that fails its probe
//! or drains therefore moves exactly its own flows and no others.

/// Table size: a prime well above any pool size (the paper's 65537).
pub const TABLE_SIZE: usize = 65_537;

/// A built lookup table over `n` backends.
#[derive(Debug, Clone)]
pub struct Maglev {
    /// Slot -> backend index; empty when there are no backends.
    table: Vec<u16>,
}

/// 64-bit mix (splitmix64 finalizer): cheap and well distributed.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over bytes, then mixed: the hash of a backend key.
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

impl Maglev {
    /// Builds the table for backends identified by `keys` (stable names,
    /// e.g. the backend address) with `weights` (same length; 0 counts
    /// as 1).
    pub fn build(keys: &[&[u8]], weights: &[u32]) -> Self {
        Self::build_sized(keys, weights, TABLE_SIZE)
    }

    fn build_sized(keys: &[&[u8]], weights: &[u32], m: usize) -> Self {
        let n = keys.len().min(usize::from(u16::MAX));
        if n == 0 {
            return Maglev { table: vec![] };
        }
        let m64 = m as u64;
        let perms: Vec<(u64, u64)> = keys[..n]
            .iter()
            .map(|k| {
                let offset = hash_bytes(k, 0x5eed_0001) % m64;
                let skip = hash_bytes(k, 0x5eed_0002) % (m64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u16::MAX; m];
        let mut filled = 0usize;
        'fill: loop {
            for i in 0..n {
                let turns = weights.get(i).copied().unwrap_or(1).max(1);
                for _ in 0..turns {
                    let (offset, skip) = perms[i];
                    let mut c = (offset + next[i] * skip) % m64;
                    while table[c as usize] != u16::MAX {
                        next[i] += 1;
                        c = (offset + next[i] * skip) % m64;
                    }
                    table[c as usize] = i as u16;
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Maglev { table }
    }

    /// The backend index for flow hash `h`, or None without backends.
    pub fn lookup(&self, h: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(usize::from(
            self.table[(h % self.table.len() as u64) as usize],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("10.0.1.{}:80", i + 4).into_bytes())
            .collect()
    }

    fn build(keys: &[Vec<u8>], weights: &[u32]) -> Maglev {
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        Maglev::build(&refs, weights)
    }

    /// Flow hashes of `flows` distinct flows.
    fn flows(count: u64) -> impl Iterator<Item = u64> {
        (0..count).map(|i| mix64(i ^ 0xabcdef))
    }

    #[test]
    fn every_backend_gets_about_its_share() {
        let k = keys(5);
        let t = build(&k, &[1; 5]);
        let mut counts = [0usize; 5];
        for h in flows(100_000) {
            counts[t.lookup(h).unwrap()] += 1;
        }
        for c in counts {
            assert!((18_000..22_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn weights_shape_the_share() {
        let k = keys(2);
        let t = build(&k, &[3, 1]);
        let a = flows(100_000).filter(|h| t.lookup(*h) == Some(0)).count();
        assert!((73_000..77_000).contains(&a), "{a}");
    }

    /// The data path's fallback: the table over all members stays, flows
    /// whose backend left go to a table over the rest. Exactly the removed
    /// backend's flows move.
    #[test]
    fn removing_a_backend_moves_only_its_flows() {
        let k = keys(6);
        let all = build(&k, &[1; 6]);
        let rest_keys: Vec<Vec<u8>> = k
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, k)| k.clone())
            .collect();
        let rest = build(&rest_keys, &[1; 5]);
        let rest_index = |i: usize| if i < 2 { i } else { i + 1 };
        let (mut moved, mut of_removed) = (0, 0);
        for h in flows(50_000) {
            let before = all.lookup(h).unwrap();
            let after = if before == 2 {
                rest_index(rest.lookup(h).unwrap())
            } else {
                before
            };
            if before == 2 {
                of_removed += 1;
                assert_ne!(after, 2);
            }
            if before != after {
                moved += 1;
            }
        }
        assert_eq!(moved, of_removed, "only the removed backend's flows move");
        assert!(of_removed > 0);
    }

    /// A plain rebuild without the backend (what a restart does) is
    /// Maglev's own guarantee: its flows move, and almost nothing else.
    #[test]
    fn rebuilding_without_a_backend_moves_little_else() {
        let k = keys(6);
        let all = build(&k, &[1; 6]);
        let rest_keys: Vec<Vec<u8>> = k
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, k)| k.clone())
            .collect();
        let rest = build(&rest_keys, &[1; 5]);
        let rest_index = |i: usize| if i < 2 { i } else { i + 1 };
        let total = 50_000;
        let others_moved = flows(total)
            .filter(|h| {
                let before = all.lookup(*h).unwrap();
                before != 2 && rest_index(rest.lookup(*h).unwrap()) != before
            })
            .count();
        assert!(
            others_moved * 100 < total as usize * 2,
            "{others_moved} of {total}"
        );
    }

    #[test]
    fn adding_a_backend_moves_about_one_nth() {
        for n in [3usize, 5, 9] {
            let k = keys(n + 1);
            let before = build(&k[..n], &vec![1; n]);
            let after = build(&k, &vec![1; n + 1]);
            let total = 60_000usize;
            let moved = flows(total as u64)
                .filter(|h| before.lookup(*h) != after.lookup(*h))
                .count();
            let to_new = flows(total as u64)
                .filter(|h| after.lookup(*h) == Some(n))
                .count();
            let ideal = total / (n + 1);
            assert!(
                moved >= ideal * 9 / 10 && moved <= ideal * 12 / 10,
                "n={n}: moved {moved}, ideal {ideal}"
            );
            assert!(
                to_new * 100 >= moved * 90,
                "most moved flows go to the new backend"
            );
        }
    }

    #[test]
    fn empty_and_tiny_tables() {
        assert_eq!(Maglev::build(&[], &[]).lookup(7), None);
        let t = Maglev::build_sized(&[b"a", b"b"], &[1, 1], 7);
        assert!(t.table.iter().all(|b| *b < 2));
    }
}
