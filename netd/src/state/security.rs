//! NSGs, their rules, and ASGs.

use serde_json::{json, Value};

use super::network::join;
use super::{parse_name, parse_ref, State};
use crate::api::protocol::RuleSpec;
use crate::error::{parse_field, Kind, NetError};
use crate::model::{
    default_rules, AddressPrefix, Asg, Name, Nsg, PortRange, Priority, SecurityRule,
};

impl State {
    /// Resolves an optional NSG reference from `field` "nsg" of `owner`.
    pub(super) fn nsg_ref(
        &self,
        kind: Kind,
        owner: &str,
        nsg: Option<&str>,
    ) -> Result<Option<Name>, NetError> {
        match nsg {
            None => Ok(None),
            Some(text) => {
                let n = parse_ref(kind, owner, "nsg", text)?;
                self.nsg(&n)?;
                Ok(Some(n))
            }
        }
    }

    pub(super) fn asg_refs(&self, nic: &str, list: &[String]) -> Result<Vec<Name>, NetError> {
        let mut out: Vec<Name> = Vec::new();
        for text in list {
            let n = parse_ref(Kind::Nic, nic, "asgs", text)?;
            self.asg(&n)?;
            if !out.contains(&n) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Parses and checks one rule for NSG `nsg` against the ASGs that exist.
    fn parse_rule(&self, nsg: &str, spec: &RuleSpec) -> Result<SecurityRule, NetError> {
        let owner = format!("{nsg}/{}", spec.name);
        let k = Kind::SecurityRule;
        let name: Name = parse_field(k, &owner, "name", &spec.name)?;
        let priority = Priority::user(spec.priority)
            .map_err(|r| NetError::invalid(k, &owner, "priority", spec.priority, r))?;
        let prefixes = |field: &str, list: &[String]| -> Result<Vec<AddressPrefix>, NetError> {
            if list.is_empty() {
                return Ok(vec![AddressPrefix::Any]);
            }
            list.iter()
                .map(|t| {
                    let p: AddressPrefix = parse_field(k, &owner, field, t)?;
                    if let AddressPrefix::Asg(a) = &p {
                        if self.asg(a).is_err() {
                            return Err(NetError::invalid(
                                k,
                                &owner,
                                field,
                                t,
                                format!("asg '{a}' does not exist"),
                            ));
                        }
                    }
                    Ok(p)
                })
                .collect()
        };
        let ports = |field: &str, list: &[String]| -> Result<Vec<PortRange>, NetError> {
            if list.is_empty() {
                return Ok(vec![PortRange::ANY]);
            }
            list.iter()
                .map(|t| parse_field(k, &owner, field, t))
                .collect()
        };
        let rule = SecurityRule {
            name,
            priority,
            direction: parse_field(k, &owner, "direction", &spec.direction)?,
            access: parse_field(k, &owner, "access", &spec.access)?,
            protocol: parse_field(
                k,
                &owner,
                "protocol",
                if spec.protocol.is_empty() {
                    "*"
                } else {
                    &spec.protocol
                },
            )?,
            sources: prefixes("source", &spec.sources)?,
            source_ports: ports("source_port", &spec.source_ports)?,
            destinations: prefixes("destination", &spec.destinations)?,
            destination_ports: ports("destination_port", &spec.destination_ports)?,
        };
        rule.check()
            .map_err(|(field, value, reason)| NetError::invalid(k, &owner, field, value, reason))?;
        Ok(rule)
    }

    /// Adds `rule` to `rules` if its name and (priority, direction) are free.
    fn insert_rule(
        nsg: &str,
        rules: &mut Vec<SecurityRule>,
        rule: SecurityRule,
    ) -> Result<(), NetError> {
        let owner = format!("{nsg}/{}", rule.name);
        if rules.iter().any(|r| r.name == rule.name) {
            return Err(NetError::AlreadyExists {
                kind: Kind::SecurityRule,
                name: owner,
            });
        }
        if let Some(other) = rules
            .iter()
            .find(|r| r.priority == rule.priority && r.direction == rule.direction)
        {
            return Err(NetError::invalid(
                Kind::SecurityRule,
                owner,
                "priority",
                rule.priority,
                format!("already used by {} rule '{}'", rule.direction, other.name),
            ));
        }
        rules.push(rule);
        Ok(())
    }

    fn parse_rules(&self, nsg: &str, specs: &[RuleSpec]) -> Result<Vec<SecurityRule>, NetError> {
        let mut rules = Vec::with_capacity(specs.len());
        let mut seen_names = std::collections::HashSet::new();
        let mut seen_prio = std::collections::HashMap::new();
        for spec in specs {
            let rule = self.parse_rule(nsg, spec)?;
            // Same checks as insert_rule, in O(1) per rule for big NSGs.
            let owner = format!("{nsg}/{}", rule.name);
            if !seen_names.insert(rule.name.clone()) {
                return Err(NetError::AlreadyExists {
                    kind: Kind::SecurityRule,
                    name: owner,
                });
            }
            if let Some(other) =
                seen_prio.insert((rule.priority, rule.direction), rule.name.clone())
            {
                return Err(NetError::invalid(
                    Kind::SecurityRule,
                    owner,
                    "priority",
                    rule.priority,
                    format!("already used by {} rule '{other}'", rule.direction),
                ));
            }
            rules.push(rule);
        }
        Ok(rules)
    }

    pub(super) fn nsg_create(&mut self, name: &str, specs: &[RuleSpec]) -> Result<Value, NetError> {
        let nname = parse_name(Kind::Nsg, name)?;
        if self.nsg(&nname).is_ok() {
            return Err(NetError::AlreadyExists {
                kind: Kind::Nsg,
                name: name.into(),
            });
        }
        let rules = self.parse_rules(name, specs)?;
        let id = self.serial();
        self.nsgs.push(Nsg {
            name: nname.clone(),
            id,
            rules,
        });
        self.nsg_show(name)
    }

    pub(super) fn nsg_delete(&mut self, name: &str) -> Result<Value, NetError> {
        let nname = parse_name(Kind::Nsg, name)?;
        self.nsg(&nname)?;
        let mut users: Vec<String> = self
            .nics
            .iter()
            .filter(|n| n.nsg.as_ref() == Some(&nname))
            .map(|n| format!("nic '{}'", n.name))
            .collect();
        for v in &self.vnets {
            users.extend(
                v.subnets
                    .iter()
                    .filter(|s| s.nsg.as_ref() == Some(&nname))
                    .map(|s| format!("subnet '{}/{}'", v.name, s.name)),
            );
        }
        if !users.is_empty() {
            return Err(NetError::in_use(
                Kind::Nsg,
                name,
                format!("attached to {}", users.join(", ")),
            ));
        }
        self.nsgs.retain(|n| n.name != nname);
        Ok(Value::Null)
    }

    pub(super) fn nsg_show(&self, name: &str) -> Result<Value, NetError> {
        let nname = parse_name(Kind::Nsg, name)?;
        let nsg = self.nsg(&nname)?;
        let mut subnets = Vec::new();
        for v in &self.vnets {
            subnets.extend(
                v.subnets
                    .iter()
                    .filter(|s| s.nsg.as_ref() == Some(&nname))
                    .map(|s| format!("{}/{}", v.name, s.name)),
            );
        }
        let nics: Vec<&Name> = self
            .nics
            .iter()
            .filter(|n| n.nsg.as_ref() == Some(&nname))
            .map(|n| &n.name)
            .collect();
        Ok(json!({
            "name": nsg.name,
            "rules": nsg.rules.len(),
            "subnets": subnets,
            "nics": nics,
        }))
    }

    pub(super) fn nsg_rule_add(&mut self, nsg: &str, spec: &RuleSpec) -> Result<Value, NetError> {
        let nname = parse_ref(Kind::SecurityRule, &spec.name, "nsg", nsg)?;
        self.nsg(&nname)?;
        let rule = self.parse_rule(nsg, spec)?;
        let view = rule_view(&rule, false);
        let target = self
            .nsgs
            .iter_mut()
            .find(|n| n.name == nname)
            .ok_or_else(|| NetError::not_found(Kind::Nsg, nsg))?;
        Self::insert_rule(nsg, &mut target.rules, rule)?;
        Ok(view)
    }

    pub(super) fn nsg_rule_replace(
        &mut self,
        nsg: &str,
        specs: &[RuleSpec],
    ) -> Result<Value, NetError> {
        let nname = parse_ref(Kind::SecurityRule, "*", "nsg", nsg)?;
        self.nsg(&nname)?;
        let rules = self.parse_rules(nsg, specs)?;
        let count = rules.len();
        if let Some(target) = self.nsgs.iter_mut().find(|n| n.name == nname) {
            target.rules = rules;
        }
        Ok(json!({ "nsg": nname, "rules": count }))
    }

    pub(super) fn nsg_rule_delete(&mut self, nsg: &str, name: &str) -> Result<Value, NetError> {
        let nname = parse_ref(Kind::SecurityRule, name, "nsg", nsg)?;
        self.nsg(&nname)?;
        if default_rules().iter().any(|r| r.name.as_str() == name) {
            return Err(NetError::invalid(
                Kind::SecurityRule,
                format!("{nsg}/{name}"),
                "name",
                name,
                "default rules cannot be deleted; override them with a lower priority rule",
            ));
        }
        let target = self
            .nsgs
            .iter_mut()
            .find(|n| n.name == nname)
            .ok_or_else(|| NetError::not_found(Kind::Nsg, nsg))?;
        let before = target.rules.len();
        target.rules.retain(|r| r.name.as_str() != name);
        if target.rules.len() == before {
            return Err(NetError::not_found(
                Kind::SecurityRule,
                format!("{nsg}/{name}"),
            ));
        }
        Ok(Value::Null)
    }

    /// User rules then default rules, each direction in priority order.
    pub(super) fn nsg_rule_list(&self, nsg: &str) -> Result<Value, NetError> {
        let nname = parse_ref(Kind::SecurityRule, "*", "nsg", nsg)?;
        let n = self.nsg(&nname)?;
        let mut all: Vec<(bool, &SecurityRule)> = n.rules.iter().map(|r| (false, r)).collect();
        let defaults = default_rules();
        all.extend(defaults.iter().map(|r| (true, r)));
        all.sort_by_key(|(_, r)| (r.direction, r.priority));
        Ok(Value::Array(
            all.into_iter().map(|(d, r)| rule_view(r, d)).collect(),
        ))
    }

    pub(super) fn asg_create(&mut self, name: &str) -> Result<Value, NetError> {
        let aname = parse_name(Kind::Asg, name)?;
        if self.asg(&aname).is_ok() {
            return Err(NetError::AlreadyExists {
                kind: Kind::Asg,
                name: name.into(),
            });
        }
        let id = self.serial();
        self.asgs.push(Asg { name: aname, id });
        self.asg_show(name)
    }

    pub(super) fn asg_show(&self, name: &str) -> Result<Value, NetError> {
        let aname = parse_name(Kind::Asg, name)?;
        let a = self.asg(&aname)?;
        let members: Vec<&Name> = self
            .nics
            .iter()
            .filter(|n| n.asgs.contains(&aname))
            .map(|n| &n.name)
            .collect();
        Ok(json!({ "name": a.name, "nics": members }))
    }

    pub(super) fn asg_delete(&mut self, name: &str) -> Result<Value, NetError> {
        let aname = parse_name(Kind::Asg, name)?;
        self.asg(&aname)?;
        let members: Vec<Name> = self
            .nics
            .iter()
            .filter(|n| n.asgs.contains(&aname))
            .map(|n| n.name.clone())
            .collect();
        if !members.is_empty() {
            return Err(NetError::in_use(
                Kind::Asg,
                name,
                format!("NICs are members ({})", join(&members)),
            ));
        }
        let target = AddressPrefix::Asg(aname.clone());
        for nsg in &self.nsgs {
            if let Some(r) = nsg
                .rules
                .iter()
                .find(|r| r.sources.contains(&target) || r.destinations.contains(&target))
            {
                return Err(NetError::in_use(
                    Kind::Asg,
                    name,
                    format!("used by rule '{}' of nsg '{}'", r.name, nsg.name),
                ));
            }
        }
        self.asgs.retain(|a| a.name != aname);
        Ok(Value::Null)
    }
}

fn rule_view(r: &SecurityRule, default: bool) -> Value {
    let list = |v: &[AddressPrefix]| {
        v.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let ports = |v: &[PortRange]| {
        v.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    json!({
        "name": r.name,
        "priority": r.priority.get(),
        "direction": r.direction.to_string(),
        "access": r.access.to_string(),
        "protocol": r.protocol.to_string(),
        "source": list(&r.sources),
        "source_ports": ports(&r.source_ports),
        "destination": list(&r.destinations),
        "destination_ports": ports(&r.destination_ports),
        "default": default,
    })
}

#[cfg(test)]
mod tests {
    use crate::api::protocol::{Request, RuleSpec};
    use crate::state::test_support::*;

    fn rule(name: &str, prio: u32, dir: &str) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            priority: prio,
            direction: dir.into(),
            access: "Allow".into(),
            protocol: "Tcp".into(),
            destination_ports: vec!["22".into()],
            ..RuleSpec::default()
        }
    }

    fn add(nsg: &str, r: RuleSpec) -> Request {
        Request::NsgRuleAdd {
            nsg: nsg.into(),
            rule: r,
        }
    }

    #[test]
    fn priorities_unique_per_direction_and_in_range() {
        let mut st = world();
        apply(
            &mut st,
            Request::NsgCreate {
                name: "g".into(),
                rules: vec![],
            },
        );
        apply(&mut st, add("g", rule("a", 100, "Inbound")));
        apply(&mut st, add("g", rule("b", 100, "Outbound")));
        let err = st
            .apply(&add("g", rule("c", 100, "Inbound")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("priority '100'") && err.contains("rule 'a'"),
            "{err}"
        );
        let err = st
            .apply(&add("g", rule("d", 99, "Inbound")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nsg rule 'g/d': priority '99'"), "{err}");
        assert!(st.apply(&add("g", rule("e", 4097, "Inbound"))).is_err());
        assert!(st.apply(&add("g", rule("a", 200, "Inbound"))).is_err());
    }

    #[test]
    fn bad_fields_are_named() {
        let mut st = world();
        apply(
            &mut st,
            Request::NsgCreate {
                name: "g".into(),
                rules: vec![],
            },
        );
        let mut r = rule("a", 100, "Sideways");
        assert!(st
            .apply(&add("g", r.clone()))
            .unwrap_err()
            .to_string()
            .contains("direction 'Sideways'"));
        r.direction = "Inbound".into();
        r.sources = vec!["asg:ghost".into()];
        assert!(st
            .apply(&add("g", r.clone()))
            .unwrap_err()
            .to_string()
            .contains("asg 'ghost' does not exist"));
        r.sources = vec![];
        r.protocol = "Icmp".into();
        assert!(st
            .apply(&add("g", r))
            .unwrap_err()
            .to_string()
            .contains("destination_port '22'"));
    }

    #[test]
    fn default_rules_are_listed_after_user_rules() {
        let mut st = world();
        apply(
            &mut st,
            Request::NsgCreate {
                name: "g".into(),
                rules: vec![rule("ssh", 300, "Inbound")],
            },
        );
        let list = apply(&mut st, Request::NsgRuleList { nsg: "g".into() });
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "ssh",
                "AllowVnetInBound",
                "AllowAzureLoadBalancerInBound",
                "DenyAllInBound",
                "AllowVnetOutBound",
                "AllowInternetOutBound",
                "DenyAllOutBound"
            ]
        );
        assert!(st
            .apply(&Request::NsgRuleDelete {
                nsg: "g".into(),
                name: "DenyAllInBound".into()
            })
            .is_err());
    }

    #[test]
    fn attached_nsg_and_used_asg_cannot_be_deleted() {
        let mut st = world();
        apply(
            &mut st,
            Request::NsgCreate {
                name: "g".into(),
                rules: vec![],
            },
        );
        apply(&mut st, Request::AsgCreate { name: "web".into() });
        let mut r = rule("a", 100, "Inbound");
        r.destinations = vec!["asg:web".into()];
        apply(&mut st, add("g", r));
        apply(
            &mut st,
            Request::SubnetUpdate {
                vnet: "v".into(),
                name: "s".into(),
                cidr: None,
                nsg: Some("g".into()),
                clear_nsg: false,
            },
        );
        let err = st
            .apply(&Request::NsgDelete { name: "g".into() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("subnet 'v/s'"), "{err}");
        let err = st
            .apply(&Request::AsgDelete { name: "web".into() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("rule 'a'"), "{err}");
    }

    #[test]
    fn bulk_rules_are_checked_for_duplicates() {
        let mut st = world();
        let err = st
            .apply(&Request::NsgCreate {
                name: "g".into(),
                rules: vec![rule("a", 100, "Inbound"), rule("b", 100, "Inbound")],
            })
            .unwrap_err();
        assert!(err.to_string().contains("rule 'a'"), "{err}");
        let many: Vec<RuleSpec> = (0..3000)
            .map(|i| {
                rule(
                    &format!("r{i}"),
                    100 + (i % 3997),
                    if i < 3997 { "Inbound" } else { "Outbound" },
                )
            })
            .collect();
        apply(
            &mut st,
            Request::NsgCreate {
                name: "big".into(),
                rules: many,
            },
        );
    }
}
