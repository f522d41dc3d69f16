//! VMs and scale sets, and the NICs they imply.

use std::net::Ipv4Addr;

use marked_yaml::{Span, Spanned};

use super::{Ctx, NicInfo};
use crate::topology::desired::{Id, Kind, Resource, ScaleSetV, Spec, SCALE_SET_TAG, TOPOLOGY_TAG};
use crate::topology::schema::{Machine, NicSpecY, StrList};
use crate::vm::{DiskSpec, Image, VmError, VmSpec};

/// Largest scale set.
pub const MAX_REPLICAS: u32 = 100;

/// The NIC-level settings of an implied or explicit NIC.
struct NicFields<'a> {
    subnet: &'a Spanned<String>,
    ip: Option<&'a Spanned<String>>,
    nsg: Option<&'a Spanned<String>>,
    asgs: Option<&'a Spanned<StrList>>,
    public_ip: Option<&'a Spanned<String>>,
}

impl<'a> From<&'a NicSpecY> for NicFields<'a> {
    fn from(n: &'a NicSpecY) -> Self {
        NicFields {
            subnet: &n.subnet,
            ip: n.ip.as_ref(),
            nsg: n.nsg.as_ref(),
            asgs: n.asgs.as_ref(),
            public_ip: n.public_ip.as_ref(),
        }
    }
}

/// Checks one NIC and records it; returns its host name and VNet.
fn check_nic(ctx: &mut Ctx, host: String, f: NicFields, path: &str, span: Span) -> Option<NicInfo> {
    let mut ok = true;
    if let Some(other) = ctx.nic_hosts.get(&host).cloned() {
        ctx.err(
            &span,
            path,
            format!("NIC host name '{host}' is also the NIC of {other}; rename one of them"),
        );
        return None;
    }
    ctx.nic_hosts.insert(host.clone(), path.to_string());
    let sub = ctx.subnet_ref(f.subnet, &format!("{path}.subnet"));
    ok &= sub.is_some();
    let ip = match (f.ip, &sub) {
        (None, _) => None,
        (Some(text), sub) => match text.parse::<Ipv4Addr>() {
            Err(_) => {
                ctx.err(
                    text.span(),
                    format!("{path}.ip"),
                    format!("'{}' is not an IPv4 address", text.as_str()),
                );
                ok = false;
                None
            }
            Ok(a) => {
                if let Some(reason) = sub.as_ref().and_then(|s| address_problem(s.cidr, a)) {
                    ctx.err(text.span(), format!("{path}.ip"), format!("{a}: {reason}"));
                    ok = false;
                } else if let Some(other) = ctx.static_ips.get(&a) {
                    let other = other.clone();
                    ctx.err(
                        text.span(),
                        format!("{path}.ip"),
                        format!("{a} is already used by {other}"),
                    );
                    ok = false;
                } else {
                    ctx.static_ips.insert(a, path.to_string());
                }
                Some(a.to_string())
            }
        },
    };
    let nsgs = Ctx::names(&ctx.doc.nsgs);
    let nsg = match f.nsg {
        None => None,
        Some(r) => {
            let h = ctx.object_ref(r, &format!("{path}.nsg"), "nsg", &nsgs);
            ok &= h.is_some();
            h
        }
    };
    let asg_names = Ctx::names(&ctx.doc.asgs);
    let mut asgs = Vec::new();
    if let Some(list) = f.asgs {
        for a in &list.0 {
            if asg_names.iter().any(|x| x == a) {
                asgs.push(ctx.host(a));
            } else {
                ctx.err(
                    list.span(),
                    format!("{path}.asgs"),
                    format!(
                        "unknown asg '{a}' (declared: {})",
                        super::list_or_none(&asg_names)
                    ),
                );
                ok = false;
            }
        }
    }
    asgs.sort();
    asgs.dedup();
    let pips = Ctx::names(&ctx.doc.public_ips);
    let public_ip = match f.public_ip {
        None => None,
        Some(r) => {
            let h = ctx.object_ref(r, &format!("{path}.public_ip"), "public IP", &pips);
            ok &= h.is_some() && claim_public_ip(ctx, r, &format!("{path}.public_ip"));
            h
        }
    };
    let sub = sub?;
    if !ok {
        return None;
    }
    let vhost = ctx.host(&sub.vnet);
    ctx.out.push(Resource {
        id: Id::new(Kind::Nic, host.clone()),
        spec: Spec::Nic {
            vnet: vhost,
            subnet: sub.name.clone(),
            ip,
            nsg,
            asgs,
            public_ip,
        },
        span,
        path: path.to_string(),
    });
    Some(NicInfo {
        host,
        vnet: sub.vnet,
    })
}

/// Why `a` cannot be a NIC's address in `cidr` (Azure's reserved
/// addresses), if it cannot.
pub(super) fn address_problem(cidr: Option<netd::model::Cidr>, a: Ipv4Addr) -> Option<String> {
    let cidr = cidr?;
    let subnet = netd::model::Subnet {
        name: "s".parse().ok()?,
        cidr,
        nsg: None,
        ipam: netd::model::Ipam::default(),
    };
    if !cidr.contains(a) {
        Some(format!("not inside the subnet ({cidr})"))
    } else if !subnet.is_assignable(a) {
        Some(format!(
            "reserved by Azure's rules (the first four addresses and the last of {cidr})"
        ))
    } else {
        None
    }
}

/// Records that `r` (a public IP of the file) is used at `path`; a public
/// IP serves one NIC or one load balancer.
pub(super) fn claim_public_ip(ctx: &mut Ctx, r: &Spanned<String>, path: &str) -> bool {
    if let Some(other) = ctx.pip_users.get(r.as_str()) {
        let other = other.clone();
        ctx.err(
            r.span(),
            path,
            format!("public IP '{}' is already used by {other}", r.as_str()),
        );
        return false;
    }
    ctx.pip_users.insert(r.to_string(), path.to_string());
    true
}

/// Parses `128M`, `1G`, `512` (MiB).
fn parse_mib(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, scale) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1),
        Some((i, _)) => {
            let unit = t[i..].trim_end_matches(['i', 'B']);
            let scale = match unit {
                "M" | "m" => 1,
                "G" | "g" => 1024,
                _ => return Err(format!("'{text}' is not a size like 128M or 1G")),
            };
            (&t[..i], scale)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a size like 128M or 1G"))?;
    match n.checked_mul(scale) {
        Some(m) if (16..=262_144).contains(&m) => Ok(m),
        _ => Err(format!("'{text}': memory is 16M to 256G")),
    }
}

/// The image of a VM: `default` (kernel + initramfs, the default),
/// `rootfs` (the default root file system as /dev/vda) or the path of a
/// root file system image.
fn image(text: Option<&Spanned<String>>) -> Image {
    match text.map(|t| t.as_str()) {
        None | Some("default") => Image::Default,
        Some("rootfs") => Image::DefaultRootfs,
        Some(path) => Image::Rootfs { path: path.into() },
    }
}

/// Builds the VM's spec, as `nimbus vm create` would store it, and checks
/// it with the VM module's own rules.
fn check_machine(
    ctx: &mut Ctx,
    m: Machine,
    path: &str,
    host: &str,
    at: Span,
    nics: Vec<String>,
    scale_set: Option<&str>,
) -> Option<VmSpec> {
    let mut ok = true;
    let mut spec = VmSpec::new(host);
    if let Some(size) = m.size {
        if m.cpus.is_some() || m.memory.is_some() {
            ctx.err(
                size.span(),
                format!("{path}.size"),
                "give either a size or cpus/memory, not both",
            );
            ok = false;
        }
        match crate::vm::size::find(size) {
            Some(s) => {
                spec.size = Some(s.name.to_string());
                spec.vcpus = s.vcpus;
                spec.memory_mib = s.memory_mib;
            }
            None => {
                ctx.err(
                    size.span(),
                    format!("{path}.size"),
                    format!(
                        "unknown size '{}'; sizes: {}",
                        size.as_str(),
                        crate::vm::size::names()
                    ),
                );
                ok = false;
            }
        }
    }
    if let Some(c) = m.cpus {
        match u8::try_from(**c) {
            Ok(n) => spec.vcpus = n,
            Err(_) => {
                ctx.err(
                    c.span(),
                    format!("{path}.cpus"),
                    format!("{} vCPUs is too many", **c),
                );
                ok = false;
            }
        }
    }
    if let Some(t) = m.memory {
        match parse_mib(t) {
            Ok(v) => spec.memory_mib = v,
            Err(reason) => {
                ctx.err(t.span(), format!("{path}.memory"), reason);
                ok = false;
            }
        }
    }
    spec.image = image(m.image);
    for (i, d) in m.disks.iter().enumerate() {
        let dpath = format!("{path}.disks[{i}]");
        match (&d.size, &d.path) {
            (Some(s), None) => match parse_mib(s) {
                Ok(size_mib) => spec.disks.push(DiskSpec::New { size_mib }),
                Err(_) => {
                    ctx.err(
                        s.span(),
                        format!("{dpath}.size"),
                        format!("'{}' is not a size like 512M or 1G", s.as_str()),
                    );
                    ok = false;
                }
            },
            (None, Some(p)) => spec.disks.push(DiskSpec::Attach {
                path: p.as_str().into(),
                read_only: d.readonly.unwrap_or(false),
                mount: None,
            }),
            (Some(s), Some(_)) => {
                ctx.err(
                    s.span(),
                    &dpath,
                    "give either size (a new disk) or path (an existing image), not both",
                );
                ok = false;
            }
            (None, None) => {
                let span = m
                    .size
                    .or(m.image)
                    .map(|s| *s.span())
                    .unwrap_or_else(Span::new_blank);
                ctx.err(&span, &dpath, "a disk needs size or path");
                ok = false;
            }
        }
    }
    spec.nics = nics;
    spec.tags = m.tags.clone();
    spec.tags.insert(TOPOLOGY_TAG.into(), ctx.rg.clone());
    if let Some(ss) = scale_set {
        spec.tags.insert(SCALE_SET_TAG.into(), ss.to_string());
    }
    if !ok {
        return None;
    }
    if let Err(e) = spec.validate() {
        let (field, reason) = match &e {
            VmError::Invalid { field, reason, .. } => (*field, reason.clone()),
            other => ("", other.to_string()),
        };
        let span = match field {
            "vcpus" => m.cpus.map(|c| *c.span()).or(m.size.map(|s| *s.span())),
            "memory" => m.memory.map(|c| *c.span()).or(m.size.map(|s| *s.span())),
            _ => None,
        }
        .unwrap_or(at);
        let fpath = if field.is_empty() {
            path.to_string()
        } else {
            format!("{path}.{field}")
        };
        ctx.err(&span, fpath, reason);
        return None;
    }
    Some(spec)
}

fn claim_vm_name(ctx: &mut Ctx, name: &str, span: &Span, path: &str) -> bool {
    if ctx.vm_nics.contains_key(name) {
        ctx.err(
            span,
            path,
            format!("VM name '{name}' is already used (a VM or a scale set instance)"),
        );
        return false;
    }
    true
}

pub(super) fn check_nics(ctx: &mut Ctx) {
    let doc = ctx.doc;
    for (key, n) in doc.nics.iter() {
        let path = format!("nics.{}", key.as_str());
        if !ctx.check_name(key, &path, true) {
            continue;
        }
        let f = NicFields::from(n);
        let host = ctx.host(key);
        if let Some(info) = check_nic(ctx, host, f, &path, *key.span()) {
            ctx.standalone_nics.insert(key.to_string(), info);
        }
    }
}

pub(super) fn check_vms(ctx: &mut Ctx) {
    let doc = ctx.doc;
    for (key, vm) in doc.vms.iter() {
        let path = format!("vms.{}", key.as_str());
        if !ctx.check_name(key, &path, true) || !claim_vm_name(ctx, key, key.span(), &path) {
            continue;
        }
        let host = ctx.host(key);
        let mut nics: Vec<NicInfo> = Vec::new();
        let mut ok = true;
        match (&vm.subnet, &vm.nics) {
            (Some(subnet), None) => {
                let f = NicFields {
                    subnet,
                    ip: vm.ip.as_ref(),
                    nsg: vm.nsg.as_ref(),
                    asgs: vm.asgs.as_ref(),
                    public_ip: vm.public_ip.as_ref(),
                };
                match check_nic(ctx, host.clone(), f, &path, *key.span()) {
                    Some(n) => nics.push(n),
                    None => ok = false,
                }
            }
            (None, Some(list)) => {
                for (field, v) in [
                    ("ip", &vm.ip),
                    ("nsg", &vm.nsg),
                    ("public_ip", &vm.public_ip),
                ] {
                    if let Some(v) = v {
                        ctx.err(
                            v.span(),
                            format!("{path}.{field}"),
                            "with explicit nics, set this on the NIC",
                        );
                        ok = false;
                    }
                }
                if list.0.is_empty() {
                    ctx.err(
                        list.span(),
                        format!("{path}.nics"),
                        "at least one NIC is needed",
                    );
                    ok = false;
                }
                for (nkey, n) in list.iter() {
                    let npath = format!("{path}.nics.{}", nkey.as_str());
                    if !ctx.check_name(nkey, &npath, false) {
                        ok = false;
                        continue;
                    }
                    let f = NicFields::from(n);
                    match check_nic(
                        ctx,
                        format!("{host}-{}", nkey.as_str()),
                        f,
                        &npath,
                        *nkey.span(),
                    ) {
                        Some(n) => nics.push(n),
                        None => ok = false,
                    }
                }
            }
            (Some(s), Some(_)) => {
                ctx.err(
                    s.span(),
                    format!("{path}.subnet"),
                    "give either subnet (one implied NIC) or nics, not both",
                );
                ok = false;
            }
            (None, None) => {
                ctx.err(key.span(), &path, "a VM needs a subnet (or a list of nics)");
                ok = false;
            }
        }
        if let Some(first) = nics.first() {
            ctx.vm_nics.insert(key.to_string(), first.clone());
        }
        let names = nics.iter().map(|n| n.host.clone()).collect();
        if let Some(v) = check_machine(ctx, vm.machine(), &path, &host, *key.span(), names, None) {
            if ok {
                ctx.out.push(Resource {
                    id: Id::new(Kind::Vm, host),
                    spec: Spec::Vm {
                        spec: v,
                        running: true,
                    },
                    span: *key.span(),
                    path,
                });
            }
        }
    }
}

pub(super) fn check_scale_sets(ctx: &mut Ctx) {
    let doc = ctx.doc;
    for (key, ss) in doc.scale_sets.iter() {
        let path = format!("scale_sets.{}", key.as_str());
        // Known from here on even if invalid, so that references to it
        // do not add "unknown scale set" errors.
        ctx.scale_set_nics.insert(key.to_string(), Vec::new());
        if !ctx.check_name(key, &path, true) {
            continue;
        }
        let replicas = *ss.replicas;
        if replicas > MAX_REPLICAS {
            ctx.err(
                ss.replicas.span(),
                format!("{path}.replicas"),
                format!("{replicas} replicas: a scale set has 0 to {MAX_REPLICAS}"),
            );
            continue;
        }
        let autoscale = match &ss.autoscale {
            Some(a) => match super::autoscale::check(ctx, a, replicas, &path) {
                Some(a) => Some(a),
                None => continue,
            },
            None => None,
        };
        ctx.scale_sets.push(ScaleSetV {
            name: key.to_string(),
            replicas,
            autoscale,
        });
        let mut instances = Vec::new();
        for i in 0..replicas {
            let vm = format!("{}-{i}", key.as_str());
            if !claim_vm_name(ctx, &vm, key.span(), &path) {
                break;
            }
            let host = ctx.host(&vm);
            if let Err(reason) = host.parse::<netd::model::Name>() {
                ctx.err(
                    key.span(),
                    &path,
                    format!("instance host name '{host}': {reason}"),
                );
                break;
            }
            let f = NicFields {
                subnet: &ss.subnet,
                ip: None,
                nsg: ss.nsg.as_ref(),
                asgs: ss.asgs.as_ref(),
                public_ip: None,
            };
            let Some(nic) = check_nic(ctx, host.clone(), f, &path, *key.span()) else {
                break;
            };
            ctx.vm_nics.insert(vm.clone(), nic.clone());
            instances.push(nic.clone());
            if let Some(v) = check_machine(
                ctx,
                ss.machine(),
                &path,
                &host,
                *key.span(),
                vec![host.clone()],
                Some(key.as_str()),
            ) {
                ctx.out.push(Resource {
                    id: Id::new(Kind::Vm, host),
                    spec: Spec::Vm {
                        spec: v,
                        running: true,
                    },
                    span: *key.span(),
                    path: format!("{path}[{i}]"),
                });
            } else {
                break;
            }
        }
        if replicas == 0 {
            // Still resolve the subnet so a typo is reported.
            ctx.subnet_ref(&ss.subnet, &format!("{path}.subnet"));
        }
        ctx.scale_set_nics.insert(key.to_string(), instances);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_mib as memory_mib;

    #[test]
    fn memory_sizes() {
        assert_eq!(memory_mib("128M"), Ok(128));
        assert_eq!(memory_mib("1G"), Ok(1024));
        assert_eq!(memory_mib("1GiB"), Ok(1024));
        assert_eq!(memory_mib("256"), Ok(256));
        assert!(memory_mib("1T").is_err());
        assert!(memory_mib("8M").is_err());
        assert!(memory_mib("lots").is_err());
    }
}
