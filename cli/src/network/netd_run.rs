//! `nimbus netd run`: the network daemon in the foreground (the same code
//! as the `nimbus-netd` binary the systemd unit runs).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use netd::model::Cidr;

/// The host network daemon.
#[derive(Subcommand, Debug)]
pub enum NetdCommand {
    /// Run nimbus-netd in the foreground until SIGTERM/SIGINT.
    Run(RunArgs),
}

/// Options of `nimbus netd run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// State directory.
    #[arg(long, env = "NIMBUS_NETD_STATE_DIR", default_value = netd::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// API socket [default: STATE_DIR/netd.sock].
    #[arg(long, env = "NIMBUS_NETD_SOCKET")]
    socket: Option<PathBuf>,
    /// Prefix public IPs are allocated from.
    #[arg(long, env = "NIMBUS_NETD_PUBLIC_POOL")]
    public_pool: Option<Cidr>,
    /// Serve load balancer metrics (Prometheus text) on this address.
    #[arg(long, env = "NIMBUS_NETD_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// Runs `nimbus netd ...`.
pub fn dispatch(cmd: NetdCommand) -> Result<()> {
    match cmd {
        NetdCommand::Run(a) => {
            let socket = a
                .socket
                .unwrap_or_else(|| a.state_dir.join(netd::SOCKET_NAME));
            netd::daemon::run(netd::daemon::Config {
                state_dir: a.state_dir,
                socket,
                public_pool: a.public_pool,
                metrics_listen: a.metrics_listen,
            })
        }
    }
}
