//! `nimbus subnet`.

use anyhow::Result;
use clap::{Args, Subcommand};
use netd::api::protocol::Request;

use super::Common;

/// Subnets of a VNet.
#[derive(Args, Debug)]
pub struct SubnetCommand {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: SubnetAction,
}

#[derive(Subcommand, Debug)]
enum SubnetAction {
    /// Create a subnet inside a VNet's address space.
    Create {
        /// Name.
        name: String,
        /// VNet.
        #[arg(long)]
        vnet: String,
        /// Prefix, e.g. 10.0.1.0/24.
        #[arg(long)]
        cidr: String,
        /// NSG to attach.
        #[arg(long)]
        nsg: Option<String>,
    },
    /// Change a subnet's prefix (only without NICs) or its NSG.
    Update {
        /// Name.
        name: String,
        /// VNet.
        #[arg(long)]
        vnet: String,
        /// New prefix.
        #[arg(long)]
        cidr: Option<String>,
        /// NSG to attach.
        #[arg(long, conflicts_with = "no_nsg")]
        nsg: Option<String>,
        /// Detach the NSG.
        #[arg(long)]
        no_nsg: bool,
    },
    /// List subnets.
    List {
        /// Only this VNet's.
        #[arg(long)]
        vnet: Option<String>,
    },
    /// Show a subnet.
    Show {
        /// Name.
        name: String,
        /// VNet.
        #[arg(long)]
        vnet: String,
    },
    /// Delete a subnet without NICs.
    Delete {
        /// Name.
        name: String,
        /// VNet.
        #[arg(long)]
        vnet: String,
    },
}

/// Runs `nimbus subnet ...`.
pub fn dispatch(cmd: SubnetCommand) -> Result<()> {
    let c = &cmd.common;
    match cmd.action {
        SubnetAction::Create {
            name,
            vnet,
            cidr,
            nsg,
        } => c.show(Request::SubnetCreate {
            vnet,
            name,
            cidr,
            nsg,
        }),
        SubnetAction::Update {
            name,
            vnet,
            cidr,
            nsg,
            no_nsg,
        } => c.show(Request::SubnetUpdate {
            vnet,
            name,
            cidr,
            nsg,
            clear_nsg: no_nsg,
        }),
        SubnetAction::List { vnet } => c.list(
            Request::SubnetList { vnet },
            &["vnet", "name", "cidr", "gateway", "nsg"],
        ),
        SubnetAction::Show { name, vnet } => c.show(Request::SubnetShow { vnet, name }),
        SubnetAction::Delete { name, vnet } => c.done(
            Request::SubnetDelete {
                vnet: vnet.clone(),
                name: name.clone(),
            },
            &format!("deleted subnet {vnet}/{name}"),
        ),
    }
}
