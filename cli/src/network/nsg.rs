//! `nimbus nsg` and `nimbus nsg rule`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use netd::api::protocol::{Request, RuleSpec};

use super::Common;

/// Network security groups and their rules.
#[derive(Args, Debug)]
pub struct NsgCommand {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: NsgAction,
}

#[derive(Subcommand, Debug)]
enum NsgAction {
    /// Create an NSG (Azure's six default rules are always present).
    Create {
        /// Name.
        name: String,
        /// JSON file with a list of rules (fields as in `nsg rule list --output json`).
        #[arg(long)]
        rules_file: Option<PathBuf>,
    },
    /// List NSGs.
    List,
    /// Show an NSG.
    Show {
        /// Name.
        name: String,
    },
    /// Delete an NSG that is not attached.
    Delete {
        /// Name.
        name: String,
    },
    /// Rules of an NSG.
    #[command(subcommand)]
    Rule(RuleAction),
}

#[derive(Subcommand, Debug)]
enum RuleAction {
    /// Add a rule.
    Add {
        /// NSG.
        nsg: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// List rules, default rules included, in evaluation order.
    List {
        /// NSG.
        nsg: String,
    },
    /// Delete a rule.
    Delete {
        /// NSG.
        nsg: String,
        /// Rule name.
        name: String,
    },
}

#[derive(Args, Debug)]
struct RuleArgs {
    /// Rule name.
    #[arg(long)]
    name: String,
    /// 100-4096; lower is evaluated first.
    #[arg(long)]
    priority: u32,
    /// Inbound or Outbound.
    #[arg(long, default_value = "Inbound")]
    direction: String,
    /// Allow or Deny.
    #[arg(long, default_value = "Allow")]
    access: String,
    /// Tcp, Udp, Icmp, Esp, Ah or '*'.
    #[arg(long, default_value = "*")]
    protocol: String,
    /// Source: CIDR, address, '*', VirtualNetwork, Internet, AzureLoadBalancer or asg:NAME (repeatable).
    #[arg(long = "source")]
    sources: Vec<String>,
    /// Source port or range (repeatable).
    #[arg(long = "source-port")]
    source_ports: Vec<String>,
    /// Destination, same forms as --source (repeatable).
    #[arg(long = "destination")]
    destinations: Vec<String>,
    /// Destination port or range (repeatable).
    #[arg(long = "destination-port")]
    destination_ports: Vec<String>,
}

/// Runs `nimbus nsg ...`.
pub fn dispatch(cmd: NsgCommand) -> Result<()> {
    let c = &cmd.common;
    match cmd.action {
        NsgAction::Create { name, rules_file } => {
            let rules = match rules_file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str::<Vec<RuleSpec>>(&text)
                        .with_context(|| format!("{}: not a JSON list of rules", path.display()))?
                }
                None => vec![],
            };
            c.show(Request::NsgCreate { name, rules })
        }
        NsgAction::List => c.list(Request::NsgList, &["name", "rules", "subnets", "nics"]),
        NsgAction::Show { name } => c.show(Request::NsgShow { name }),
        NsgAction::Delete { name } => c.done(
            Request::NsgDelete { name: name.clone() },
            &format!("deleted nsg {name}"),
        ),
        NsgAction::Rule(RuleAction::Add { nsg, rule }) => {
            let r = rule;
            let spec = RuleSpec {
                name: r.name,
                priority: r.priority,
                direction: r.direction,
                access: r.access,
                protocol: r.protocol,
                sources: r.sources,
                source_ports: r.source_ports,
                destinations: r.destinations,
                destination_ports: r.destination_ports,
            };
            c.show(Request::NsgRuleAdd { nsg, rule: spec })
        }
        NsgAction::Rule(RuleAction::List { nsg }) => c.list(
            Request::NsgRuleList { nsg },
            &[
                "priority",
                "name",
                "direction",
                "access",
                "protocol",
                "source",
                "source_ports",
                "destination",
                "destination_ports",
            ],
        ),
        NsgAction::Rule(RuleAction::Delete { nsg, name }) => c.done(
            Request::NsgRuleDelete {
                nsg: nsg.clone(),
                name: name.clone(),
            },
            &format!("deleted rule {name} of nsg {nsg}"),
        ),
    }
}
