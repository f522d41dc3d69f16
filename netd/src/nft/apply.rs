//! Applying a ruleset with `nft -f`: the whole text is one transaction, so
//! a failing change leaves the ruleset in force untouched.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::NetError;

/// Applies `ruleset` atomically.
pub fn apply(ruleset: &str) -> Result<(), NetError> {
    run(&["-f", "-"], Some(ruleset)).map(|_| ())
}

/// Removes nimbus's tables (used when netd is told to clean up).
pub fn remove_tables() -> Result<(), NetError> {
    let text = format!(
        "table inet {t}\ndelete table inet {t}\ntable bridge {t}\ndelete table bridge {t}\n",
        t = super::TABLE
    );
    apply(&text)
}

/// Lists nimbus's tables as nft prints them.
pub fn list() -> Result<String, NetError> {
    let mut out = String::new();
    for family in ["inet", "bridge"] {
        out.push_str(&run(&["list", "table", family, super::TABLE], None)?);
    }
    Ok(out)
}

fn run(args: &[&str], stdin: Option<&str>) -> Result<String, NetError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::host("running nft (is the nftables package installed?)", e))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| NetError::host("writing the ruleset to nft", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::host("waiting for nft", e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = stderr.lines().take(6).collect();
        return Err(NetError::host(
            "applying the nftables ruleset",
            first.join(" | "),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
