//! Picking a backend for a new flow: the six algorithms over a pool's
//! members, of which only the available ones (probe up, not draining) are
//! eligible.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::maglev::{mix64, Maglev};
use super::metrics::Counters;
use super::passive::Passive;
use super::probe::Health;
use crate::model::{Algorithm, Name};

/// One pool member as a rule's data path sees it.
#[derive(Debug)]
pub struct Backend {
    /// The NIC.
    pub nic: Name,
    /// NIC address and the rule's backend port.
    pub addr: SocketAddrV4,
    /// Weight (1–100).
    pub weight: u32,
    /// Probe verdict, shared by the rules that use the same probe.
    pub health: Arc<Health>,
    /// Removed from the pool: open flows finish, new ones go elsewhere.
    pub draining: AtomicBool,
    /// Counters.
    pub counters: Counters,
    /// The data path's failed connection attempts in a row.
    pub passive: Passive,
}

impl Backend {
    /// True when new flows may go to this backend.
    pub fn available(&self) -> bool {
        self.health.is_up() && !self.draining.load(Ordering::Relaxed)
    }
}

/// The addresses of one flow, as the frontend saw it.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Client.
    pub src: SocketAddr,
    /// Frontend.
    pub dst: SocketAddr,
    /// IP protocol number.
    pub proto: u8,
}

fn ip_bits(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let b = u128::from(a);
            (b as u64) ^ ((b >> 64) as u64)
        }
    }
}

impl Flow {
    /// The hash the algorithm keys on: Azure's 5-tuple, 2-tuple (source
    /// and destination IP) or 3-tuple (plus protocol).
    pub fn hash(&self, algorithm: Algorithm) -> u64 {
        let mut h = mix64(ip_bits(self.src.ip()) ^ 0x9e37_79b9_7f4a_7c15);
        h = mix64(h ^ ip_bits(self.dst.ip()));
        match algorithm {
            Algorithm::SourceIp => h,
            Algorithm::SourceIpProtocol => mix64(h ^ u64::from(self.proto)),
            _ => mix64(
                h ^ u64::from(self.proto)
                    ^ (u64::from(self.src.port()) << 8)
                    ^ (u64::from(self.dst.port()) << 24),
            ),
        }
    }
}

/// A rule's view of its pool: members (draining ones included, so their
/// departure does not reshuffle the others) and the selection state.
#[derive(Debug)]
pub struct Pool {
    /// Members in pool order.
    pub members: Vec<Arc<Backend>>,
    primary: Maglev,
    /// Table over the eligible members, keyed by which were eligible.
    fallback: Mutex<(Vec<bool>, Maglev)>,
    rr: AtomicUsize,
    wrr: Mutex<Vec<i64>>,
}

impl Pool {
    /// Builds the view and its Maglev table.
    pub fn new(members: Vec<Arc<Backend>>) -> Self {
        let keys: Vec<Vec<u8>> = members
            .iter()
            .map(|b| b.addr.to_string().into_bytes())
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let weights: Vec<u32> = members.iter().map(|b| b.weight).collect();
        let primary = Maglev::build(&refs, &weights);
        let all = vec![true; members.len()];
        let fallback = Mutex::new((all, primary.clone()));
        let wrr = Mutex::new(vec![0; members.len()]);
        Pool {
            members,
            primary,
            fallback,
            rr: AtomicUsize::new(0),
            wrr,
        }
    }

    /// Picks a member for `flow`, skipping those in `exclude` (members a
    /// connection attempt just failed on). None when nothing is eligible.
    /// Allocates nothing unless a hash's first choice is unavailable.
    pub fn pick(&self, algorithm: Algorithm, flow: &Flow, exclude: &[usize]) -> Option<usize> {
        let eligible = |i: usize| self.members[i].available() && !exclude.contains(&i);
        let n = self.members.len();
        match algorithm {
            Algorithm::FiveTuple | Algorithm::SourceIp | Algorithm::SourceIpProtocol => {
                let h = flow.hash(algorithm);
                let first = self.primary.lookup(h)?;
                if first < n && eligible(first) {
                    return Some(first);
                }
                let eligible: Vec<bool> = (0..n).map(eligible).collect();
                if !eligible.contains(&true) {
                    return None;
                }
                self.fallback_pick(&eligible, h)
            }
            Algorithm::RoundRobin => {
                let count = (0..n).filter(|i| eligible(*i)).count();
                if count == 0 {
                    return None;
                }
                let k = self.rr.fetch_add(1, Ordering::Relaxed) % count;
                (0..n).filter(|i| eligible(*i)).nth(k)
            }
            Algorithm::WeightedRoundRobin => {
                // nginx's smooth weighted round robin: exact proportions,
                // interleaved rather than in bursts.
                let mut current = self.wrr.lock().unwrap_or_else(|e| e.into_inner());
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for (i, b) in self.members.iter().enumerate() {
                    if !eligible(i) {
                        continue;
                    }
                    let w = i64::from(b.weight);
                    current[i] += w;
                    total += w;
                    if best.is_none_or(|j| current[i] > current[j]) {
                        best = Some(i);
                    }
                }
                if let Some(j) = best {
                    current[j] -= total;
                }
                best
            }
            Algorithm::LeastConnections => {
                // Fewest active flows per unit of weight; ties go round
                // robin so that an idle pool still spreads.
                if n == 0 {
                    return None;
                }
                let start = self.rr.fetch_add(1, Ordering::Relaxed) % n;
                let mut best: Option<(usize, u64, u64)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    if !eligible(i) {
                        continue;
                    }
                    let b = &self.members[i];
                    let active = b.counters.active();
                    let w = u64::from(b.weight.max(1));
                    let better = match best {
                        None => true,
                        Some((_, a2, w2)) => {
                            u128::from(active) * u128::from(w2) < u128::from(a2) * u128::from(w)
                        }
                    };
                    if better {
                        best = Some((i, active, w));
                    }
                }
                best.map(|(i, _, _)| i)
            }
        }
    }

    fn fallback_pick(&self, eligible: &[bool], h: u64) -> Option<usize> {
        let mut cache = self.fallback.lock().unwrap_or_else(|e| e.into_inner());
        let index: Vec<usize> = (0..eligible.len()).filter(|i| eligible[*i]).collect();
        if cache.0 != eligible {
            let keys: Vec<Vec<u8>> = index
                .iter()
                .map(|i| self.members[*i].addr.to_string().into_bytes())
                .collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let weights: Vec<u32> = index.iter().map(|i| self.members[*i].weight).collect();
            *cache = (eligible.to_vec(), Maglev::build(&refs, &weights));
        }
        cache.1.lookup(h).and_then(|k| index.get(k).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn backend(i: u8, weight: u32) -> Arc<Backend> {
        Arc::new(Backend {
            nic: format!("n{i}").parse().unwrap(),
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 4 + i), 80),
            weight,
            health: Arc::new(Health::up()),
            draining: AtomicBool::new(false),
            counters: Counters::default(),
            passive: Passive::default(),
        })
    }

    fn flow(client: u32, port: u16) -> Flow {
        Flow {
            src: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + client)), port),
            dst: "10.0.1.100:80".parse().unwrap(),
            proto: 6,
        }
    }

    #[test]
    fn round_robin_is_exact() {
        let p = Pool::new((0..3).map(|i| backend(i, 1)).collect());
        let picks: Vec<usize> = (0..9)
            .map(|i| p.pick(Algorithm::RoundRobin, &flow(i, 1), &[]).unwrap())
            .collect();
        for b in 0..3 {
            assert_eq!(picks.iter().filter(|x| **x == b).count(), 3);
        }
    }

    #[test]
    fn weighted_round_robin_is_proportional_and_smooth() {
        let p = Pool::new(vec![backend(0, 5), backend(1, 1), backend(2, 1)]);
        let picks: Vec<usize> = (0..7)
            .map(|i| {
                p.pick(Algorithm::WeightedRoundRobin, &flow(i, 1), &[])
                    .unwrap()
            })
            .collect();
        assert_eq!(picks.iter().filter(|x| **x == 0).count(), 5);
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn least_connections_prefers_the_idle() {
        let p = Pool::new((0..3).map(|i| backend(i, 1)).collect());
        p.members[0].counters.open();
        p.members[0].counters.open();
        p.members[2].counters.open();
        for _ in 0..5 {
            assert_eq!(
                p.pick(Algorithm::LeastConnections, &flow(1, 1), &[]),
                Some(1)
            );
        }
    }

    #[test]
    fn hashing_is_stable_and_keys_on_the_tuple() {
        let p = Pool::new((0..4).map(|i| backend(i, 1)).collect());
        for c in 0..50 {
            let a = p.pick(Algorithm::FiveTuple, &flow(c, 1000), &[]);
            assert_eq!(a, p.pick(Algorithm::FiveTuple, &flow(c, 1000), &[]));
            // Source-IP affinity ignores the port.
            let s = p.pick(Algorithm::SourceIp, &flow(c, 1000), &[]);
            assert_eq!(s, p.pick(Algorithm::SourceIp, &flow(c, 2000), &[]));
        }
        let spread: std::collections::BTreeSet<_> = (0..200)
            .filter_map(|port| p.pick(Algorithm::FiveTuple, &flow(1, port), &[]))
            .collect();
        assert_eq!(spread.len(), 4, "one client's flows spread by port");
    }

    #[test]
    fn an_unavailable_backend_moves_only_its_flows() {
        let p = Pool::new((0..5).map(|i| backend(i, 1)).collect());
        let before: Vec<usize> = (0..5000)
            .map(|c| p.pick(Algorithm::SourceIp, &flow(c, 1), &[]).unwrap())
            .collect();
        p.members[3].draining.store(true, Ordering::Relaxed);
        for (c, b) in before.iter().enumerate() {
            let now = p
                .pick(Algorithm::SourceIp, &flow(c as u32, 1), &[])
                .unwrap();
            if *b == 3 {
                assert_ne!(now, 3);
            } else {
                assert_eq!(now, *b, "client {c} moved");
            }
        }
        p.members[3].draining.store(false, Ordering::Relaxed);
        let back: Vec<usize> = (0..5000)
            .map(|c| p.pick(Algorithm::SourceIp, &flow(c, 1), &[]).unwrap())
            .collect();
        assert_eq!(back, before, "flows return when it does");
    }

    #[test]
    fn nothing_eligible_means_none() {
        let p = Pool::new(vec![backend(0, 1)]);
        assert_eq!(p.pick(Algorithm::RoundRobin, &flow(1, 1), &[0]), None);
        assert_eq!(
            Pool::new(vec![]).pick(Algorithm::FiveTuple, &flow(1, 1), &[]),
            None
        );
    }
}
