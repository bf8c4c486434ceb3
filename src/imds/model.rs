//! The typed model of an instance's ENIs, as read from metadata.
//!
//! Everything here is validated once, at the boundary: after a value becomes a
//! [`Mac`], an [`EniKey`] or an [`Eni`], nothing downstream re-checks it or
//! handles the raw string again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
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

    /// Every address and prefix metadata gives this ENI, with its key.
    fn claims(&self) -> impl Iterator<Item = (&'static str, IpNet)> + '_ {
        let v4 = self
            .ipv4s
            .iter()
            .map(|a| ("local-ipv4s", IpNet::from(IpAddr::V4(*a))));
        let p4 = self
            .ipv4_prefixes
            .iter()
            .map(|p| ("ipv4-prefix", IpNet::V4(*p)));
        let v6 = self
            .ipv6s
            .iter()
            .map(|a| ("ipv6s", IpNet::from(IpAddr::V6(*a))));
        let p6 = self
            .ipv6_prefixes
            .iter()
            .map(|p| ("ipv6-prefix", IpNet::V6(*p)));
        v4.chain(p4).chain(v6).chain(p6)
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
    /// ENIs whose empty `local-ipv4s` the previous read said too: a removal
    /// that two reads agree on is applied, one read alone is not.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub confirmed_bare: BTreeSet<Mac>,
    /// The same for `ipv6s`, for ENIs in a subnet with IPv6 blocks.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub confirmed_bare_v6: BTreeSet<Mac>,
    /// MACs the listing names but that were not read: no link with that
    /// MAC was on the host (and no claim named it) when metadata was read.
    /// Their ENIs are attached elsewhere as far as this host can act on
    /// them; one is read as soon as its link appears. Not in `enis`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unread: BTreeSet<Mac>,
}

/// The pairs `(n, m)`, `n < m`, of claims whose networks overlap, in that
/// order. Two prefixes either nest or are disjoint, so with the claims
/// sorted by first address (the wider first), the claims a claim overlaps
/// before it are those still open around it: a sweep, where comparing every
/// pair would take a million comparisons for 15 ENIs with 100 addresses.
fn overlapping(claims: &[(usize, &'static str, IpNet)]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by_key(|&c| (claims[c].2.network(), claims[c].2.prefix_len()));
    let mut open: Vec<usize> = Vec::new();
    let mut pairs = Vec::new();
    for c in order {
        let net = &claims[c].2;
        while open.last().is_some_and(|&o| !claims[o].2.contains(net)) {
            open.pop();
        }
        pairs.extend(open.iter().map(|&o| (o.min(c), o.max(c))));
        open.push(c);
    }
    pairs.sort_unstable();
    pairs
}

impl Instance {
    /// An instance from one read. An address or prefix that metadata lists
    /// on two ENIs cannot be on both: neither ENI is applied from this read
    /// (each keeps what it has) until metadata is consistent again.
    pub fn new(primary_mac: Mac, mut enis: Vec<EniState>) -> Instance {
        let mut claims: Vec<(usize, &'static str, IpNet)> = Vec::new();
        for (i, e) in enis.iter().enumerate() {
            if let EniState::Ready(eni) = e {
                claims.extend(eni.claims().map(|(k, n)| (i, k, n)));
            }
        }
        let mut invalid: BTreeMap<usize, String> = BTreeMap::new();
        for (n, m) in overlapping(&claims) {
            let ((i, key, net), (j, other_key, other)) = (&claims[n], &claims[m]);
            {
                if i == j {
                    continue;
                }
                for (me, my_key, my_net, them, their_net) in
                    [(*i, *key, net, *j, other), (*j, *other_key, other, *i, net)]
                {
                    let them = match &enis[them] {
                        EniState::Ready(e) => e.label(),
                        s => s.mac().to_string(),
                    };
                    invalid.entry(me).or_insert_with(|| {
                        format!(
                            "key {my_key}: {} is also listed on ENI {them} ({})",
                            shown(my_net),
                            shown(their_net)
                        )
                    });
                }
            }
        }
        for (i, why) in invalid {
            if let EniState::Ready(eni) = &enis[i] {
                let error = format!(
                    "ENI {}: {why}; not applied, its link stays as it is",
                    eni.label()
                );
                enis[i] = EniState::Invalid {
                    mac: eni.mac,
                    error,
                };
            }
        }
        Instance {
            primary_mac,
            enis,
            confirmed_bare: BTreeSet::new(),
            confirmed_bare_v6: BTreeSet::new(),
            unread: BTreeSet::new(),
        }
    }

    /// Marks the ENIs whose `local-ipv4s` (or `ipv6s`) reads empty now and
    /// read empty in `previous` too: their removal is confirmed.
    pub fn confirm_bare(&mut self, previous: Option<&Instance>) {
        let Some(previous) = previous else { return };
        let agreed = |bare: fn(&Eni) -> bool| -> BTreeSet<Mac> {
            self.ready()
                .filter(|e| bare(e))
                .filter(|e| matches!(previous.get(e.mac), Some(EniState::Ready(p)) if bare(p)))
                .map(|e| e.mac)
                .collect()
        };
        let v4 = agreed(|e| e.ipv4s.is_empty());
        let v6 = agreed(|e| e.ipv6s.is_empty() && !e.subnet_v6.is_empty());
        self.confirmed_bare = v4;
        self.confirmed_bare_v6 = v6;
    }

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

/// A host address without its /32 or /128; a prefix as it is.
fn shown(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imds::{parse, tree};

    #[test]
    fn the_sweep_finds_the_pairs_every_comparison_finds() {
        let nets = [
            "10.0.1.10/32",
            "10.0.1.0/24",
            "10.0.1.10/32",
            "10.0.0.0/16",
            "10.0.1.128/28",
            "10.0.1.130/32",
            "10.0.2.10/32",
            "10.0.1.144/28",
            "10.0.1.11/32",
            "2001:db8::10/128",
            "2001:db8::/64",
            "2001:db8:1::10/128",
            "2001:db8::10/128",
            "0.0.0.0/0",
        ];
        let claims: Vec<(usize, &'static str, IpNet)> = nets
            .iter()
            .enumerate()
            .map(|(i, n)| (i % 3, "key", n.parse().unwrap()))
            .collect();
        let mut every = Vec::new();
        for n in 0..claims.len() {
            for m in n + 1..claims.len() {
                let (a, b) = (&claims[n].2, &claims[m].2);
                if a.contains(b) || b.contains(a) {
                    every.push((n, m));
                }
            }
        }
        assert_eq!(overlapping(&claims), every);
    }

    fn ipv6_only() -> Instance {
        let path = format!(
            "{}/tests/fixtures/imds/ipv6-only.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        parse::instance_from(|p| tree::lookup(&t, p)).unwrap()
    }

    fn strip_v6(mut i: Instance) -> Instance {
        for e in &mut i.enis {
            if let EniState::Ready(e) = e {
                e.ipv6s.clear();
            }
        }
        i
    }

    /// Only ENIs in an IPv6 subnet whose `ipv6s` read empty twice in a row
    /// count as confirmed; an ENI with no IPv6 subnet has nothing to hold.
    #[test]
    fn an_empty_ipv6_list_is_confirmed_by_a_second_empty_read_only() {
        let good = ipv6_only();
        let mut bare = strip_v6(ipv6_only());
        bare.confirm_bare(Some(&good));
        assert!(bare.confirmed_bare_v6.is_empty());
        let mut again = strip_v6(ipv6_only());
        again.confirm_bare(Some(&bare));
        let eth1: Mac = "0a:00:00:00:00:02".parse().unwrap();
        let eth0: Mac = "0a:00:00:00:00:01".parse().unwrap();
        assert!(again.confirmed_bare_v6.contains(&eth1));
        assert!(!again.confirmed_bare_v6.contains(&eth0));
        // eth0 has IPv4 addresses in both reads: nothing to confirm there.
        assert!(!again.confirmed_bare.contains(&eth0));
    }
}
