//! `nimbus nic`.

use anyhow::Result;
use clap::{Args, Subcommand};
use netd::api::protocol::Request;

use super::Common;

/// Network interfaces (TAPs on a VNet's bridge).
#[derive(Args, Debug)]
pub struct NicCommand {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: NicAction,
}

#[derive(Subcommand, Debug)]
enum NicAction {
    /// Create a NIC in a subnet.
    Create {
        /// Name.
        name: String,
        /// VNet.
        #[arg(long)]
        vnet: String,
        /// Subnet.
        #[arg(long)]
        subnet: String,
        /// Static private IP (default: the next free address).
        #[arg(long)]
        ip: Option<String>,
        /// MAC address (default: generated).
        #[arg(long)]
        mac: Option<String>,
        /// NSG to attach.
        #[arg(long)]
        nsg: Option<String>,
        /// ASG membership (repeatable).
        #[arg(long = "asg")]
        asgs: Vec<String>,
        /// Public IP to attach.
        #[arg(long)]
        public_ip: Option<String>,
        /// uid allowed to open the TAP (a non-root VMM).
        #[arg(long)]
        tap_owner: Option<u32>,
        /// Realize as a veth into this network namespace (labs, tests).
        #[arg(long)]
        attach_netns: Option<String>,
    },
    /// Change a NIC's NSG, ASGs or public IP.
    Update {
        /// Name.
        name: String,
        /// NSG to attach.
        #[arg(long, conflicts_with = "no_nsg")]
        nsg: Option<String>,
        /// Detach the NSG.
        #[arg(long)]
        no_nsg: bool,
        /// Replace ASG membership (repeatable; give --asg '' ... none with --no-asgs).
        #[arg(long = "asg", conflicts_with = "no_asgs")]
        asgs: Vec<String>,
        /// Leave every ASG.
        #[arg(long)]
        no_asgs: bool,
        /// Public IP to attach.
        #[arg(long, conflicts_with = "no_public_ip")]
        public_ip: Option<String>,
        /// Detach the public IP.
        #[arg(long)]
        no_public_ip: bool,
    },
    /// List NICs.
    List,
    /// Show a NIC.
    Show {
        /// Name.
        name: String,
    },
    /// Delete a NIC.
    Delete {
        /// Name.
        name: String,
    },
}

/// Runs `nimbus nic ...`.
pub fn dispatch(cmd: NicCommand) -> Result<()> {
    let c = &cmd.common;
    match cmd.action {
        NicAction::Create {
            name,
            vnet,
            subnet,
            ip,
            mac,
            nsg,
            asgs,
            public_ip,
            tap_owner,
            attach_netns,
        } => c.show(Request::NicCreate {
            name,
            vnet,
            subnet,
            ip,
            mac,
            nsg,
            asgs,
            public_ip,
            tap_owner,
            attach_netns,
        }),
        NicAction::Update {
            name,
            nsg,
            no_nsg,
            asgs,
            no_asgs,
            public_ip,
            no_public_ip,
        } => {
            let asgs = if no_asgs {
                Some(vec![])
            } else if asgs.is_empty() {
                None
            } else {
                Some(asgs)
            };
            c.show(Request::NicUpdate {
                name,
                nsg,
                clear_nsg: no_nsg,
                asgs,
                public_ip,
                clear_public_ip: no_public_ip,
            })
        }
        NicAction::List => c.list(
            Request::NicList,
            &[
                "name",
                "vnet",
                "subnet",
                "ip",
                "mac",
                "nsg",
                "asgs",
                "public_address",
                "host_interface",
            ],
        ),
        NicAction::Show { name } => c.show(Request::NicShow { name }),
        NicAction::Delete { name } => c.done(
            Request::NicDelete { name: name.clone() },
            &format!("deleted nic {name}"),
        ),
    }
}
