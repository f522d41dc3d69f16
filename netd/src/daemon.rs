//! The daemon: one desired state, realized on the host and persisted.
//!
//! Every change is computed on a copy of the state (so a refusal changes
//! nothing), then realized — links first, then the ruleset in one nft
//! transaction — and only then saved. The saved file is the commit point:
//! if netd dies before saving, the next start converges the host back to
//! the saved state (removing the links of the unfinished change); if it
//! dies after, the next start re-applies the new state. Either way the host
//! ends up matching exactly one state, with no orphans.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::api::protocol::{Request, Response};
use crate::error::NetError;
use crate::host::links::Links;
use crate::host::{realize, sysctl};
use crate::lb::Balancer;
use crate::model::Cidr;
use crate::nft;
use crate::state::store::Store;
use crate::state::State;

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the state file lives.
    pub state_dir: PathBuf,
    /// API socket path.
    pub socket: PathBuf,
    /// Pool public IPs are allocated from.
    pub public_pool: Option<Cidr>,
    /// Where to serve load balancer metrics (Prometheus text).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Test hook: `NIMBUS_NETD_CRASH_AFTER=links` makes netd kill itself with
/// SIGKILL after realizing a change's links and before saving it, which is
/// the worst moment for consistency. Used by the crash-recovery test.
const CRASH_ENV: &str = "NIMBUS_NETD_CRASH_AFTER";

/// The running daemon.
pub struct Daemon {
    state: Mutex<State>,
    store: Store,
    links: Links,
    crash_after_links: bool,
    balancer: Arc<Balancer>,
}

impl Daemon {
    /// Loads (or creates) the state and converges the host to it: links
    /// re-adopted or re-created, unknown nimbus links removed, ruleset
    /// re-applied.
    pub async fn start(config: &Config) -> anyhow::Result<Arc<Self>> {
        sysctl::enable_forwarding()?;
        let store = Store::open(&config.state_dir)?;
        let mut state = store
            .load()?
            .unwrap_or_else(|| State::new(config.public_pool));
        state.public_pool = config.public_pool.or(state.public_pool);
        let links = Links::connect()?;
        let report = realize::converge(&links, &state).await?;
        info!(created = ?report.created, removed = ?report.removed, "host converged to saved state");
        apply_ruleset(&state).await?;
        let balancer = Balancer::new();
        balancer.reconcile(&state)?;
        store.save(&state)?;
        let janitor = balancer.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                janitor.prune_drained();
            }
        });
        Ok(Arc::new(Daemon {
            balancer,
            state: Mutex::new(state),
            store,
            links,
            crash_after_links: std::env::var(CRASH_ENV).is_ok_and(|v| v == "links"),
        }))
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request) -> Response {
        Response::from_result(self.dispatch(request).await)
    }

    async fn dispatch(&self, request: Request) -> Result<Value, NetError> {
        let mut current = self.state.lock().await;
        if !request.is_change() {
            let mut v = current.apply(&request)?;
            match (&request, &mut v) {
                (Request::LbShow { .. }, v) => self.balancer.annotate(v),
                (Request::LbList, Value::Array(list)) => {
                    list.iter_mut().for_each(|v| self.balancer.annotate(v))
                }
                _ => {}
            }
            return Ok(v);
        }
        let mut next = current.clone();
        let result = next.apply(&request)?;
        if let Err(e) = self.realize(&next).await {
            warn!(error = %e, "change failed; restoring the previous state on the host");
            if let Err(e2) = self.realize(&current).await {
                warn!(error = %e2, "could not fully restore the previous state");
            }
            return Err(e);
        }
        if let Err(e) = self.store.save(&next) {
            let _ = self.realize(&current).await;
            return Err(NetError::host("saving the state", e));
        }
        *current = next;
        Ok(result)
    }

    async fn realize(&self, state: &State) -> Result<(), NetError> {
        realize::converge(&self.links, state).await?;
        if self.crash_after_links {
            // SAFETY: raising SIGKILL on ourselves; no memory is involved.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        apply_ruleset(state).await?;
        self.balancer.reconcile(state)
    }

    /// The load balancers' data path.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }
}

async fn apply_ruleset(state: &State) -> Result<(), NetError> {
    let text = nft::ruleset::render(state);
    tokio::task::spawn_blocking(move || nft::apply::apply(&text))
        .await
        .map_err(|e| NetError::host("applying the ruleset", e))?
}

/// Runs the daemon in the foreground until SIGTERM or SIGINT. Links and
/// rules stay in place when it stops; the next start re-adopts them.
pub fn run(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let daemon = Daemon::start(&config)
            .await
            .context("starting nimbus-netd")?;
        let listener = crate::api::server::bind(&config.socket)
            .with_context(|| format!("binding {}", config.socket.display()))?;
        if let Some(addr) = config.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint {addr}"))?;
            tokio::spawn(crate::lb::metrics::serve(listener, daemon.balancer().clone()));
        }
        info!(socket = %config.socket.display(), "nimbus-netd ready");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = crate::api::server::serve(listener, daemon.clone()) => r.context("serving the API")?,
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
        }
        daemon.balancer().stop_all();
        let _ = std::fs::remove_file(&config.socket);
        Ok(())
    })
}
