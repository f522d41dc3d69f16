//! `--output table|json`: how list and show commands print.

use clap::ValueEnum;

/// The format a command prints its result in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned, human-readable text.
    #[default]
    Table,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// Prints `rows` of `(key, value)` pairs aligned on the key column.
pub fn print_key_values(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
}
