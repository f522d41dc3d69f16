//! `nimbus vnet`.

use anyhow::Result;
use clap::{Args, Subcommand};
use netd::api::protocol::Request;

use super::Common;

/// Virtual networks (Linux bridges).
#[derive(Args, Debug)]
pub struct VnetCommand {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: VnetAction,
}

#[derive(Subcommand, Debug)]
enum VnetAction {
    /// Create a VNet with one or more address prefixes.
    Create {
        /// Name.
        name: String,
        /// Address space prefix (repeatable), e.g. 10.0.0.0/16.
        #[arg(long = "address-space", required = true)]
        address_space: Vec<String>,
    },
    /// List VNets.
    List,
    /// Show a VNet.
    Show {
        /// Name.
        name: String,
    },
    /// Delete a VNet (refused while it has NICs unless --force).
    Delete {
        /// Name.
        name: String,
        /// Delete its NICs too.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `nimbus vnet ...`.
pub fn dispatch(cmd: VnetCommand) -> Result<()> {
    let c = &cmd.common;
    match cmd.action {
        VnetAction::Create {
            name,
            address_space,
        } => c.show(Request::VnetCreate {
            name,
            address_space,
        }),
        VnetAction::List => c.list(
            Request::VnetList,
            &["name", "address_space", "bridge", "subnets", "nics"],
        ),
        VnetAction::Show { name } => c.show(Request::VnetShow { name }),
        VnetAction::Delete { name, force } => c.done(
            Request::VnetDelete {
                name: name.clone(),
                force,
            },
            &format!("deleted vnet {name}"),
        ),
    }
}
