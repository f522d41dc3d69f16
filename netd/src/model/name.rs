//! Resource names with Azure's rules: 1–80 characters of letters, digits,
//! `_`, `.` and `-`, starting with a letter or digit and ending with a
//! letter, digit or `_`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A validated resource name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Name {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 80 {
            return Err("a name has 1 to 80 characters".into());
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "character '{c}' is not allowed (letters, digits, '_', '.', '-')"
            ));
        }
        let first = s.chars().next().unwrap_or('-');
        let last = s.chars().last().unwrap_or('-');
        if !first.is_ascii_alphanumeric() {
            return Err("a name starts with a letter or digit".into());
        }
        if !(last.is_ascii_alphanumeric() || last == '_') {
            return Err("a name ends with a letter, digit or '_'".into());
        }
        Ok(Name(s.to_string()))
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_azure_names() {
        for good in ["web", "vnet-1", "a", "sub_net.2", "x_"] {
            assert!(good.parse::<Name>().is_ok(), "{good}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "-web", "web-", "we b", "wé", "a/b", &"a".repeat(81)] {
            assert!(bad.parse::<Name>().is_err(), "{bad}");
        }
    }
}
