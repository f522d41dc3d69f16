//! Checks the meaning of a read topology file and turns it into the
//! [`Desired`] objects. Every problem is collected with its line; the rules
//! are netd's own (`netd::model`), so a file that passes here is not
//! refused by netd for the same reason halfway through `nimbus up`.

mod autoscale;
mod compute;
mod lb;
mod network;

use std::collections::BTreeMap;

use marked_yaml::{Span, Spanned};
use netd::model::{Cidr, Name};

use super::desired::{host_name, Desired, Resource};
use super::diagnostic::Diagnostic;
use super::load::Document;

/// A subnet of the file.
#[derive(Debug, Clone)]
pub(super) struct SubnetInfo {
    /// VNet (file name).
    pub vnet: String,
    /// Subnet name.
    pub name: String,
    /// Prefix (None when it did not parse).
    pub cidr: Option<Cidr>,
}

/// A NIC the file implies, for pool membership and address checks.
#[derive(Debug, Clone)]
pub(super) struct NicInfo {
    /// Host name.
    pub host: String,
    /// VNet (file name).
    pub vnet: String,
}

/// What the checks share: the topology name, the names the file declares,
/// and the problems found so far.
pub(super) struct Ctx<'d> {
    pub doc: &'d Document,
    pub rg: String,
    pub errors: Vec<Diagnostic>,
    pub out: Vec<Resource>,
    pub subnets: Vec<SubnetInfo>,
    /// Static private addresses in use: address -> path of the user.
    pub static_ips: BTreeMap<std::net::Ipv4Addr, String>,
    /// Public IP users: file name -> path of the user.
    pub pip_users: BTreeMap<String, String>,
    /// Primary NIC per VM name (scale set instances included).
    pub vm_nics: BTreeMap<String, NicInfo>,
    /// Standalone NICs by file name.
    pub standalone_nics: BTreeMap<String, NicInfo>,
    /// Host names of every NIC -> path of its declaration.
    pub nic_hosts: BTreeMap<String, String>,
    /// Instance NICs per scale set.
    pub scale_set_nics: BTreeMap<String, Vec<NicInfo>>,
    /// See [`Desired::field_spans`].
    pub field_spans: BTreeMap<(super::desired::Id, &'static str), Span>,
    /// See [`Desired::scale_sets`].
    pub scale_sets: Vec<super::desired::ScaleSetV>,
}

impl<'d> Ctx<'d> {
    /// Records a problem.
    pub fn err(&mut self, span: &Span, path: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(Diagnostic::at(span, path, reason));
    }

    /// Host name of top-level object `name`.
    pub fn host(&self, name: &str) -> String {
        host_name(&self.rg, name)
    }

    /// Checks an object's name and that its host name fits netd's rules.
    pub fn check_name(&mut self, key: &Spanned<String>, path: &str, prefixed: bool) -> bool {
        if let Err(reason) = key.parse::<Name>() {
            self.err(
                key.span(),
                path,
                format!("name '{}': {reason}", key.as_str()),
            );
            return false;
        }
        if prefixed {
            let host = self.host(key);
            if let Err(reason) = host.parse::<Name>() {
                self.err(
                    key.span(),
                    path,
                    format!("host name '{host}' (topology name + '-' + name): {reason}"),
                );
                return false;
            }
        }
        true
    }

    /// Resolves `SUBNET` or `VNET/SUBNET`.
    pub fn subnet_ref(&mut self, r: &Spanned<String>, path: &str) -> Option<SubnetInfo> {
        let text = r.as_str();
        let found: Vec<&SubnetInfo> = match text.split_once('/') {
            Some((v, s)) => self
                .subnets
                .iter()
                .filter(|i| i.vnet == v && i.name == s)
                .collect(),
            None => self.subnets.iter().filter(|i| i.name == text).collect(),
        };
        match found.as_slice() {
            [one] => Some((*one).clone()),
            // A VNet that could not be read may hold it: already reported.
            [] if self.doc.section_broken("vnets") => None,
            [] => {
                let known: Vec<String> = self
                    .subnets
                    .iter()
                    .map(|i| format!("{}/{}", i.vnet, i.name))
                    .collect();
                self.err(
                    r.span(),
                    path,
                    format!(
                        "unknown subnet '{text}' (subnets of this file: {})",
                        list_or_none(&known)
                    ),
                );
                None
            }
            many => {
                let vnets: Vec<String> = many.iter().map(|i| i.vnet.clone()).collect();
                self.err(
                    r.span(),
                    path,
                    format!(
                        "subnet '{text}' exists in several vnets ({}); write VNET/{text}",
                        vnets.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// Resolves a reference to a top-level object of section `section`;
    /// returns its host name.
    pub fn object_ref(
        &mut self,
        r: &Spanned<String>,
        path: &str,
        section: &str,
        known: &[String],
    ) -> Option<String> {
        if known.iter().any(|k| k == r.as_str()) {
            Some(self.host(r))
        } else if self.doc.broken.iter().any(|(_, n)| n == r.as_str()) {
            // Declared, but unreadable: already reported.
            None
        } else {
            self.err(
                r.span(),
                path,
                format!(
                    "unknown {section} '{}' (declared: {})",
                    r.as_str(),
                    list_or_none(known)
                ),
            );
            None
        }
    }

    /// Names declared in a section.
    pub fn names<T>(named: &super::schema::Named<T>) -> Vec<String> {
        named.iter().map(|(k, _)| k.to_string()).collect()
    }
}

pub(super) fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Checks `doc`; returns the desired objects or every problem.
pub fn validate(doc: &Document) -> Result<Desired, Vec<Diagnostic>> {
    let mut ctx = Ctx {
        doc,
        rg: String::new(),
        errors: Vec::new(),
        out: Vec::new(),
        subnets: Vec::new(),
        static_ips: BTreeMap::new(),
        pip_users: BTreeMap::new(),
        vm_nics: BTreeMap::new(),
        scale_set_nics: BTreeMap::new(),
        standalone_nics: BTreeMap::new(),
        nic_hosts: BTreeMap::new(),
        field_spans: BTreeMap::new(),
        scale_sets: Vec::new(),
    };
    if let Some(name) = &doc.name {
        match name.parse::<Name>() {
            // The name prefixes host names (80 characters at most), so
            // keep room for the objects' own names.
            Ok(_) if name.len() > 40 => {
                ctx.err(
                    name.span(),
                    "name",
                    "at most 40 characters (it prefixes every host object's name)",
                );
            }
            Ok(_) => ctx.rg = name.to_string(),
            Err(reason) => ctx.err(
                name.span(),
                "name",
                format!("'{}': {reason}", name.as_str()),
            ),
        }
    }
    if ctx.rg.is_empty() {
        // Keep checking the rest with a placeholder so that all errors
        // come out in one run.
        ctx.rg = "topology".into();
    }
    network::check_asgs(&mut ctx);
    network::check_public_ips(&mut ctx);
    network::check_nsgs(&mut ctx);
    network::check_vnets(&mut ctx);
    compute::check_nics(&mut ctx);
    compute::check_vms(&mut ctx);
    compute::check_scale_sets(&mut ctx);
    lb::check_load_balancers(&mut ctx);
    if ctx.errors.is_empty() {
        let mut resources = ctx.out;
        resources.sort_by_key(|r| r.id.kind.stage());
        Ok(Desired {
            name: ctx.rg,
            resources,
            field_spans: ctx.field_spans,
            scale_sets: ctx.scale_sets,
        })
    } else {
        Err(ctx.errors)
    }
}

#[cfg(test)]
mod tests;
