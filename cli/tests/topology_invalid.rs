//! The invalid-file corpus (`tests/topologies/invalid/`): the real `nimbus
//! up` against a real netd in a private network namespace refuses each
//! file with exit status 2 and its expected messages (each at its line),
//! and the host is byte-for-byte unchanged (`nft list ruleset`, `ip -d
//! link`). Needs root.

mod common;

use std::path::PathBuf;

use common::{repo, Host};

/// `# expect: LINE: TEXT` and `# setup: ARGS` lines of a corpus file.
struct Case {
    file: PathBuf,
    expects: Vec<(usize, String)>,
    setup: Vec<Vec<String>>,
}

fn cases() -> Vec<Case> {
    let dir = repo().join("tests/topologies/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("read corpus file");
            let mut expects = Vec::new();
            let mut setup = Vec::new();
            for line in text.lines() {
                if let Some(e) = line.strip_prefix("# expect: ") {
                    let (n, msg) = e.split_once(": ").expect("# expect: LINE: TEXT");
                    expects.push((n.parse().expect("line number"), msg.to_string()));
                } else if let Some(s) = line.strip_prefix("# setup: ") {
                    setup.push(s.split_whitespace().map(str::to_string).collect());
                }
            }
            assert!(
                !expects.is_empty(),
                "{} has no `# expect:` line",
                file.display()
            );
            Case {
                file,
                expects,
                setup,
            }
        })
        .collect()
}

#[test]
fn every_invalid_file_is_refused_and_the_host_is_unchanged() {
    let cases = cases();
    assert!(cases.len() >= 10, "the corpus has {} files", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        // One host per file: setup objects of one case must not leak
        // into another.
        let host = Host::new();
        for args in &case.setup {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            host.ok(&args);
        }
        let (rules_before, links_before) = (host.ruleset(), host.settled_links());
        let file = case.file.to_str().expect("utf-8 path");
        let run = host.nimbus(&["up", file]);
        let name = case
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if run.code != Some(2) {
            failures.push(format!(
                "{name}: exit status {:?}, not 2\n{}",
                run.code,
                run.transcript()
            ));
        }
        for (line, text) in &case.expects {
            let at = format!("{file}:{line}:");
            if !run
                .stderr
                .lines()
                .any(|l| l.starts_with(&at) && l.contains(text.as_str()))
            {
                failures.push(format!(
                    "{name}: no line `{at}...{text}`\n{}",
                    run.transcript()
                ));
            }
        }
        if !run.stderr.contains("nothing was changed") {
            failures.push(format!(
                "{name}: does not say that nothing changed\n{}",
                run.transcript()
            ));
        }
        if host.ruleset() != rules_before {
            failures.push(format!("{name}: the nft ruleset changed"));
        }
        if host.links() != links_before {
            failures.push(format!(
                "{name}: links changed:\n{links_before}\n---\n{}",
                host.links()
            ));
        }
        if host
            .state_dir()
            .join("topologies")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
        {
            failures.push(format!("{name}: a topology record was written"));
        }
        println!(
            "{name}: refused as expected ({} messages)",
            case.expects.len()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
