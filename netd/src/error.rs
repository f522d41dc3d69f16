//! Errors netd reports to its clients. Each names the object, and where it
//! applies the field, the value and the reason.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Kinds of network objects, as users call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Virtual network.
    VNet,
    /// Subnet of a VNet.
    Subnet,
    /// Network interface.
    Nic,
    /// Network security group.
    Nsg,
    /// Rule of an NSG.
    SecurityRule,
    /// Application security group.
    Asg,
    /// Public IP address.
    PublicIp,
    /// Load balancer.
    LoadBalancer,
    /// Backend pool of a load balancer.
    LbPool,
    /// Health probe of a load balancer.
    LbProbe,
    /// Rule of a load balancer.
    LbRule,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::VNet => "vnet",
            Kind::Subnet => "subnet",
            Kind::Nic => "nic",
            Kind::Nsg => "nsg",
            Kind::SecurityRule => "nsg rule",
            Kind::Asg => "asg",
            Kind::PublicIp => "public-ip",
            Kind::LoadBalancer => "lb",
            Kind::LbPool => "lb pool",
            Kind::LbProbe => "lb probe",
            Kind::LbRule => "lb rule",
        })
    }
}

/// Why a request was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum NetError {
    /// A field has a value that is not acceptable.
    #[error("{kind} '{name}': {field} '{value}': {reason}")]
    Invalid {
        /// Object kind.
        kind: Kind,
        /// Object name.
        name: String,
        /// Field.
        field: String,
        /// Offending value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The object does not exist.
    #[error("{kind} '{name}' not found")]
    NotFound {
        /// Object kind.
        kind: Kind,
        /// Object name.
        name: String,
    },
    /// The name is taken.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists {
        /// Object kind.
        kind: Kind,
        /// Object name.
        name: String,
    },
    /// The object is used by others and cannot be deleted or changed.
    #[error("{kind} '{name}' is in use: {reason}")]
    InUse {
        /// Object kind.
        kind: Kind,
        /// Object name.
        name: String,
        /// By what.
        reason: String,
    },
    /// The host could not be changed; the previous state is kept.
    #[error("host change failed ({what}): {reason}")]
    Host {
        /// What was being done.
        what: String,
        /// The system's answer.
        reason: String,
    },
    /// The request itself was malformed.
    #[error("bad request: {reason}")]
    BadRequest {
        /// Why.
        reason: String,
    },
}

impl NetError {
    /// Shorthand for [`NetError::Invalid`].
    pub fn invalid(
        kind: Kind,
        name: impl fmt::Display,
        field: &str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        NetError::Invalid {
            kind,
            name: name.to_string(),
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`NetError::NotFound`].
    pub fn not_found(kind: Kind, name: impl fmt::Display) -> Self {
        NetError::NotFound {
            kind,
            name: name.to_string(),
        }
    }

    /// Shorthand for [`NetError::InUse`].
    pub fn in_use(kind: Kind, name: impl fmt::Display, reason: impl Into<String>) -> Self {
        NetError::InUse {
            kind,
            name: name.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`NetError::Host`].
    pub fn host(what: impl Into<String>, reason: impl fmt::Display) -> Self {
        NetError::Host {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// Parses `value` into `T`, turning a parse failure into [`NetError::Invalid`]
/// naming `kind`, `name` and `field`.
pub fn parse_field<T>(kind: Kind, name: &str, field: &str, value: &str) -> Result<T, NetError>
where
    T: std::str::FromStr<Err = String>,
{
    value
        .parse()
        .map_err(|reason| NetError::invalid(kind, name, field, value, reason))
}
