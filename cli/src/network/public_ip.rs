//! `nimbus public-ip`.

use anyhow::Result;
use clap::{Args, Subcommand};
use netd::api::protocol::Request;

use super::Common;

/// Public IP addresses (DNAT in, SNAT out).
#[derive(Args, Debug)]
pub struct PublicIpCommand {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: PublicIpAction,
}

#[derive(Subcommand, Debug)]
enum PublicIpAction {
    /// Create a public IP.
    Create {
        /// Name.
        name: String,
        /// static (address reserved now) or dynamic (while attached).
        #[arg(long, default_value = "static")]
        allocation: String,
        /// Address for a static public IP (default: from netd's pool).
        #[arg(long)]
        address: Option<String>,
    },
    /// List public IPs.
    List,
    /// Show a public IP.
    Show {
        /// Name.
        name: String,
    },
    /// Delete an unattached public IP.
    Delete {
        /// Name.
        name: String,
    },
}

/// Runs `nimbus public-ip ...`.
pub fn dispatch(cmd: PublicIpCommand) -> Result<()> {
    let c = &cmd.common;
    match cmd.action {
        PublicIpAction::Create {
            name,
            allocation,
            address,
        } => c.show(Request::PublicIpCreate {
            name,
            allocation,
            address,
        }),
        PublicIpAction::List => c.list(
            Request::PublicIpList,
            &["name", "allocation", "address", "nic"],
        ),
        PublicIpAction::Show { name } => c.show(Request::PublicIpShow { name }),
        PublicIpAction::Delete { name } => c.done(
            Request::PublicIpDelete { name: name.clone() },
            &format!("deleted public-ip {name}"),
        ),
    }
}
