//! Carrying out a [`Plan`]: stage after stage, the actions of one stage in
//! parallel threads (netd serializes them; the threads overlap the
//! waiting), one progress line per action, the record updated around
//! every create and delete.

mod instances;
mod lb;

use std::path::Path;

use netd::api::client::{Client, ClientError};
use netd::api::protocol::Request;
use netd::error::NetError;
use serde_json::Value;

use super::desired::{FrontendV, Id, Spec};
use super::plan::{Action, Plan};
use super::progress::Progress;
use super::record::{RecordError, Store};
pub use instances::ServiceOptions;

/// Actions of one stage that run at the same time.
const PARALLEL: usize = 4;

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// netd refused or could not be reached.
    #[error("{id}: {source}")]
    Netd {
        /// The object.
        id: Id,
        /// netd's answer.
        source: Box<ClientError>,
    },
    /// The record could not be written.
    #[error("recording {id}: {source}")]
    Record {
        /// The object.
        id: Id,
        /// The error.
        source: RecordError,
    },
    /// The VM store refused or failed.
    #[error("{id}: {source}")]
    Vm {
        /// The VM.
        id: Id,
        /// Why.
        source: Box<crate::vm::VmError>,
    },
    /// Not something this build can do.
    #[error("{id}: {reason}")]
    Unsupported {
        /// The object.
        id: Id,
        /// Why.
        reason: String,
    },
}

/// Runs actions against netd.
pub struct Executor<'a> {
    /// netd's socket.
    pub socket: &'a Path,
    /// The topology's record.
    pub store: &'a Store,
    /// Progress output.
    pub progress: &'a Progress,
    /// The VM store.
    pub vms: &'a crate::vm::Context,
    /// How VMs are started.
    pub start: crate::vm::StartOptions,
    /// How VMs leave and join their load balancers' pools.
    pub service: ServiceOptions,
}

impl Executor<'_> {
    fn call(&self, id: &Id, request: &Request) -> Result<Value, ApplyError> {
        Client::connect(self.socket)
            .and_then(|mut c| c.call(request))
            .map_err(|source| ApplyError::Netd {
                id: id.clone(),
                source: Box::new(source),
            })
    }

    fn record(&self, id: &Id, r: Result<(), RecordError>) -> Result<(), ApplyError> {
        r.map_err(|source| ApplyError::Record {
            id: id.clone(),
            source,
        })
    }

    /// Runs every stage; stops after a stage in which something failed
    /// (later stages depend on it). Returns the number of actions done.
    pub fn run(&self, plan: &Plan) -> Result<usize, Vec<ApplyError>> {
        let mut done = 0;
        for stage in &plan.stages {
            let mut errors = Vec::new();
            for chunk in stage.chunks(PARALLEL) {
                let results: Vec<Result<String, ApplyError>> = std::thread::scope(|s| {
                    let handles: Vec<_> = chunk
                        .iter()
                        .map(|a| s.spawn(move || self.run_one(a)))
                        .collect();
                    handles
                        .into_iter()
                        .zip(chunk)
                        .map(|(h, a)| {
                            h.join().unwrap_or_else(|_| {
                                Err(ApplyError::Unsupported {
                                    id: a.id().clone(),
                                    reason: "worker thread panicked".into(),
                                })
                            })
                        })
                        .collect()
                });
                for r in results {
                    match r {
                        Ok(line) => {
                            done += 1;
                            self.progress.line(line);
                        }
                        Err(e) => {
                            self.progress.line(format!("FAILED {e}"));
                            errors.push(e);
                        }
                    }
                }
            }
            if !errors.is_empty() {
                return Err(errors);
            }
        }
        Ok(done)
    }

    fn run_one(&self, action: &Action) -> Result<String, ApplyError> {
        match action {
            Action::Create { id, want } => {
                // Recorded first: if we die while netd creates it, `down`
                // still knows it is ours.
                self.record(id, self.store.add(id))?;
                match self.create(id, want) {
                    Ok(detail) => Ok(format!("created {id}{detail}")),
                    Err(e) => {
                        let refused = match &e {
                            ApplyError::Netd { source, .. } => {
                                matches!(**source, ClientError::Refused(_))
                            }
                            // `vm create` checks everything before it
                            // creates anything; a failed start leaves a
                            // VM that `down` must delete.
                            ApplyError::Vm { .. } => !self.vm_exists(id),
                            _ => false,
                        };
                        if refused {
                            // Nothing was created.
                            self.record(id, self.store.remove(id))?;
                        }
                        Err(e)
                    }
                }
            }
            Action::Update { id, want, have } => {
                let steps = self.update(id, want, have)?;
                Ok(format!("updated {id} ({})", steps.join(", ")))
            }
            Action::Replace { id, want } => {
                let how = self.replace_instance(id, want)?;
                Ok(format!("replaced {id} ({how})"))
            }
            Action::Delete { id, have } => {
                let mut how = String::new();
                match (have, self.service.drain_timeout) {
                    (Some(_), Some(drain)) if id.kind == super::desired::Kind::Vm => {
                        how = format!(" ({})", self.retire_vm(id, drain)?);
                    }
                    (Some(_), _) => self.delete(id)?,
                    (None, _) => {}
                }
                self.record(id, self.store.remove(id))?;
                Ok(if have.is_some() {
                    format!("deleted {id}{how}")
                } else {
                    format!("forgot {id} (already gone)")
                })
            }
        }
    }

    fn create(&self, id: &Id, want: &Spec) -> Result<String, ApplyError> {
        let v = match want {
            Spec::Vnet { address_space } => {
                let v = self.call(
                    id,
                    &Request::VnetCreate {
                        name: id.name.clone(),
                        address_space: address_space.clone(),
                    },
                )?;
                return Ok(format!(" (bridge {})", v["bridge"].as_str().unwrap_or("?")));
            }
            Spec::Asg => self.call(
                id,
                &Request::AsgCreate {
                    name: id.name.clone(),
                },
            )?,
            Spec::PublicIp {
                allocation,
                address,
            } => {
                let v = self.call(
                    id,
                    &Request::PublicIpCreate {
                        name: id.name.clone(),
                        allocation: allocation.to_ascii_lowercase(),
                        address: address.clone(),
                    },
                )?;
                return Ok(v["address"]
                    .as_str()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default());
            }
            Spec::Nsg { rules } => self.call(
                id,
                &Request::NsgCreate {
                    name: id.name.clone(),
                    rules: rules.clone(),
                },
            )?,
            Spec::Subnet {
                vnet,
                name,
                cidr,
                nsg,
            } => self.call(
                id,
                &Request::SubnetCreate {
                    vnet: vnet.clone(),
                    name: name.clone(),
                    cidr: cidr.clone(),
                    nsg: nsg.clone(),
                },
            )?,
            Spec::Nic {
                vnet,
                subnet,
                ip,
                nsg,
                asgs,
                public_ip,
            } => {
                let v = self.call(
                    id,
                    &Request::NicCreate {
                        name: id.name.clone(),
                        vnet: vnet.clone(),
                        subnet: subnet.clone(),
                        ip: ip.clone(),
                        mac: None,
                        nsg: nsg.clone(),
                        asgs: asgs.clone(),
                        public_ip: public_ip.clone(),
                        tap_owner: None,
                        attach_netns: None,
                    },
                )?;
                return Ok(format!(
                    " ({} {})",
                    v["host_interface"].as_str().unwrap_or("?"),
                    v["ip"].as_str().unwrap_or("?")
                ));
            }
            Spec::Lb { frontend, .. } => {
                let request = match frontend {
                    FrontendV::Public { public_ip } => Request::LbCreate {
                        name: id.name.clone(),
                        public_ip: Some(public_ip.clone()),
                        vnet: None,
                        subnet: None,
                        private_ip: None,
                    },
                    FrontendV::Internal {
                        vnet,
                        subnet,
                        private_ip,
                    } => Request::LbCreate {
                        name: id.name.clone(),
                        public_ip: None,
                        vnet: Some(vnet.clone()),
                        subnet: Some(subnet.clone()),
                        private_ip: private_ip.clone(),
                    },
                };
                let v = self.call(id, &request)?;
                let empty = Spec::Lb {
                    frontend: frontend.clone(),
                    pools: vec![],
                    probes: vec![],
                    rules: vec![],
                };
                let steps = self.lb_children(id, want, &empty)?;
                return Ok(format!(
                    " (frontend {}; {})",
                    v["frontend_ip"].as_str().unwrap_or("-"),
                    if steps.is_empty() {
                        "no rules".to_string()
                    } else {
                        steps.join(", ")
                    }
                ));
            }
            Spec::Vm { spec, .. } => {
                crate::vm::create(self.vms, spec).map_err(|source| ApplyError::Vm {
                    id: id.clone(),
                    source: Box::new(source),
                })?;
                let mut detail = self.start_vm(id)?;
                if let (Some(limit), Some(_), Some(nic)) = (
                    self.service.in_service_timeout,
                    self.start.wait_ready,
                    spec.nics.first(),
                ) {
                    if let Some(s) = self.wait_in_service(id, nic, limit)? {
                        detail = format!("{}, {s})", detail.trim_end_matches(')'));
                    }
                }
                return Ok(detail);
            }
        };
        let _ = v;
        Ok(String::new())
    }

    fn update(&self, id: &Id, want: &Spec, have: &Spec) -> Result<Vec<String>, ApplyError> {
        match (want, have) {
            (Spec::Nsg { rules }, Spec::Nsg { .. }) => {
                self.call(
                    id,
                    &Request::NsgRuleReplace {
                        nsg: id.name.clone(),
                        rules: rules.clone(),
                    },
                )?;
                Ok(vec![format!("{} rules", rules.len())])
            }
            (
                Spec::Subnet {
                    vnet,
                    name,
                    cidr,
                    nsg,
                },
                Spec::Subnet {
                    cidr: c2, nsg: n2, ..
                },
            ) => {
                self.call(
                    id,
                    &Request::SubnetUpdate {
                        vnet: vnet.clone(),
                        name: name.clone(),
                        cidr: (cidr != c2).then(|| cidr.clone()),
                        nsg: nsg.clone(),
                        clear_nsg: nsg.is_none() && n2.is_some(),
                    },
                )?;
                let mut what = Vec::new();
                if cidr != c2 {
                    what.push(format!("cidr {cidr}"));
                }
                if nsg != n2 {
                    what.push(format!("nsg {}", nsg.as_deref().unwrap_or("-")));
                }
                Ok(what)
            }
            (
                Spec::Nic {
                    nsg,
                    asgs,
                    public_ip,
                    ..
                },
                Spec::Nic {
                    nsg: n2,
                    asgs: a2,
                    public_ip: p2,
                    ..
                },
            ) => {
                let pip_changed = public_ip != p2;
                let mut what = Vec::new();
                if nsg != n2 {
                    what.push(format!("nsg {}", nsg.as_deref().unwrap_or("-")));
                }
                if asgs != a2 {
                    what.push(format!("asgs [{}]", asgs.join(", ")));
                }
                if pip_changed {
                    what.push(format!("public ip {}", public_ip.as_deref().unwrap_or("-")));
                }
                self.call(
                    id,
                    &Request::NicUpdate {
                        name: id.name.clone(),
                        nsg: nsg.clone(),
                        clear_nsg: nsg.is_none() && n2.is_some(),
                        asgs: (asgs != a2).then(|| asgs.clone()),
                        public_ip: if pip_changed { public_ip.clone() } else { None },
                        clear_public_ip: pip_changed && public_ip.is_none(),
                    },
                )?;
                Ok(what)
            }
            (Spec::Lb { .. }, Spec::Lb { .. }) => self.lb_children(id, want, have),
            (Spec::Vm { .. }, Spec::Vm { running: false, .. }) => Ok(vec![format!(
                "was not running; start{}",
                self.start_vm(id)?
            )]),
            _ => Err(ApplyError::Unsupported {
                id: id.clone(),
                reason: "this change cannot be made in place".into(),
            }),
        }
    }

    fn vm_exists(&self, id: &Id) -> bool {
        crate::vm::stored(self.vms, &id.name).is_ok()
    }

    /// Starts VM `id` in the background; with `wait_ready`, also waits for
    /// the guest's readiness line.
    fn start_vm(&self, id: &Id) -> Result<String, ApplyError> {
        self.start_maybe_niced(id, &self.start)?;
        Ok(if self.start.wait_ready.is_some() {
            " (started, guest ready)".into()
        } else {
            " (started)".into()
        })
    }

    /// Deletes one object; an object already gone counts as deleted.
    pub fn delete(&self, id: &Id) -> Result<(), ApplyError> {
        use super::desired::Kind;
        let name = id.name.clone();
        let request = match id.kind {
            Kind::Vnet => Request::VnetDelete { name, force: false },
            Kind::Asg => Request::AsgDelete { name },
            Kind::PublicIp => Request::PublicIpDelete { name },
            Kind::Nsg => Request::NsgDelete { name },
            Kind::Subnet => {
                let (vnet, subnet) = name.split_once('/').unwrap_or((name.as_str(), ""));
                Request::SubnetDelete {
                    vnet: vnet.to_string(),
                    name: subnet.to_string(),
                }
            }
            Kind::Nic => Request::NicDelete { name },
            Kind::Lb => Request::LbDelete { name },
            Kind::Vm => {
                // Stops it (gracefully, killed after a timeout) first.
                return match crate::vm::delete(self.vms, &id.name, true) {
                    Ok(()) | Err(crate::vm::VmError::NotFound(_)) => Ok(()),
                    Err(source) => Err(ApplyError::Vm {
                        id: id.clone(),
                        source: Box::new(source),
                    }),
                };
            }
        };
        match self.call(id, &request) {
            Ok(_) => Ok(()),
            Err(ApplyError::Netd { source, .. })
                if matches!(*source, ClientError::Refused(NetError::NotFound { .. })) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
