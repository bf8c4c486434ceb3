//! The typed model of an instance's ENIs, as read from metadata.
//!
//! Everything here is validated once, at the boundary: after a value becomes a
//! [`Mac`], an [`EniKey`] or an [`Eni`], nothing downstream re-checks it or
//! handles the raw string again.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::values::{EniFacts, EniKey, Mac};

/// One ENI whose metadata is complete and consistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eni {
    pub mac: Mac,
    pub key: EniKey,
    /// `eni-…`
    pub interface_id: Option<String>,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    /// Private IPv4s; the first is the primary.
    pub ipv4s: Vec<Ipv4Addr>,
    pub ipv4_prefixes: Vec<Ipv4Net>,
    pub ipv6s: Vec<Ipv6Addr>,
    pub ipv6_prefixes: Vec<Ipv6Net>,
    pub subnet_v4: Option<Ipv4Net>,
    pub subnet_v6: Vec<Ipv6Net>,
    pub vpc_v4: Vec<Ipv4Net>,
    pub vpc_v6: Vec<Ipv6Net>,
}

impl Eni {
    pub fn primary_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4s.first().copied()
    }

    /// The VPC router for the ENI's subnet: the first host address.
    pub fn router_v4(&self) -> Option<Ipv4Addr> {
        let net = self.subnet_v4?;
        let first = u32::from(net.network()).checked_add(1)?;
        Some(Ipv4Addr::from(first))
    }

    /// What configuration matchers select this ENI by, on the link called
    /// `link_name`.
    pub fn facts<'a>(&'a self, link_name: &'a str) -> EniFacts<'a> {
        EniFacts {
            mac: self.mac,
            key: self.key,
            interface_id: self.interface_id.as_deref(),
            subnet_id: self.subnet_id.as_deref(),
            link_name,
        }
    }

    /// A short label for messages: `eni-0abc (0a:…:ff)` or the MAC alone.
    pub fn label(&self) -> String {
        match &self.interface_id {
            Some(id) => format!("{id} ({})", self.mac),
            None => self.mac.to_string(),
        }
    }
}

/// What metadata says about one MAC.
// `Ready` is the common case and lives briefly in a short list; boxing it
// would cost an allocation per ENI for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum EniState {
    Ready(Eni),
    /// Metadata for a new ENI is still propagating (absent MAC, device-number
    /// reading 0 on a secondary ENI): retry soon, configure nothing from it.
    NotReady {
        mac: Mac,
        reason: String,
    },
    /// A value failed validation; this ENI is left alone, the others are not.
    Invalid {
        mac: Mac,
        error: String,
    },
}

impl EniState {
    pub fn mac(&self) -> Mac {
        match self {
            EniState::Ready(e) => e.mac,
            EniState::NotReady { mac, .. } | EniState::Invalid { mac, .. } => *mac,
        }
    }
}

/// The whole instance as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The primary ENI (top-level `mac`).
    pub primary_mac: Mac,
    /// One entry per MAC in the listing, sorted by MAC.
    pub enis: Vec<EniState>,
}

impl Instance {
    pub fn ready(&self) -> impl Iterator<Item = &Eni> {
        self.enis.iter().filter_map(|e| match e {
            EniState::Ready(eni) => Some(eni),
            _ => None,
        })
    }

    pub fn get(&self, mac: Mac) -> Option<&EniState> {
        self.enis.iter().find(|e| e.mac() == mac)
    }
}
