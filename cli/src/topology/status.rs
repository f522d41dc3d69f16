//! `nimbus status FILE`: each object of the topology and its state.

use std::collections::BTreeSet;

use serde::Serialize;

use super::desired::{Desired, Id};
use super::observed::Observed;
use crate::output::OutputFormat;

/// State of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Exists and matches the file.
    Ok,
    /// Exists but differs; the next `up` changes it.
    Differs,
    /// Not on the host; the next `up` creates it.
    Missing,
    /// Exists but is not this topology's; `up` refuses.
    Conflict,
    /// Owned but no longer in the file; the next `up` deletes it.
    Orphaned,
}

/// One row of the status.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Kind.
    pub kind: String,
    /// Path in the file (empty for orphans).
    pub path: String,
    /// Host name.
    pub name: String,
    /// State.
    pub state: State,
    /// What the host says (bridge, TAP and address, frontend...).
    pub detail: String,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Topology name.
    pub topology: String,
    /// Rows in creation order.
    pub resources: Vec<Row>,
    /// True when every object is `ok`.
    pub up_to_date: bool,
}

/// Computes the status of `desired` on the host.
pub fn status(desired: &Desired, observed: &Observed, owned: &BTreeSet<Id>) -> Status {
    let mut rows = Vec::new();
    for r in &desired.resources {
        let state = match observed.objects.get(&r.id) {
            None => State::Missing,
            Some(_) if !owned.contains(&r.id) => State::Conflict,
            Some(have) if r.spec.matches(have) => State::Ok,
            Some(_) => State::Differs,
        };
        rows.push(Row {
            kind: r.id.kind.to_string(),
            path: r.path.clone(),
            name: r.id.name.clone(),
            state,
            detail: observed.details.get(&r.id).cloned().unwrap_or_default(),
        });
    }
    for id in owned.iter().filter(|id| desired.get(id).is_none()) {
        rows.push(Row {
            kind: id.kind.to_string(),
            path: String::new(),
            name: id.name.clone(),
            state: State::Orphaned,
            detail: observed
                .details
                .get(id)
                .cloned()
                .unwrap_or_else(|| "gone".into()),
        });
    }
    let up_to_date = rows.iter().all(|r| r.state == State::Ok);
    Status {
        topology: desired.name.clone(),
        resources: rows,
        up_to_date,
    }
}

/// Prints a status as a table or JSON.
pub fn print(s: &Status, format: OutputFormat) -> serde_json::Result<()> {
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let header = ["KIND", "NAME", "STATE", "HOST NAME", "DETAIL"];
    let cells: Vec<[String; 5]> = s
        .resources
        .iter()
        .map(|r| {
            let state = serde_json::to_value(r.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let path = if r.path.is_empty() {
                "-".into()
            } else {
                r.path.clone()
            };
            [
                r.kind.clone(),
                path,
                state,
                r.name.clone(),
                r.detail.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |items: &[String]| {
        let parts: Vec<String> = items
            .iter()
            .zip(widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(&header.map(str::to_string));
    for row in &cells {
        line(row);
    }
    println!(
        "topology {}: {}",
        s.topology,
        if s.up_to_date {
            "up to date"
        } else {
            "not up to date (run `nimbus up`)"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::desired::{Kind, Spec};
    use crate::topology::load::parse;
    use crate::topology::validate::validate;

    #[test]
    fn states_of_objects() {
        let (doc, e) = parse(
            "name: rg\nvnets:\n  a: {address_space: 10.1.0.0/16}\n  b: {address_space: 10.2.0.0/16}\n  c: {address_space: 10.3.0.0/16}\n  d: {address_space: 10.4.0.0/16}\n",
        );
        assert!(e.is_empty());
        let d = validate(&doc).expect("valid");
        let vnet = |n: &str| Id::new(Kind::Vnet, n);
        let space = |p: &str| Spec::Vnet {
            address_space: vec![p.into()],
        };
        let mut o = Observed::default();
        o.objects.insert(vnet("rg-a"), space("10.1.0.0/16"));
        o.objects.insert(vnet("rg-b"), space("10.9.0.0/16"));
        o.objects.insert(vnet("rg-c"), space("10.3.0.0/16"));
        o.objects.insert(vnet("rg-old"), space("10.8.0.0/16"));
        let owned: BTreeSet<Id> = [vnet("rg-a"), vnet("rg-b"), vnet("rg-old")].into();
        let s = status(&d, &o, &owned);
        let states: Vec<(&str, State)> = s
            .resources
            .iter()
            .map(|r| (r.name.as_str(), r.state))
            .collect();
        assert_eq!(
            states,
            [
                ("rg-a", State::Ok),
                ("rg-b", State::Differs),
                ("rg-c", State::Conflict),
                ("rg-d", State::Missing),
                ("rg-old", State::Orphaned),
            ]
        );
        assert!(!s.up_to_date);
    }
}
