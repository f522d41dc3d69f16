//! `nimbus asg`.

use anyhow::Result;
use clap::{Args, Subcommand};
use netd::api::protocol::Request;

use super::Common;

/// Application security groups.
#[derive(Args, Debug)]
pub struct AsgCommand {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: AsgAction,
}

#[derive(Subcommand, Debug)]
enum AsgAction {
    /// Create an ASG (NICs join with `nimbus nic update --asg`).
    Create {
        /// Name.
        name: String,
    },
    /// List ASGs with their members.
    List,
    /// Show an ASG.
    Show {
        /// Name.
        name: String,
    },
    /// Delete an ASG no NIC or rule uses.
    Delete {
        /// Name.
        name: String,
    },
}

/// Runs `nimbus asg ...`.
pub fn dispatch(cmd: AsgCommand) -> Result<()> {
    let c = &cmd.common;
    match cmd.action {
        AsgAction::Create { name } => c.show(Request::AsgCreate { name }),
        AsgAction::List => c.list(Request::AsgList, &["name", "nics"]),
        AsgAction::Show { name } => c.show(Request::AsgShow { name }),
        AsgAction::Delete { name } => c.done(
            Request::AsgDelete { name: name.clone() },
            &format!("deleted asg {name}"),
        ),
    }
}
