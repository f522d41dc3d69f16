//! `nimbus-netd`: the host network daemon (foreground; see
//! scripts/nimbus-netd.service).

use std::path::PathBuf;

use clap::Parser;

use netd::daemon::Config;
use netd::model::Cidr;

/// nimbus's host network daemon: VNets, subnets, NICs, NSGs/ASGs and
/// public IPs on Linux bridges, TAPs and nftables.
#[derive(Parser, Debug)]
#[command(name = "nimbus-netd", version, about)]
struct Args {
    /// State directory (state.json, and the socket unless --socket).
    #[arg(long, env = "NIMBUS_NETD_STATE_DIR", default_value = netd::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// API socket path [default: STATE_DIR/netd.sock].
    #[arg(long, env = "NIMBUS_NETD_SOCKET")]
    socket: Option<PathBuf>,
    /// Prefix public IPs are allocated from (e.g. 203.0.113.0/24).
    #[arg(long, env = "NIMBUS_NETD_PUBLIC_POOL")]
    public_pool: Option<Cidr>,
    /// Serve Prometheus metrics of the load balancers on this address
    /// (e.g. 127.0.0.1:9101), path /metrics.
    #[arg(long, env = "NIMBUS_NETD_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIMBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| args.state_dir.join(netd::SOCKET_NAME));
    let config = Config {
        state_dir: args.state_dir,
        socket,
        public_pool: args.public_pool,
        metrics_listen: args.metrics_listen,
    };
    netd::daemon::run(config)
}
