//! The load balancer's data path: a userspace L4 proxy inside netd's
//! process. TCP runs on one single-threaded runtime per core, all
//! accepting on the rule's listener ([`workers`], HAProxy's model); UDP,
//! probes and the metrics endpoint run on netd's main runtime.
//!
//! [`Balancer::reconcile`] makes the running listeners, pools and probes
//! match the committed state after every change (and at start); the
//! frontend address is put on the host by [`crate::host::realize`] (the
//! VNet's bridge for an internal frontend, `lo` for a public one).
//!
//! # How backends learn the client's address
//!
//! TCP is proxied: the client's connection ends in netd and netd opens one
//! to the backend, from the host, whose source is the subnet's gateway
//! address. That is what Azure's `AzureLoadBalancer` service tag means to
//! an NSG, so the default rule `AllowAzureLoadBalancerInBound` lets flows
//! and probes in even where a user rule denies the rest of the VNet.
//!
//! The client's address is handed over with the PROXY protocol v2, opt-in
//! per rule (`proxy_protocol`), as HAProxy, nginx and Envoy do. The
//! alternative, transparent proxying (IP_TRANSPARENT on the backend socket
//! with the client's address as source, plus TPROXY/policy routing so the
//! replies come back to the proxy), was not chosen: the backend's replies
//! to a client address must be steered back into netd by marks and a
//! routing table on every path (including hairpin clients in the same
//! VNet, whose replies would otherwise be bridged straight to the client
//! and reset), NSG rules would see client addresses instead of the
//! AzureLoadBalancer tag, and it breaks in the same way whenever a guest
//! has its own route to the client. PROXY v2 is explicit, works for every
//! topology and costs one 28-byte write per connection.
//!
//! UDP is relayed per session (client address), see [`udp`]; with
//! `proxy_protocol` every datagram to the backend starts with a PROXY v2
//! header (transport DGRAM), since a datagram has no connection to send
//! it once on.
//!
//! # Health
//!
//! A rule's probe ([`probe`]) takes a backend out after its unhealthy
//! threshold of failed probes and brings it back after one that passes.
//! Passive checking ([`passive`], on by default per probe) takes a TCP
//! backend out sooner, after as many failed connection attempts in a row
//! of the data path; the probe brings it back the same way.
//!
//! # Draining
//!
//! A member removed from a pool is marked draining: it stays in the pool
//! (so the consistent-hash table of the others does not change) but gets
//! no new flows; its open connections and UDP sessions go on until they
//! end, and then it is dropped. Deleting a rule or a load balancer closes
//! its connections.

pub mod maglev;
pub mod metrics;
pub mod passive;
pub mod probe;
pub mod proxy_header;
pub mod select;
mod tcp;
mod udp;
pub mod workers;

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::error::NetError;
use crate::model::{Algorithm, LbProtocol, Name, Probe};
use crate::state::State;
use metrics::Counters;
use passive::Passive;
use probe::Health;
use select::{Backend, Pool};

/// What a running rule was started with; a change restarts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSettings {
    /// TCP or UDP.
    pub protocol: LbProtocol,
    /// Backend port.
    pub backend_port: u16,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// PROXY v2 header to backends.
    pub proxy_protocol: bool,
    /// Probe name.
    pub probe: Option<Name>,
}

/// One load-balancing rule at run time.
pub struct RuleRuntime {
    /// Load balancer.
    pub lb: Name,
    /// Rule.
    pub rule: Name,
    /// Frontend address and port.
    pub frontend: SocketAddrV4,
    /// Settings.
    pub settings: RuleSettings,
    /// Frontend counters.
    pub counters: Counters,
    pool: RwLock<Arc<Pool>>,
    /// Bumped after every pool swap, so that accept loops can keep their
    /// own copy of the pool and look at the lock only when it changed.
    pool_generation: AtomicU64,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RuleRuntime {
    /// The current pool view.
    pub fn pool(&self) -> Arc<Pool> {
        self.pool
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn set_pool(&self, pool: Pool) {
        let mut slot = self.pool.write().unwrap_or_else(|e| e.into_inner());
        *slot = Arc::new(pool);
        self.pool_generation.fetch_add(1, Ordering::Release);
    }

    fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

/// A pool member as `reconcile` wants it.
struct Member {
    nic: Name,
    addr: SocketAddrV4,
    weight: u32,
    /// The probe's verdict (None: no probe).
    health: Option<Arc<Health>>,
    /// Passive checking's threshold (None: off).
    passive: Option<u32>,
}

/// (load balancer, probe, backend address): one probe task each.
type ProbeKey = (Name, Name, SocketAddrV4);

struct ProbeRuntime {
    probe: Probe,
    health: Arc<Health>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Inner {
    rules: BTreeMap<(Name, Name), Arc<RuleRuntime>>,
    probes: BTreeMap<ProbeKey, ProbeRuntime>,
}

/// All running load balancers.
pub struct Balancer {
    inner: Mutex<Inner>,
    workers: workers::Workers,
}

fn bind_error(frontend: SocketAddrV4, e: std::io::Error) -> NetError {
    NetError::host(format!("listening on the frontend {frontend}"), e)
}

/// A rule's listener. Bound here, so that a bind failure fails the
/// change; every data-path thread accepts on its own duplicate of it and
/// registers that with its runtime ([`tcp::serve`]).
fn tcp_listener(addr: SocketAddrV4) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    // The address may still be on its way onto the bridge or lo.
    s.set_freebind_v4(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    s.listen(4096)?;
    Ok(s.into())
}

fn udp_socket(addr: SocketAddrV4) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    s.set_freebind_v4(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

impl Balancer {
    /// No load balancers yet; the TCP data path's threads (one per core,
    /// [`workers`]) are started and idle.
    pub fn new() -> Arc<Self> {
        Arc::new(Balancer {
            inner: Mutex::default(),
            workers: workers::Workers::per_core(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Running rules.
    pub fn rules(&self) -> Vec<Arc<RuleRuntime>> {
        self.lock().rules.values().cloned().collect()
    }

    /// Makes the running data path match `state`. Must run inside the
    /// tokio runtime. Fails only when a frontend cannot be bound; the
    /// caller then reconciles back to the previous state.
    pub fn reconcile(&self, state: &State) -> Result<(), NetError> {
        let mut inner = self.lock();

        // Probes: one task per (lb, probe, backend address).
        let mut wanted_probes: BTreeMap<ProbeKey, Probe> = BTreeMap::new();
        for lb in &state.load_balancers {
            for rule in &lb.rules {
                let (Some(pname), Some(pool)) = (&rule.probe, lb.pool(&rule.pool)) else {
                    continue;
                };
                let Some(probe) = lb.probe(pname) else {
                    continue;
                };
                for m in &pool.members {
                    if let Ok(nic) = state.nic(&m.nic) {
                        let addr = SocketAddrV4::new(nic.ip, probe.port);
                        wanted_probes.insert((lb.name.clone(), pname.clone(), addr), probe.clone());
                    }
                }
            }
        }
        let stale: Vec<ProbeKey> = inner
            .probes
            .iter()
            .filter(|(k, p)| wanted_probes.get(*k) != Some(&p.probe))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(p) = inner.probes.remove(&k) {
                p.task.abort();
            }
        }
        // A probe that already watches other backends of its pool means
        // the pool is in service: a backend joining it starts down
        // (`Health::pending`). Backends of a new pool or probe start up,
        // so that a new load balancer serves at once.
        let in_service: std::collections::BTreeSet<(Name, Name)> = inner
            .probes
            .keys()
            .map(|(lb, p, _)| (lb.clone(), p.clone()))
            .collect();
        for (k, probe) in wanted_probes {
            if inner.probes.contains_key(&k) {
                continue;
            }
            let health = Arc::new(if in_service.contains(&(k.0.clone(), k.1.clone())) {
                Health::pending()
            } else {
                Health::probed()
            });
            let task = tokio::spawn(probe::run(probe.clone(), k.2, health.clone()));
            inner.probes.insert(
                k,
                ProbeRuntime {
                    probe,
                    health,
                    task,
                },
            );
        }

        // Rules.
        let mut wanted = BTreeMap::new();
        for lb in &state.load_balancers {
            let Some(ip) = state.lb_frontend_ip(lb) else {
                continue;
            };
            for rule in &lb.rules {
                let settings = RuleSettings {
                    protocol: rule.protocol,
                    backend_port: rule.backend_port,
                    algorithm: rule.algorithm,
                    idle_timeout: Duration::from_secs(u64::from(rule.idle_timeout_seconds)),
                    proxy_protocol: rule.proxy_protocol,
                    probe: rule.probe.clone(),
                };
                let frontend = SocketAddrV4::new(ip, rule.frontend_port);
                let mut members = Vec::new();
                for m in lb
                    .pool(&rule.pool)
                    .map(|p| p.members.as_slice())
                    .unwrap_or_default()
                {
                    let Ok(nic) = state.nic(&m.nic) else {
                        continue;
                    };
                    let probed = rule.probe.as_ref().and_then(|p| {
                        let addr = SocketAddrV4::new(nic.ip, lb.probe(p)?.port);
                        inner.probes.get(&(lb.name.clone(), p.clone(), addr))
                    });
                    let health = probed.map(|p| p.health.clone());
                    let passive = probed
                        .filter(|p| p.probe.passive && rule.protocol == LbProtocol::Tcp)
                        .map(|p| p.probe.unhealthy_threshold);
                    members.push(Member {
                        nic: m.nic.clone(),
                        addr: SocketAddrV4::new(nic.ip, rule.backend_port),
                        weight: m.weight.0,
                        health,
                        passive,
                    });
                }
                wanted.insert(
                    (lb.name.clone(), rule.name.clone()),
                    (frontend, settings, members),
                );
            }
        }
        let gone: Vec<(Name, Name)> = inner
            .rules
            .iter()
            .filter(|(k, r)| {
                wanted
                    .get(*k)
                    .is_none_or(|(f, s, _)| *f != r.frontend || *s != r.settings)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(r) = inner.rules.remove(&k) {
                info!(lb = %k.0, rule = %k.1, "stopping rule");
                r.shutdown();
            }
        }
        for (key, (frontend, settings, members)) in wanted {
            let existing = inner.rules.get(&key).cloned();
            let old = existing.as_ref().map(|r| r.pool());
            let mut list: Vec<Arc<Backend>> = Vec::new();
            for m in members {
                let reuse = old.as_ref().and_then(|p| {
                    p.members.iter().find(|b| {
                        b.nic == m.nic
                            && b.addr == m.addr
                            && b.weight == m.weight
                            && !b.draining.load(Ordering::Relaxed)
                            && match &m.health {
                                Some(h) => Arc::ptr_eq(h, &b.health),
                                None => true,
                            }
                    })
                });
                list.push(match reuse {
                    Some(b) => b.clone(),
                    None => Arc::new(Backend {
                        nic: m.nic,
                        addr: m.addr,
                        weight: m.weight,
                        health: m.health.unwrap_or_else(|| Arc::new(Health::up())),
                        draining: AtomicBool::new(false),
                        counters: Counters::default(),
                        passive: Passive::new(m.passive),
                    }),
                });
            }
            // Members that left drain while they still have flows.
            if let Some(old) = &old {
                for b in &old.members {
                    if !list.iter().any(|x| Arc::ptr_eq(x, b)) && b.counters.active() > 0 {
                        b.draining.store(true, Ordering::Relaxed);
                        list.push(b.clone());
                    }
                }
            }
            match existing {
                Some(rule) => {
                    let same = old.is_some_and(|o| {
                        o.members.len() == list.len()
                            && o.members.iter().zip(&list).all(|(a, b)| Arc::ptr_eq(a, b))
                    });
                    if !same {
                        rule.set_pool(Pool::new(list));
                    }
                }
                None => {
                    let rule = self.start_rule(key.clone(), frontend, settings, list)?;
                    inner.rules.insert(key, rule);
                }
            }
        }
        Ok(())
    }

    fn start_rule(
        &self,
        (lb, rule): (Name, Name),
        frontend: SocketAddrV4,
        settings: RuleSettings,
        members: Vec<Arc<Backend>>,
    ) -> Result<Arc<RuleRuntime>, NetError> {
        let (stop, stop_rx) = watch::channel(false);
        let rt = Arc::new(RuleRuntime {
            lb,
            rule,
            frontend,
            settings,
            counters: Counters::default(),
            pool: RwLock::new(Arc::new(Pool::new(members))),
            pool_generation: AtomicU64::new(0),
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = match rt.settings.protocol {
            LbProtocol::Tcp => {
                // One listening socket that every thread accepts on
                // (rather than one SO_REUSEPORT socket each): whichever
                // thread is free takes the next connection, as with
                // HAProxy's shared listener, instead of a hash sending it
                // to a busy one. Duplicated before any starts, so that a
                // failure leaves nothing behind.
                let lanes = self.workers.lanes();
                let listener = tcp_listener(frontend).map_err(|e| bind_error(frontend, e))?;
                let mut listeners = Vec::with_capacity(lanes.len());
                for _ in &lanes {
                    listeners.push(listener.try_clone().map_err(|e| bind_error(frontend, e))?);
                }
                drop(listener);
                lanes
                    .into_iter()
                    .zip(listeners)
                    .map(|((h, lane), l)| h.spawn(tcp::serve(rt.clone(), l, lane)))
                    .collect()
            }
            LbProtocol::Udp => {
                let s = udp_socket(frontend).map_err(|e| bind_error(frontend, e))?;
                vec![tokio::spawn(udp::serve(rt.clone(), Arc::new(s), stop_rx))]
            }
        };
        if let Ok(mut t) = rt.tasks.lock() {
            *t = tasks;
        }
        info!(lb = %rt.lb, rule = %rt.rule, %frontend, protocol = %rt.settings.protocol, "rule listening");
        Ok(rt)
    }

    /// Drops draining members that have no flows left.
    pub fn prune_drained(&self) {
        for rule in self.rules() {
            let pool = rule.pool();
            let done =
                |b: &Arc<Backend>| b.draining.load(Ordering::Relaxed) && b.counters.active() == 0;
            if pool.members.iter().any(done) {
                let keep: Vec<Arc<Backend>> =
                    pool.members.iter().filter(|b| !done(b)).cloned().collect();
                rule.set_pool(Pool::new(keep));
            }
        }
    }

    /// Adds the data path's view to an `lb show` result: per rule, the
    /// frontend counters and each backend's probe state and counters; per
    /// probe, each backend's state.
    pub fn annotate(&self, view: &mut Value) {
        let Some(lb) = view["name"].as_str().and_then(|n| n.parse::<Name>().ok()) else {
            return;
        };
        let inner = self.lock();
        if let Some(rules) = view["rules"].as_array_mut() {
            for r in rules {
                let Some(name) = r["name"].as_str().and_then(|n| n.parse::<Name>().ok()) else {
                    continue;
                };
                let Some(rt) = inner.rules.get(&(lb.clone(), name)) else {
                    continue;
                };
                r["frontend"] = json!(rt.frontend.to_string());
                r["counters"] = json!(rt.counters.snapshot());
                r["backends"] = rt
                    .pool()
                    .members
                    .iter()
                    .map(|b| {
                        let mut v = b.health.view();
                        v["nic"] = json!(b.nic);
                        v["address"] = json!(b.addr.to_string());
                        v["weight"] = json!(b.weight);
                        v["draining"] = json!(b.draining.load(Ordering::Relaxed));
                        v["passive"] = json!(b.passive.is_on());
                        v["passive_downs"] = json!(b.passive.downs());
                        v["counters"] = json!(b.counters.snapshot());
                        v
                    })
                    .collect();
            }
        }
        if let Some(probes) = view["probes"].as_array_mut() {
            for p in probes {
                let Some(name) = p["name"].as_str().and_then(|n| n.parse::<Name>().ok()) else {
                    continue;
                };
                p["backends"] = inner
                    .probes
                    .iter()
                    .filter(|(k, _)| k.0 == lb && k.1 == name)
                    .map(|(k, rt)| {
                        let mut v = rt.health.view();
                        v["address"] = json!(k.2.to_string());
                        v
                    })
                    .collect();
            }
        }
    }

    /// Stops everything (daemon shutdown).
    pub fn stop_all(&self) {
        let mut inner = self.lock();
        for (_, r) in std::mem::take(&mut inner.rules) {
            r.shutdown();
        }
        for (_, p) in std::mem::take(&mut inner.probes) {
            p.task.abort();
        }
    }
}
