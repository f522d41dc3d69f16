//! Reading a topology file: YAML syntax, then the shape of every object.
//! Each object is read on its own so that one bad object does not hide
//! the errors of the others.

use marked_yaml::{LoadError, LoaderOptions, Node, Span, Spanned};
use serde::de::DeserializeOwned;

use super::diagnostic::{Diagnostic, Pos};
use super::schema::{
    LbSpec, Named, NicSpecY, NsgSpec, PublicIpSpec, ScaleSetSpec, VmSpec, VnetSpec, SECTIONS,
};

/// The file, read but not yet checked for meaning.
#[derive(Debug, Clone, Default)]
pub struct Document {
    /// The topology's name (an Azure resource group).
    pub name: Option<Spanned<String>>,
    /// VNets.
    pub vnets: Named<VnetSpec>,
    /// NSGs.
    pub nsgs: Named<NsgSpec>,
    /// ASGs (no properties).
    pub asgs: Named<()>,
    /// Public IPs.
    pub public_ips: Named<PublicIpSpec>,
    /// Standalone NICs.
    pub nics: Named<NicSpecY>,
    /// Load balancers.
    pub load_balancers: Named<LbSpec>,
    /// VMs.
    pub vms: Named<VmSpec>,
    /// Scale sets.
    pub scale_sets: Named<ScaleSetSpec>,
    /// `(section, name)` of objects that could not be read: references to
    /// them are not reported again as unknown.
    pub broken: std::collections::BTreeSet<(String, String)>,
}

impl Document {
    /// True when object `name` of `section` is declared but unreadable.
    pub fn is_broken(&self, section: &str, name: &str) -> bool {
        self.broken
            .contains(&(section.to_string(), name.to_string()))
    }

    /// True when some object of `section` is unreadable.
    pub fn section_broken(&self, section: &str) -> bool {
        self.broken.iter().any(|(s, _)| s == section)
    }
}

/// Reads `text`; every problem found is returned (the document is then
/// only partly filled).
pub fn parse(text: &str) -> (Document, Vec<Diagnostic>) {
    let mut doc = Document::default();
    let mut errors = Vec::new();
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(root) => root,
        Err(e) => {
            errors.push(load_error(&e));
            return (doc, errors);
        }
    };
    let Some(top) = root.as_mapping() else {
        errors.push(Diagnostic::at(
            root.span(),
            "",
            "a topology file is a mapping with `name:` and sections",
        ));
        return (doc, errors);
    };
    for (key, value) in top.iter() {
        let section = key.as_str();
        match section {
            "name" => match value.as_scalar() {
                Some(s) => doc.name = Some(Spanned::new(*s.span(), s.as_str().to_string())),
                None => errors.push(Diagnostic::at(value.span(), "name", "expected a name")),
            },
            "description" => {}
            "vnets" => doc.vnets = items(section, value, &mut errors, &mut doc.broken),
            "nsgs" => doc.nsgs = items(section, value, &mut errors, &mut doc.broken),
            "asgs" => doc.asgs = names(section, value, &mut errors),
            "public_ips" => doc.public_ips = items(section, value, &mut errors, &mut doc.broken),
            "nics" => doc.nics = items(section, value, &mut errors, &mut doc.broken),
            "load_balancers" => {
                doc.load_balancers = items(section, value, &mut errors, &mut doc.broken)
            }
            "vms" => doc.vms = items(section, value, &mut errors, &mut doc.broken),
            "scale_sets" => doc.scale_sets = items(section, value, &mut errors, &mut doc.broken),
            other => errors.push(Diagnostic::at(
                key.span(),
                other,
                format!("unknown section; expected one of: {}", SECTIONS.join(", ")),
            )),
        }
    }
    if doc.name.is_none() {
        errors.push(Diagnostic {
            pos: Pos { line: 1, col: 1 },
            path: "name".into(),
            reason: "missing: every topology has a `name` (its resource group)".into(),
        });
    }
    (doc, errors)
}

fn load_error(e: &LoadError) -> Diagnostic {
    let (marker, reason) = match e {
        LoadError::TopLevelMustBeMapping(m) => (*m, "a topology file is a mapping".to_string()),
        LoadError::TopLevelMustBeSequence(m) => (*m, "unexpected sequence".to_string()),
        LoadError::UnexpectedAnchor(m) => (*m, "anchors are not supported".to_string()),
        LoadError::MappingKeyMustBeScalar(m) => (*m, "keys must be plain names".to_string()),
        LoadError::UnexpectedTag(m) => (*m, "YAML tags are not supported".to_string()),
        LoadError::ScanError(m, s) => (*m, format!("YAML syntax: {}", s.info())),
        LoadError::DuplicateKey(inner) => {
            let first = Pos::of(inner.prev_key.span());
            let m = inner
                .key
                .span()
                .start()
                .copied()
                .unwrap_or_else(|| marked_yaml::Marker::new(0, 0, 0, 0));
            (
                m,
                format!(
                    "duplicate name '{}' (first at line {})",
                    inner.key.as_str(),
                    first.line
                ),
            )
        }
    };
    Diagnostic {
        pos: Pos {
            line: marker.line(),
            col: marker.column(),
        },
        path: String::new(),
        reason,
    }
}

/// Reads a section that maps names to objects of type `T`.
fn items<T: DeserializeOwned>(
    section: &str,
    node: &Node,
    errors: &mut Vec<Diagnostic>,
    broken: &mut std::collections::BTreeSet<(String, String)>,
) -> Named<T> {
    let mut out = Vec::new();
    let map = match node {
        Node::Mapping(m) => m,
        Node::Scalar(s) if s.as_str().is_empty() => return Named::default(),
        _ => {
            errors.push(Diagnostic::at(
                node.span(),
                section,
                "expected a mapping from names to objects",
            ));
            return Named::default();
        }
    };
    for (key, value) in map.iter() {
        let path = format!("{section}.{}", key.as_str());
        match marked_yaml::from_node::<T>(value) {
            Ok(item) => out.push((Spanned::new(*key.span(), key.as_str().to_string()), item)),
            Err(e) => {
                errors.push(shape_error(&path, value.span(), &e));
                broken.insert((section.to_string(), key.as_str().to_string()));
            }
        }
    }
    Named(out)
}

/// Reads a section of plain names: a list (`asgs: [web, db]`) or a
/// mapping with empty values.
fn names(section: &str, node: &Node, errors: &mut Vec<Diagnostic>) -> Named<()> {
    let mut out: Vec<(Spanned<String>, ())> = Vec::new();
    let mut push = |span: &Span, name: &str, errors: &mut Vec<Diagnostic>| {
        if let Some((first, _)) = out.iter().find(|(k, _)| k.as_str() == name) {
            errors.push(Diagnostic::at(
                span,
                format!("{section}.{name}"),
                format!(
                    "duplicate name (first at line {})",
                    Pos::of(first.span()).line
                ),
            ));
        } else {
            out.push((Spanned::new(*span, name.to_string()), ()));
        }
    };
    match node {
        Node::Sequence(seq) => {
            for item in seq.iter() {
                match item.as_scalar() {
                    Some(s) => push(s.span(), s.as_str(), errors),
                    None => errors.push(Diagnostic::at(item.span(), section, "expected a name")),
                }
            }
        }
        Node::Mapping(map) => {
            for (key, value) in map.iter() {
                let empty = value.as_scalar().is_some_and(|s| s.as_str().is_empty())
                    || value.as_mapping().is_some_and(|m| m.is_empty());
                if !empty {
                    errors.push(Diagnostic::at(
                        value.span(),
                        format!("{section}.{}", key.as_str()),
                        "this object has no properties",
                    ));
                }
                push(key.span(), key.as_str(), errors);
            }
        }
        Node::Scalar(s) if s.as_str().is_empty() => {}
        _ => errors.push(Diagnostic::at(
            node.span(),
            section,
            "expected a list of names",
        )),
    }
    Named(out)
}

fn shape_error(path: &str, fallback: &Span, e: &marked_yaml::FromNodeError) -> Diagnostic {
    let pos = e
        .start_mark()
        .map(|m| Pos {
            line: m.line(),
            col: m.column(),
        })
        .unwrap_or_else(|| Pos::of(fallback));
    let full = match e.path() {
        Some(inner) => format!("{path}.{}", clean_path(inner)),
        None => path.to_string(),
    };
    Diagnostic {
        pos,
        path: full,
        reason: reason_of(e),
    }
}

/// serde's messages, worded for someone editing YAML.
fn reason_of(e: &marked_yaml::FromNodeError) -> String {
    use marked_yaml::Error;
    match &**e {
        Error::UnknownFieldError(field, expected, _) => format!(
            "unknown field `{field}`; expected one of: {}",
            expected.join(", ")
        ),
        Error::IntegerParseFailure(err, _) => format!("not a whole number in range: {err}"),
        Error::NotBoolean(_) => "expected true or false".into(),
        other => {
            let text = other.to_string();
            text.replace("missing field", "missing required field")
        }
    }
}

/// serde-path renders our `Named` keys as `?`; drop those segments'
/// noise while keeping field names.
fn clean_path(p: &str) -> String {
    p.split('.')
        .filter(|s| !s.is_empty() && *s != "?")
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_in_order_with_spans() {
        let (doc, errors) = parse(
            "name: rg\nvnets:\n  app:\n    address_space: 10.0.0.0/16\n    subnets:\n      web: {cidr: 10.0.1.0/24}\nasgs: [web, db]\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let (name, vnet) = &doc.vnets.0[0];
        assert_eq!(name.as_str(), "app");
        assert_eq!(Pos::of(name.span()), Pos { line: 3, col: 3 });
        let (sname, subnet) = &vnet.subnets.0[0];
        assert_eq!(sname.as_str(), "web");
        assert_eq!(Pos::of(subnet.cidr.span()).line, 6);
        assert_eq!(doc.asgs.0.len(), 2);
    }

    #[test]
    fn shape_errors_of_every_object_are_listed() {
        let (_, errors) = parse(
            "name: rg\nvnets:\n  a:\n    adress_space: 10.0.0.0/16\n  b:\n    address_space: 10.1.0.0/16\n    subnets:\n      s: {cidr: 10.1.0.0/24, nsgg: x}\nnsgs:\n  n:\n    rules:\n      r: {priority: high}\n",
        );
        let lines: Vec<(usize, &str)> = errors
            .iter()
            .map(|d| (d.pos.line, d.path.as_str()))
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(lines[0].0, 4, "{errors:?}");
        assert!(errors[0].reason.contains("adress_space"), "{errors:?}");
        assert_eq!(lines[1].0, 8, "{errors:?}");
        assert!(errors[1].reason.contains("nsgg"), "{errors:?}");
        assert_eq!(lines[2].0, 12, "{errors:?}");
        assert!(errors[2].path.contains("priority"), "{errors:?}");
    }

    #[test]
    fn duplicate_names_and_syntax_errors_have_lines() {
        let (_, errors) = parse("name: rg\nvnets:\n  a: {address_space: 10.0.0.0/16}\n  a: {address_space: 10.1.0.0/16}\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pos.line, 4);
        assert!(errors[0]
            .reason
            .contains("duplicate name 'a' (first at line 3)"));
        let (_, errors) = parse("name: rg\nvnets: [\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].reason.starts_with("YAML syntax"), "{errors:?}");
    }

    #[test]
    fn unknown_section_and_missing_name() {
        let (_, errors) = parse("vnet: {}\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|d| d.reason.contains("unknown section")));
        assert!(errors.iter().any(|d| d.path == "name"));
    }
}
