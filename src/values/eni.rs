//! What identifies an ENI: its MAC and its place on the instance.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A link-layer address, normalised to lowercase `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac([u8; 6]);

impl Mac {
    pub const fn new(octets: [u8; 6]) -> Self {
        Mac(octets)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Builds a MAC from a kernel attribute; `None` for anything that is not
    /// a 6-byte Ethernet address (tunnels, loopback).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Mac)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}")]
pub struct ParseMacError(String);

impl FromStr for Mac {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut octets = [0u8; 6];
        let mut parts = s.trim().split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(octets))
    }
}

impl TryFrom<String> for Mac {
    type Error = ParseMacError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

/// Where an ENI sits on the instance: its network card and its device number
/// on that card. This, not the interface name, decides the ENI's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EniKey {
    pub card: u32,
    pub device: u32,
}

impl EniKey {
    /// EC2 has at most a few dozen cards and devices per card; anything larger
    /// is corrupt metadata, and would push the table number into another
    /// ENI's range.
    pub const MAX_CARD: u32 = 63;
    pub const MAX_DEVICE: u32 = 99;

    pub fn new(card: u32, device: u32) -> Result<Self, EniKeyError> {
        if card > Self::MAX_CARD {
            return Err(EniKeyError::Card(card));
        }
        if device > Self::MAX_DEVICE {
            return Err(EniKeyError::Device(device));
        }
        Ok(EniKey { card, device })
    }

    /// The per-ENI table, which is also the priority of the ENI's rules.
    pub fn table(&self, base: u32) -> u32 {
        base + 100 * self.card + self.device
    }
}

/// A card or device number no EC2 instance has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EniKeyError {
    #[error("network card {0} is out of range 0..={max}", max = EniKey::MAX_CARD)]
    Card(u32),
    #[error("device number {0} is out of range 0..={max}", max = EniKey::MAX_DEVICE)]
    Device(u32),
}

impl fmt::Display for EniKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "card {} device {}", self.card, self.device)
    }
}

/// What a configuration matcher can select an ENI by: its identity in
/// metadata and the name of the link that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EniFacts<'a> {
    pub mac: Mac,
    pub key: EniKey,
    /// `eni-…`
    pub interface_id: Option<&'a str>,
    pub subnet_id: Option<&'a str>,
    pub link_name: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_normalises_and_rejects() {
        let m: Mac = "0A:1b:2C:3d:4E:5f".parse().unwrap();
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:zz",
            "a:1b:2c:3d:4e:5f",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn table_numbering_matches_ec2_net_utils() {
        assert_eq!(EniKey::new(0, 1).unwrap().table(10000), 10001);
        assert_eq!(EniKey::new(1, 0).unwrap().table(10000), 10100);
        assert!(EniKey::new(0, 100).is_err());
        assert!(EniKey::new(64, 0).is_err());
    }
}
