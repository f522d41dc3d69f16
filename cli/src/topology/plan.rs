//! The difference between the file and the host: what to create, change
//! and delete, in which order, and the conflicts that forbid starting at
//! all (found before anything changes).

use std::collections::{BTreeMap, BTreeSet};

use super::desired::{frontend_matches, Desired, Id, Kind, Resource, Spec};
use super::diagnostic::Diagnostic;
use super::observed::Observed;

/// One change to the host.
// Specs are inline: a plan holds one action per object of one file, and
// the actions are read far more than moved.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a missing object.
    Create {
        /// What.
        id: Id,
        /// As the file says.
        want: Spec,
    },
    /// Change an object to match the file.
    Update {
        /// What.
        id: Id,
        /// As the file says.
        want: Spec,
        /// As it is.
        have: Spec,
    },
    /// Replace a scale set instance whose settings changed (a rolling
    /// update: out of its pools, drained, deleted, created with the new
    /// settings, back in once its probe passes). Each is a stage of its
    /// own, so that at most one instance is out of service at a time.
    Replace {
        /// The instance.
        id: Id,
        /// As the file says.
        want: Spec,
    },
    /// Delete an object the topology owns and the file no longer declares.
    Delete {
        /// What.
        id: Id,
        /// As it is (None: already gone, only the record is updated).
        have: Option<Spec>,
    },
}

impl Action {
    /// The object changed.
    pub fn id(&self) -> &Id {
        match self {
            Action::Create { id, .. }
            | Action::Update { id, .. }
            | Action::Replace { id, .. }
            | Action::Delete { id, .. } => id,
        }
    }
}

/// Changes in the order they run: `stages[i]` may run in parallel, after
/// every earlier stage finished.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Groups of independent actions.
    pub stages: Vec<Vec<Action>>,
    /// Objects that already match.
    pub unchanged: Vec<Id>,
}

impl Plan {
    /// True when nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.stages.iter().all(Vec::is_empty)
    }

    /// Number of actions.
    pub fn len(&self) -> usize {
        self.stages.iter().map(Vec::len).sum()
    }
}

/// Why an existing object cannot be changed in place, if it cannot.
fn immutable_change(want: &Spec, have: &Spec) -> Option<&'static str> {
    match (want, have) {
        (Spec::Vnet { .. }, Spec::Vnet { .. }) => {
            Some("the address space of an existing vnet cannot change")
        }
        (Spec::PublicIp { .. }, Spec::PublicIp { .. }) => {
            Some("the allocation or address of an existing public IP cannot change")
        }
        (
            Spec::Nic {
                vnet, subnet, ip, ..
            },
            Spec::Nic {
                vnet: v2,
                subnet: s2,
                ip: ip2,
                ..
            },
        ) if vnet != v2 || subnet != s2 || (ip.is_some() && ip != ip2) => {
            Some("the subnet or address of an existing NIC cannot change")
        }
        (Spec::Lb { frontend, .. }, Spec::Lb { frontend: f2, .. })
            if !frontend_matches(frontend, f2) =>
        {
            Some("the frontend of an existing load balancer cannot change")
        }
        (Spec::Vm { spec, .. }, Spec::Vm { spec: s2, .. }) if spec != s2 => Some(
            "the settings of an existing VM cannot change in place (scale set instances can: they are replaced one at a time)",
        ),
        _ => None,
    }
}

/// True when a scale set instance's settings changed: it is replaced, not
/// refused (a plain VM's are immutable).
fn is_instance_change(want: &Spec, have: &Spec) -> bool {
    match (want, have) {
        (Spec::Vm { spec, .. }, Spec::Vm { spec: s2, .. }) => {
            spec != s2 && spec.tags.contains_key(super::desired::SCALE_SET_TAG)
        }
        _ => false,
    }
}

/// Compares the file with the host.
///
/// * `owned`: what the topology's record says it owns.
/// * `others`: objects other topologies own, with their names.
pub fn plan(
    desired: &Desired,
    observed: &Observed,
    owned: &BTreeSet<Id>,
    others: &BTreeMap<Id, String>,
) -> Result<Plan, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut stages: Vec<Vec<Action>> = vec![Vec::new(); usize::from(Kind::STAGES) * 2];
    let mut unchanged = Vec::new();
    let mut replaced = Vec::new();
    let conflict = |r: &Resource, errors: &mut Vec<Diagnostic>| {
        let who = match others.get(&r.id) {
            Some(t) => format!("topology '{t}'"),
            None => "no topology (it was created by hand or by another tool)".into(),
        };
        errors.push(Diagnostic::at(
            &r.span,
            &r.path,
            format!("{} already exists on the host and belongs to {who}; rename it here or remove it there", r.id),
        ));
    };
    for r in &desired.resources {
        let have = observed.objects.get(&r.id);
        let stage = usize::from(r.id.kind.stage());
        match have {
            // The record may say we own it though it is gone (deleted by
            // hand): create it again.
            None => stages[stage].push(Action::Create {
                id: r.id.clone(),
                want: r.spec.clone(),
            }),
            Some(_) if !owned.contains(&r.id) => conflict(r, &mut errors),
            Some(have) if r.spec.matches(have) => unchanged.push(r.id.clone()),
            Some(have) if is_instance_change(&r.spec, have) => replaced.push(vec![Action::Replace {
                id: r.id.clone(),
                want: r.spec.clone(),
            }]),
            Some(have) => match immutable_change(&r.spec, have) {
                Some(why) => errors.push(Diagnostic::at(
                    &r.span,
                    &r.path,
                    format!("{} differs from the file but {why}; run `nimbus down` first, or give it a new name", r.id),
                )),
                None => stages[stage].push(Action::Update {
                    id: r.id.clone(),
                    want: r.spec.clone(),
                    have: have.clone(),
                }),
            },
        }
    }
    host_conflicts(desired, observed, owned, others, &mut errors);
    // Owned objects the file dropped go, after everything else, in
    // reverse dependency order.
    for id in owned {
        if desired.get(id).is_none() {
            let stage = usize::from(Kind::STAGES) * 2 - 1 - usize::from(id.kind.stage());
            stages[stage].push(Action::Delete {
                id: id.clone(),
                have: observed.objects.get(id).cloned(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Rolling updates last, one instance per stage (max-unavailable 1),
    // after scale-in removed what goes anyway.
    stages.extend(replaced);
    stages.retain(|s| !s.is_empty());
    Ok(Plan { stages, unchanged })
}

/// Conflicts with objects of others that would make netd refuse a create
/// halfway: overlapping VNet address spaces, public addresses held.
fn host_conflicts(
    desired: &Desired,
    observed: &Observed,
    owned: &BTreeSet<Id>,
    others: &BTreeMap<Id, String>,
    errors: &mut Vec<Diagnostic>,
) {
    let whose = |id: Id| match others.get(&id) {
        Some(t) => format!("it belongs to topology '{t}'"),
        None => "it is not part of this topology".to_string(),
    };
    let spaces = observed.vnet_spaces();
    let addresses = observed.public_addresses();
    for r in &desired.resources {
        match &r.spec {
            Spec::Vnet { address_space } => {
                for text in address_space {
                    let Ok(mine) = text.parse::<netd::model::Cidr>() else {
                        continue;
                    };
                    if let Some((theirs, vnet)) = spaces.iter().find(|(c, v)| {
                        c.overlaps(&mine)
                            && !owned.contains(&Id::new(Kind::Vnet, v.as_str()))
                            && *v != r.id.name
                    }) {
                        errors.push(Diagnostic::at(
                            &desired.span_of(r, "address_space"),
                            format!("{}.address_space", r.path),
                            format!(
                                "{mine} overlaps {theirs} of vnet '{vnet}' on the host ({})",
                                whose(Id::new(Kind::Vnet, vnet.as_str()))
                            ),
                        ));
                    }
                }
            }
            Spec::PublicIp {
                address: Some(a), ..
            } => {
                if let Some((_, holder)) = addresses.iter().find(|(x, n)| {
                    x == a
                        && *n != r.id.name
                        && !owned.contains(&Id::new(Kind::PublicIp, n.as_str()))
                }) {
                    errors.push(Diagnostic::at(
                        &desired.span_of(r, "address"),
                        format!("{}.address", r.path),
                        format!(
                            "{a} is held by public IP '{holder}' on the host ({})",
                            whose(Id::new(Kind::PublicIp, holder.as_str()))
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::load::parse;
    use crate::topology::validate::validate;

    const FILE: &str = "name: rg
vnets:
  app:
    address_space: 10.1.0.0/16
    subnets:
      web: {cidr: 10.1.1.0/24, nsg: web}
nsgs:
  web:
    rules:
      http: {priority: 100, protocol: Tcp, destination_ports: 80, source: asg:front}
asgs: [front]
public_ips:
  ip: {}
load_balancers:
  lb:
    frontend: {public_ip: ip}
    pools: {web: {vms: [web-1]}}
    probes: {http: {protocol: Http, port: 80}}
    rules: {http: {frontend_port: 80, pool: web, probe: http}}
vms:
  web-1: {subnet: web, asgs: [front]}
";

    fn desired(text: &str) -> Desired {
        let (doc, e) = parse(text);
        assert!(e.is_empty(), "{e:?}");
        validate(&doc).expect("valid")
    }

    /// The host after a successful `up` of `d`: every object as declared.
    fn host_after(d: &Desired) -> Observed {
        let mut o = Observed::default();
        for r in &d.resources {
            if r.id.kind != Kind::Vm {
                o.objects.insert(r.id.clone(), r.spec.clone());
            }
        }
        o
    }

    fn owned(d: &Desired) -> BTreeSet<Id> {
        d.resources
            .iter()
            .map(|r| r.id.clone())
            .filter(|i| i.kind != Kind::Vm)
            .collect()
    }

    fn no_vms(d: &mut Desired) {
        d.resources.retain(|r| r.id.kind != Kind::Vm);
    }

    #[test]
    fn first_plan_creates_in_dependency_order() {
        let mut d = desired(FILE);
        no_vms(&mut d);
        let p = plan(&d, &Observed::default(), &BTreeSet::new(), &BTreeMap::new()).expect("plan");
        let order: Vec<Vec<String>> = p
            .stages
            .iter()
            .map(|s| s.iter().map(|a| a.id().to_string()).collect())
            .collect();
        assert_eq!(
            order,
            vec![
                vec!["asg rg-front", "public-ip rg-ip", "vnet rg-app"],
                vec!["nsg rg-web"],
                vec!["subnet rg-app/web"],
                vec!["nic rg-web-1"],
                vec!["lb rg-lb"],
            ],
        );
        assert!(p
            .stages
            .iter()
            .flatten()
            .all(|a| matches!(a, Action::Create { .. })));
    }

    #[test]
    fn plan_of_an_unchanged_topology_is_empty() {
        let mut d = desired(FILE);
        no_vms(&mut d);
        let mut host = host_after(&d);
        // netd fills in what the file leaves open.
        if let Some(Spec::Nic { ip, .. }) = host.objects.get_mut(&Id::new(Kind::Nic, "rg-web-1")) {
            *ip = Some("10.1.1.4".into());
        }
        if let Some(Spec::PublicIp { address, .. }) =
            host.objects.get_mut(&Id::new(Kind::PublicIp, "rg-ip"))
        {
            *address = Some("203.0.113.2".into());
        }
        let p = plan(&d, &host, &owned(&d), &BTreeMap::new()).expect("plan");
        assert!(p.is_empty(), "{p:#?}");
        assert_eq!(p.unchanged.len(), d.resources.len());
    }

    #[test]
    fn changes_become_updates_and_dropped_objects_deletes_last() {
        let mut before = desired(FILE);
        no_vms(&mut before);
        let host = host_after(&before);
        let mut after = desired(
            &FILE
                .replace("destination_ports: 80,", "destination_ports: 8080,")
                .replace(
                    "public_ips:\n  ip: {}\n",
                    "public_ips:\n  ip: {}\n  spare: {}\n",
                ),
        );
        no_vms(&mut after);
        after.resources.retain(|r| r.id.kind != Kind::Lb);
        let p = plan(&after, &host, &owned(&before), &BTreeMap::new()).expect("plan");
        let flat: Vec<(String, &'static str)> = p
            .stages
            .iter()
            .flatten()
            .map(|a| {
                let verb = match a {
                    Action::Create { .. } => "create",
                    Action::Update { .. } => "update",
                    Action::Replace { .. } => "replace",
                    Action::Delete { .. } => "delete",
                };
                (a.id().to_string(), verb)
            })
            .collect();
        assert_eq!(
            flat,
            vec![
                ("public-ip rg-spare".to_string(), "create"),
                ("nsg rg-web".to_string(), "update"),
                ("lb rg-lb".to_string(), "delete"),
            ]
        );
    }

    #[test]
    fn objects_not_owned_are_conflicts_with_their_line() {
        let mut d = desired(FILE);
        no_vms(&mut d);
        let host = host_after(&d);
        let mut others = BTreeMap::new();
        others.insert(Id::new(Kind::Nsg, "rg-web"), "shop".to_string());
        let mut mine = owned(&d);
        mine.remove(&Id::new(Kind::Nsg, "rg-web"));
        mine.remove(&Id::new(Kind::Vnet, "rg-app"));
        let e = plan(&d, &host, &mine, &others).expect_err("conflicts");
        assert_eq!(e.len(), 2, "{e:#?}");
        let vnet = e
            .iter()
            .find(|x| x.path == "vnets.app")
            .expect("vnet conflict");
        assert_eq!(vnet.pos.line, 3);
        assert!(vnet.reason.contains("belongs to no topology"), "{vnet:?}");
        let nsg = e
            .iter()
            .find(|x| x.path == "nsgs.web")
            .expect("nsg conflict");
        assert_eq!(nsg.pos.line, 8);
        assert!(nsg.reason.contains("belongs to topology 'shop'"), "{nsg:?}");
    }

    #[test]
    fn overlapping_foreign_vnet_is_refused_before_any_change() {
        let mut d = desired(FILE);
        no_vms(&mut d);
        let mut host = Observed::default();
        host.objects.insert(
            Id::new(Kind::Vnet, "other"),
            Spec::Vnet {
                address_space: vec!["10.0.0.0/8".into()],
            },
        );
        let e = plan(&d, &host, &BTreeSet::new(), &BTreeMap::new()).expect_err("overlap");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].pos.line, 4, "the address_space line");
        assert!(
            e[0].reason.contains(
                "overlaps 10.0.0.0/8 of vnet 'other' on the host (it is not part of this topology)"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn vms_are_created_last_started_when_stopped_and_never_changed_in_place() {
        let d = desired(FILE);
        let p = plan(&d, &Observed::default(), &BTreeSet::new(), &BTreeMap::new()).expect("plan");
        let last = p.stages.last().expect("stages");
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].id().to_string(), "vm rg-web-1");
        let Some(Spec::Vm { spec, .. }) = d.get(&Id::new(Kind::Vm, "rg-web-1")).map(|r| &r.spec)
        else {
            panic!("vm spec")
        };
        assert_eq!(spec.nics, ["rg-web-1"]);
        assert_eq!(
            spec.tags.get("nimbus.topology").map(String::as_str),
            Some("rg")
        );
        let mut host = host_after(&d);
        let mut all = owned(&d);
        let vm = Id::new(Kind::Vm, "rg-web-1");
        all.insert(vm.clone());
        host.objects.insert(
            vm.clone(),
            Spec::Vm {
                spec: spec.clone(),
                running: false,
            },
        );
        let p = plan(&d, &host, &all, &BTreeMap::new()).expect("plan");
        assert!(
            matches!(p.stages.as_slice(), [s] if matches!(s.as_slice(), [Action::Update { .. }])),
            "{p:#?}"
        );
        host.objects.insert(
            vm.clone(),
            Spec::Vm {
                spec: spec.clone(),
                running: true,
            },
        );
        assert!(plan(&d, &host, &all, &BTreeMap::new())
            .expect("plan")
            .is_empty());
        let mut bigger = spec.clone();
        bigger.memory_mib *= 2;
        host.objects.insert(
            vm,
            Spec::Vm {
                spec: bigger,
                running: true,
            },
        );
        let e = plan(&d, &host, &all, &BTreeMap::new()).expect_err("immutable");
        assert_eq!(e[0].pos.line, 21, "{e:?}");
        assert!(
            e[0].reason
                .contains("settings of an existing VM cannot change"),
            "{e:?}"
        );
    }

    #[test]
    fn changed_scale_set_instances_are_replaced_one_per_stage() {
        let text =
            format!("{FILE}scale_sets:\n  api: {{replicas: 2, subnet: web, memory: 128M}}\n");
        let d = desired(&text);
        let mut host = host_after(&d);
        let mut all = owned(&d);
        for r in &d.resources {
            if let Spec::Vm { spec, .. } = &r.spec {
                let mut old = spec.clone();
                old.memory_mib = 64;
                all.insert(r.id.clone());
                host.objects.insert(
                    r.id.clone(),
                    Spec::Vm {
                        spec: if r.id.name.starts_with("rg-api-") {
                            old
                        } else {
                            spec.clone()
                        },
                        running: true,
                    },
                );
            }
        }
        let p = plan(&d, &host, &all, &BTreeMap::new()).expect("instances are replaced");
        let stages: Vec<Vec<String>> = p
            .stages
            .iter()
            .map(|s| s.iter().map(|a| a.id().to_string()).collect())
            .collect();
        assert_eq!(stages, vec![vec!["vm rg-api-0"], vec!["vm rg-api-1"]]);
        assert!(p
            .stages
            .iter()
            .flatten()
            .all(|a| matches!(a, Action::Replace { .. })));
    }

    #[test]
    fn immutable_changes_are_refused() {
        let mut d = desired(FILE);
        no_vms(&mut d);
        let mut host = host_after(&d);
        host.objects.insert(
            Id::new(Kind::Vnet, "rg-app"),
            Spec::Vnet {
                address_space: vec!["10.2.0.0/16".into()],
            },
        );
        let e = plan(&d, &host, &owned(&d), &BTreeMap::new()).expect_err("immutable");
        assert!(
            e[0].reason
                .contains("address space of an existing vnet cannot change"),
            "{e:?}"
        );
    }
}
