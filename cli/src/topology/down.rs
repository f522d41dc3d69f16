//! `nimbus down FILE`: delete exactly what the topology's record says it
//! created, in reverse dependency order, and then the record.

use std::process::ExitCode;

use anyhow::Result;
use netd::api::client::Client;

use super::apply::Executor;
use super::desired::Kind;
use super::diagnostic::{Diagnostic, Diagnostics, Pos};
use super::plan::{Action, Plan};
use super::progress::Progress;
use super::record::Store;
use super::{load, observed, Common, Refused};

/// Runs `nimbus down`. Only the file's `name` is needed: the record, not
/// the file, says what to delete, so an edited or broken file still
/// brings down what an earlier `up` made.
pub fn run(c: &Common) -> Result<ExitCode> {
    let progress = Progress::default();
    let text = std::fs::read_to_string(&c.file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", c.file.display()))?;
    let (doc, mut errors) = load::parse(&text);
    let name = match doc
        .name
        .as_ref()
        .map(|n| (n, n.parse::<netd::model::Name>()))
    {
        Some((_, Ok(n))) => n.to_string(),
        Some((n, Err(reason))) => {
            errors = vec![Diagnostic::at(n.span(), "name", reason)];
            return Err(Refused(Diagnostics::new(&c.file, errors)).into());
        }
        None => {
            if errors.is_empty() {
                errors.push(Diagnostic {
                    pos: Pos { line: 1, col: 1 },
                    path: "name".into(),
                    reason: "missing".into(),
                });
            }
            return Err(Refused(Diagnostics::new(&c.file, errors)).into());
        }
    };
    let store = Store::open(&c.host.state_dir, &name)?;
    let owned = store.snapshot().objects;
    if owned.is_empty() {
        store.delete_if_empty()?;
        println!(
            "topology {name}: nothing to remove (no record in {})",
            store.path().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let prefix = format!("{name}-");
    let mut observed = observed::observe(&mut Client::connect(&c.host.netd_socket)?, |n| {
        n.starts_with(&prefix)
    })?;
    let vms = c.vms();
    if owned.iter().any(|id| id.kind == Kind::Vm) {
        observed::observe_vms(&vms, &mut observed)?;
    }
    let mut stages: Vec<Vec<Action>> = vec![Vec::new(); usize::from(Kind::STAGES)];
    for id in &owned {
        let stage = usize::from(Kind::STAGES) - 1 - usize::from(id.kind.stage());
        stages[stage].push(Action::Delete {
            id: id.clone(),
            have: observed.objects.get(id).cloned(),
        });
    }
    stages.retain(|s| !s.is_empty());
    let plan = Plan {
        stages,
        unchanged: vec![],
    };
    println!("topology {name}: removing {} objects", plan.len());
    let exec = Executor {
        socket: &c.host.netd_socket,
        store: &store,
        progress: &progress,
        vms: &vms,
        start: crate::vm::StartOptions {
            wait_ready: None,
            progress: false,
        },
        // Everything goes: nothing to drain for.
        service: super::apply::ServiceOptions::default(),
    };
    match exec.run(&plan) {
        Ok(n) => {
            store.delete_if_empty()?;
            println!(
                "topology {name}: down in {:.2} s ({n} objects removed)",
                progress.elapsed()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("nimbus: error: {e}");
            }
            anyhow::bail!(
                "topology {name}: {} deletion(s) failed; the rest is still recorded in {}",
                errors.len(),
                store.path().display()
            )
        }
    }
}
