//! `nimbus vnet|subnet|nic|nsg|asg|public-ip|lb|netd`: the network nouns. Each
//! command is one request to nimbus-netd over its Unix socket; netd
//! validates everything and its refusals are printed as they are.

pub mod asg;
pub mod lb;
pub mod netd_run;
pub mod nic;
pub mod nsg;
pub mod public_ip;
pub mod subnet;
pub mod vnet;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use netd::api::client::Client;
use netd::api::protocol::Request;
use serde_json::Value;

use crate::output::{print_key_values, OutputFormat};

/// Options every network command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// nimbus-netd's API socket.
    #[arg(
        long,
        global = true,
        env = "NIMBUS_NETD_SOCKET",
        default_value = "/var/lib/nimbus/netd/netd.sock"
    )]
    pub netd_socket: PathBuf,
    /// How list and show print.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

impl Common {
    /// Sends one request to netd.
    pub fn call(&self, request: Request) -> Result<Value> {
        Ok(Client::connect(&self.netd_socket)?.call(&request)?)
    }

    /// Sends a request and prints its result as one object.
    pub fn show(&self, request: Request) -> Result<()> {
        let v = self.call(request)?;
        match self.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&v)?),
            OutputFormat::Table => {
                let rows: Vec<(&str, String)> = v
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| (k.as_str(), cell(v))).collect())
                    .unwrap_or_default();
                print_key_values(&rows);
            }
        }
        Ok(())
    }

    /// Sends a request and prints its result as a table with `columns`.
    pub fn list(&self, request: Request, columns: &[&str]) -> Result<()> {
        let v = self.call(request)?;
        match self.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&v)?),
            OutputFormat::Table => {
                print_table(v.as_array().map(Vec::as_slice).unwrap_or_default(), columns)
            }
        }
        Ok(())
    }

    /// Sends a request whose result is not interesting (deletions).
    pub fn done(&self, request: Request, what: &str) -> Result<()> {
        self.call(request)?;
        if self.output == OutputFormat::Json {
            println!("null");
        } else {
            println!("{what}");
        }
        Ok(())
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn print_table(rows: &[Value], columns: &[&str]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |items: Vec<String>| {
        let parts: Vec<String> = items
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in cells {
        line(row);
    }
}
