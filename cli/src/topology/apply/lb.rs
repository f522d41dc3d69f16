//! A load balancer's pools, probes and rules made to match the file.
//! netd cannot change a probe or a rule in place, so those that differ are
//! deleted and created again, in the order netd's references allow.

use netd::api::protocol::{MemberSpec, Request};

use super::{ApplyError, Executor};
use crate::topology::desired::{Id, PoolV, Spec};

impl Executor<'_> {
    /// Makes a load balancer's pools, probes and rules match: rules and
    /// probes that differ are replaced (netd has no update for them),
    /// pool members are added and removed.
    pub(super) fn lb_children(
        &self,
        id: &Id,
        want: &Spec,
        have: &Spec,
    ) -> Result<Vec<String>, ApplyError> {
        let (
            Spec::Lb {
                pools,
                probes,
                rules,
                ..
            },
            Spec::Lb {
                pools: p2,
                probes: pr2,
                rules: r2,
                ..
            },
        ) = (want, have)
        else {
            return Ok(vec![]);
        };
        let lb = id.name.clone();
        let mut steps = Vec::new();
        let changed_probe = |name: &str| {
            pr2.iter().find(|p| p.name == name) != probes.iter().find(|p| p.name == name)
        };
        let pool_gone = |name: &str| !pools.iter().any(|p| p.name == name);
        // Rules that go or change, and rules that lean on a probe or pool
        // that goes or changes, are deleted first.
        let mut keep_rules = Vec::new();
        for r in r2 {
            let same = rules.iter().any(|w| w == r);
            let leans = r.probe.as_deref().is_some_and(changed_probe) || pool_gone(&r.pool);
            if same && !leans {
                keep_rules.push(r.name.clone());
            } else {
                self.call(
                    id,
                    &Request::LbRuleDelete {
                        lb: lb.clone(),
                        name: r.name.clone(),
                    },
                )?;
                steps.push(format!("-rule {}", r.name));
            }
        }
        for p in pr2 {
            if changed_probe(&p.name) {
                self.call(
                    id,
                    &Request::LbProbeDelete {
                        lb: lb.clone(),
                        name: p.name.clone(),
                    },
                )?;
                steps.push(format!("-probe {}", p.name));
            }
        }
        for p in p2 {
            if pool_gone(&p.name) {
                self.call(
                    id,
                    &Request::LbPoolDelete {
                        lb: lb.clone(),
                        name: p.name.clone(),
                    },
                )?;
                steps.push(format!("-pool {}", p.name));
            }
        }
        for p in pools {
            match p2.iter().find(|x| x.name == p.name) {
                None => {
                    let members = p
                        .members
                        .iter()
                        .map(|n| MemberSpec {
                            nic: n.clone(),
                            weight: None,
                        })
                        .collect();
                    self.call(
                        id,
                        &Request::LbPoolCreate {
                            lb: lb.clone(),
                            name: p.name.clone(),
                            members,
                        },
                    )?;
                    steps.push(format!("+pool {} ({} members)", p.name, p.members.len()));
                }
                Some(old) => steps.extend(self.pool_members(id, p, old)?),
            }
        }
        for p in probes {
            if changed_probe(&p.name) {
                self.call(
                    id,
                    &Request::LbProbeCreate {
                        lb: lb.clone(),
                        probe: p.clone(),
                    },
                )?;
                steps.push(format!("+probe {}", p.name));
            }
        }
        for r in rules {
            if !keep_rules.contains(&r.name) {
                self.call(
                    id,
                    &Request::LbRuleCreate {
                        lb: lb.clone(),
                        rule: r.clone(),
                    },
                )?;
                steps.push(format!("+rule {}", r.name));
            }
        }
        Ok(steps)
    }

    fn pool_members(&self, id: &Id, want: &PoolV, have: &PoolV) -> Result<Vec<String>, ApplyError> {
        let mut steps = Vec::new();
        for nic in want.members.iter().filter(|n| !have.members.contains(n)) {
            let member = MemberSpec {
                nic: nic.clone(),
                weight: None,
            };
            self.call(
                id,
                &Request::LbPoolAdd {
                    lb: id.name.clone(),
                    pool: want.name.clone(),
                    member,
                },
            )?;
            steps.push(format!("+{nic} in pool {}", want.name));
        }
        for nic in have.members.iter().filter(|n| !want.members.contains(n)) {
            self.call(
                id,
                &Request::LbPoolRemove {
                    lb: id.name.clone(),
                    pool: want.name.clone(),
                    nic: nic.clone(),
                },
            )?;
            steps.push(format!("-{nic} from pool {}", want.name));
        }
        Ok(steps)
    }
}
