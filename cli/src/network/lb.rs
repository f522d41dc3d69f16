//! `nimbus lb`: load balancers (frontend, backend pools, probes, rules).

use anyhow::Result;
use clap::{Args, Subcommand};
use netd::api::protocol::{LbRuleSpec, MemberSpec, ProbeSpec, Request};
use serde_json::Value;

use super::{cell, print_table, Common};
use crate::output::{print_key_values, OutputFormat};

/// Load balancers: a frontend IP, backend pools of NICs, health probes and
/// rules (userspace L4 proxy in nimbus-netd).
#[derive(Args, Debug)]
pub struct LbCommand {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: LbAction,
}

#[derive(Subcommand, Debug)]
enum LbAction {
    /// Create a load balancer: public (--public-ip) or internal (--vnet and
    /// --subnet).
    Create {
        /// Name.
        name: String,
        /// Public IP object of a public load balancer.
        #[arg(long, conflicts_with_all = ["vnet", "subnet", "private_ip"])]
        public_ip: Option<String>,
        /// VNet of an internal load balancer.
        #[arg(long, requires = "subnet")]
        vnet: Option<String>,
        /// Subnet of an internal load balancer.
        #[arg(long, requires = "vnet")]
        subnet: Option<String>,
        /// Private frontend address (default: the subnet's next free one).
        #[arg(long)]
        private_ip: Option<String>,
    },
    /// List load balancers.
    List,
    /// Show a load balancer, with probe state and counters per backend.
    Show {
        /// Name.
        name: String,
    },
    /// Delete a load balancer.
    Delete {
        /// Name.
        name: String,
    },
    /// Backend pools.
    #[command(subcommand)]
    Pool(PoolAction),
    /// Health probes.
    #[command(subcommand)]
    Probe(ProbeAction),
    /// Load-balancing rules.
    #[command(subcommand)]
    Rule(RuleAction),
}

#[derive(Subcommand, Debug)]
enum PoolAction {
    /// Create a pool.
    Create {
        /// Load balancer.
        lb: String,
        /// Pool name.
        name: String,
        /// Member NIC, optionally with a weight 1-100: NIC or NIC:WEIGHT.
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Add a NIC to a pool.
    Add {
        /// Load balancer.
        lb: String,
        /// Pool.
        pool: String,
        /// NIC.
        nic: String,
        /// Weight 1-100 (default 1).
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove a NIC from a pool (its open connections drain).
    Remove {
        /// Load balancer.
        lb: String,
        /// Pool.
        pool: String,
        /// NIC.
        nic: String,
    },
    /// Delete a pool no rule uses.
    Delete {
        /// Load balancer.
        lb: String,
        /// Pool.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ProbeAction {
    /// Create a probe.
    Create {
        /// Load balancer.
        lb: String,
        /// Probe name.
        name: String,
        /// Tcp or Http.
        #[arg(long, default_value = "Tcp")]
        protocol: String,
        /// Port probed on each backend.
        #[arg(long)]
        port: u32,
        /// HTTP path (Http).
        #[arg(long)]
        path: Option<String>,
        /// HTTP status that means healthy (Http; default 200).
        #[arg(long)]
        expected_status: Option<u32>,
        /// Seconds between probes (default 5).
        #[arg(long)]
        interval: Option<u32>,
        /// Failures in a row that take a backend out (default 2).
        #[arg(long)]
        threshold: Option<u32>,
        /// No passive checking: only failed probes take a backend out, not
        /// the data path's failed connection attempts (TCP rules).
        #[arg(long)]
        no_passive: bool,
    },
    /// Delete a probe no rule uses.
    Delete {
        /// Load balancer.
        lb: String,
        /// Probe.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum RuleAction {
    /// Create a rule.
    Create {
        /// Load balancer.
        lb: String,
        /// Rule name.
        name: String,
        /// Tcp or Udp.
        #[arg(long, default_value = "Tcp")]
        protocol: String,
        /// Frontend port.
        #[arg(long)]
        frontend_port: u32,
        /// Backend port (default: the frontend port).
        #[arg(long)]
        backend_port: Option<u32>,
        /// Backend pool.
        #[arg(long)]
        pool: String,
        /// Health probe.
        #[arg(long)]
        probe: Option<String>,
        /// FiveTuple (default), SourceIp, SourceIpProtocol, RoundRobin,
        /// WeightedRoundRobin or LeastConnections.
        #[arg(long)]
        algorithm: Option<String>,
        /// Idle timeout in minutes (4-100, default 4).
        #[arg(long)]
        idle_timeout: Option<u32>,
        /// Idle timeout in seconds (overrides --idle-timeout; for labs).
        #[arg(long)]
        idle_timeout_seconds: Option<u32>,
        /// Send a PROXY protocol v2 header to the backends (TCP: once per
        /// connection; UDP: in front of every datagram).
        #[arg(long)]
        proxy_protocol: bool,
    },
    /// Delete a rule.
    Delete {
        /// Load balancer.
        lb: String,
        /// Rule.
        name: String,
    },
}

fn member(text: &str) -> Result<MemberSpec> {
    Ok(match text.split_once(':') {
        None => MemberSpec {
            nic: text.into(),
            weight: None,
        },
        Some((nic, w)) => {
            MemberSpec {
                nic: nic.into(),
                weight: Some(w.parse().map_err(|_| {
                    anyhow::anyhow!("--member {text}: weight '{w}' is not a number")
                })?),
            }
        }
    })
}

/// Prints an `lb show` result: the load balancer, then per rule a table
/// of its backends with probe state and counters.
fn print_lb(v: &Value) {
    let keys = ["name", "type", "frontend_ip", "public_ip", "vnet", "subnet"];
    let rows: Vec<(&str, String)> = keys.iter().map(|k| (*k, cell(&v[*k]))).collect();
    print_key_values(&rows);
    for p in v["pools"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let members: Vec<String> = p["members"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|m| format!("{}:{}", cell(&m["nic"]), cell(&m["weight"])))
            .collect();
        println!("pool {}: {}", cell(&p["name"]), members.join(" "));
    }
    for p in v["probes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        println!(
            "probe {}: {} port {} {} every {} s, out after {} failures{}",
            cell(&p["name"]),
            cell(&p["protocol"]),
            cell(&p["port"]),
            cell(&p["path"]),
            cell(&p["interval_seconds"]),
            cell(&p["unhealthy_threshold"]),
            if p["passive"] == true {
                " (probes, or TCP connection attempts in a row)"
            } else {
                ""
            }
        );
    }
    for r in v["rules"].as_array().map(Vec::as_slice).unwrap_or_default() {
        println!(
            "\nrule {}: {} {} -> pool {} port {}, {}, probe {}, idle {} s{}",
            cell(&r["name"]),
            cell(&r["protocol"]),
            cell(&r["frontend_port"]),
            cell(&r["pool"]),
            cell(&r["backend_port"]),
            cell(&r["algorithm"]),
            cell(&r["probe"]),
            cell(&r["idle_timeout_seconds"]),
            if r["proxy_protocol"] == true {
                ", PROXY v2"
            } else {
                ""
            }
        );
        let rows: Vec<Value> = r["backends"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|b| {
                let mut row = b.clone();
                for k in ["active", "total", "errors", "bytes_in", "bytes_out"] {
                    row[k] = b["counters"][k].clone();
                }
                row
            })
            .collect();
        print_table(
            &rows,
            &[
                "nic",
                "address",
                "weight",
                "state",
                "draining",
                "active",
                "total",
                "errors",
                "bytes_in",
                "bytes_out",
                "reason",
            ],
        );
    }
}

/// Sends a request whose result is a load balancer and prints it.
fn show_lb(c: &Common, request: Request) -> Result<()> {
    let v = c.call(request)?;
    match c.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        OutputFormat::Table => print_lb(&v),
    }
    Ok(())
}

/// Runs `nimbus lb ...`.
pub fn dispatch(cmd: LbCommand) -> Result<()> {
    let c = &cmd.common;
    match cmd.action {
        LbAction::Create {
            name,
            public_ip,
            vnet,
            subnet,
            private_ip,
        } => show_lb(
            c,
            Request::LbCreate {
                name,
                public_ip,
                vnet,
                subnet,
                private_ip,
            },
        ),
        LbAction::List => c.list(
            Request::LbList,
            &["name", "type", "frontend_ip", "vnet", "subnet"],
        ),
        LbAction::Show { name } => show_lb(c, Request::LbShow { name }),
        LbAction::Delete { name } => c.done(
            Request::LbDelete { name: name.clone() },
            &format!("deleted lb {name}"),
        ),
        LbAction::Pool(PoolAction::Create { lb, name, members }) => {
            let members = members
                .iter()
                .map(|m| member(m))
                .collect::<Result<Vec<_>>>()?;
            show_lb(c, Request::LbPoolCreate { lb, name, members })
        }
        LbAction::Pool(PoolAction::Add {
            lb,
            pool,
            nic,
            weight,
        }) => show_lb(
            c,
            Request::LbPoolAdd {
                lb,
                pool,
                member: MemberSpec { nic, weight },
            },
        ),
        LbAction::Pool(PoolAction::Remove { lb, pool, nic }) => {
            show_lb(c, Request::LbPoolRemove { lb, pool, nic })
        }
        LbAction::Pool(PoolAction::Delete { lb, name }) => c.done(
            Request::LbPoolDelete {
                lb,
                name: name.clone(),
            },
            &format!("deleted pool {name}"),
        ),
        LbAction::Probe(ProbeAction::Create {
            lb,
            name,
            protocol,
            port,
            path,
            expected_status,
            interval,
            threshold,
            no_passive,
        }) => show_lb(
            c,
            Request::LbProbeCreate {
                lb,
                probe: ProbeSpec {
                    name,
                    protocol,
                    port,
                    path,
                    expected_status,
                    interval_seconds: interval,
                    unhealthy_threshold: threshold,
                    passive: no_passive.then_some(false),
                },
            },
        ),
        LbAction::Probe(ProbeAction::Delete { lb, name }) => c.done(
            Request::LbProbeDelete {
                lb,
                name: name.clone(),
            },
            &format!("deleted probe {name}"),
        ),
        LbAction::Rule(RuleAction::Create {
            lb,
            name,
            protocol,
            frontend_port,
            backend_port,
            pool,
            probe,
            algorithm,
            idle_timeout,
            idle_timeout_seconds,
            proxy_protocol,
        }) => show_lb(
            c,
            Request::LbRuleCreate {
                lb,
                rule: LbRuleSpec {
                    name,
                    protocol,
                    frontend_port,
                    backend_port,
                    pool,
                    probe,
                    idle_timeout_minutes: idle_timeout,
                    idle_timeout_seconds,
                    algorithm,
                    proxy_protocol,
                },
            },
        ),
        LbAction::Rule(RuleAction::Delete { lb, name }) => c.done(
            Request::LbRuleDelete {
                lb,
                name: name.clone(),
            },
            &format!("deleted rule {name}"),
        ),
    }
}
