//! Takeover claims: what `eniroute takeover` learnt from EC2's answer (an
//! address now on one of this instance's ENIs, or an ENI now attached
//! here), kept in this namespace's state directory and merged into the
//! metadata view by whoever reconciles (the daemon on its next read, or
//! `takeover` itself when no daemon runs).
//!
//! Why: metadata shows a moved address or ENI only seconds after EC2
//! accepted the move, and the agent never configures what metadata does
//! not show. A claim bridges that gap, and only that gap: it stops counting
//! as soon as metadata shows what it claims (from then on metadata decides,
//! so a later move away is followed as usual), and it expires after
//! [`CLAIM_TTL`] if metadata never does (then EC2 changed its mind, and
//! metadata is the truth again).
//!
//! A claim names the instance it was made on (by its primary ENI's MAC,
//! which never moves) and counts only there. The state directory is keyed
//! by the network namespace's inode number, which the kernel hands to the
//! next namespace created once the old one is gone: without that check, a
//! namespace that inherits the number also inherited the claims of
//! whatever instance ran there in the last minute, and a stale claim that
//! names the same address as a fresh one made metadata look implausible
//! (one address on two ENIs), so neither was routed.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::imds::model::{Eni, EniState, Instance};
use crate::values::Mac;

/// How long a claim stands in for metadata that does not show it yet. EC2
/// usually shows a move within seconds; a claim still unconfirmed after
/// this is taken to have been overtaken by another move.
pub const CLAIM_TTL: Duration = Duration::from_secs(60);

const FILE: &str = "claims.json";

/// One claim, as written by `takeover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Unique per claim, so a reader can remember which ones metadata has
    /// confirmed.
    pub id: String,
    /// Unix seconds after which the claim no longer applies.
    pub until: u64,
    /// The primary ENI's MAC of the instance `takeover` ran on: anywhere
    /// else the claim is void. Claims of older versions lack it and are
    /// void too: they cannot tell which instance they were made on, and a
    /// claim only ever saves the wait for metadata.
    #[serde(default)]
    pub instance: Option<Mac>,
    #[serde(flatten)]
    pub what: Claimed,
}

// Claims are few and short-lived; boxing the ENI would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Claimed {
    /// EC2 assigned `address` to the ENI with this MAC.
    Address { mac: Mac, address: IpAddr },
    /// EC2 attached this ENI here, as described.
    Eni { eni: Eni },
}

impl Claim {
    /// A claim made on the instance whose primary ENI has `instance` as MAC.
    pub fn new(what: Claimed, instance: Mac, now: SystemTime) -> Claim {
        let at = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        Claim {
            id: format!(
                "{}.{:09}-{}",
                at.as_secs(),
                at.subsec_nanos(),
                std::process::id()
            ),
            until: (at + CLAIM_TTL).as_secs(),
            instance: Some(instance),
            what,
        }
    }

    fn expired(&self, now: SystemTime) -> bool {
        now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() >= self.until
    }

    /// Whether the claim was made on the instance whose primary ENI has
    /// this MAC.
    fn made_on(&self, primary_mac: Mac) -> bool {
        self.instance == Some(primary_mac)
    }
}

/// The claims in `dir`; none when the file is absent or unreadable (a
/// claim only ever speeds things up, so losing one costs time, not
/// correctness).
pub fn load(dir: &Path) -> Vec<Claim> {
    std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Adds `claim` to `dir`'s claims, dropping expired ones, earlier claims
/// for the same address or ENI, and claims another instance left behind
/// (see the module's notes); atomically (write, then rename).
pub fn add(dir: &Path, claim: Claim, now: SystemTime) -> io::Result<()> {
    let mut claims = load(dir);
    claims.retain(|c| {
        !c.expired(now) && !same_subject(&c.what, &claim.what) && c.instance == claim.instance
    });
    claims.push(claim);
    let text = serde_json::to_vec_pretty(&claims).map_err(io::Error::other)?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

fn same_subject(a: &Claimed, b: &Claimed) -> bool {
    match (a, b) {
        (Claimed::Address { address: x, .. }, Claimed::Address { address: y, .. }) => x == y,
        (Claimed::Eni { eni: x }, Claimed::Eni { eni: y }) => x.mac == y.mac,
        _ => false,
    }
}

/// Claims seen confirmed by metadata, remembered by a long-running reader.
#[derive(Debug, Default)]
pub struct Confirmed(BTreeSet<String>);

impl Confirmed {
    pub fn new() -> Self {
        Self::default()
    }
}

/// `instance` with every live, unconfirmed claim made on it applied. A
/// claim that metadata already shows is marked confirmed and never applied
/// again.
pub fn merge(
    instance: Instance,
    claims: &[Claim],
    now: SystemTime,
    confirmed: &mut Confirmed,
) -> Instance {
    let live: Vec<&Claim> = claims
        .iter()
        .filter(|c| {
            !c.expired(now) && c.made_on(instance.primary_mac) && !confirmed.0.contains(&c.id)
        })
        .collect();
    if live.is_empty() {
        return instance;
    }
    let Instance {
        primary_mac,
        mut enis,
        confirmed_bare,
        confirmed_bare_v6,
        mut unread,
    } = instance;
    for claim in live {
        match &claim.what {
            Claimed::Address { mac, address } => {
                let shown = enis.iter().any(|e| match e {
                    EniState::Ready(e) if e.mac == *mac => holds(e, *address),
                    _ => false,
                });
                if shown {
                    confirmed.0.insert(claim.id.clone());
                    continue;
                }
                if !enis
                    .iter()
                    .any(|e| matches!(e, EniState::Ready(e) if e.mac == *mac))
                {
                    // The ENI itself is not (yet) described: nothing to add to.
                    continue;
                }
                for state in &mut enis {
                    if let EniState::Ready(e) = state {
                        if e.mac == *mac {
                            add_address(e, *address);
                        } else {
                            // Moved between two of this instance's own
                            // ENIs: metadata still shows it on the old one.
                            remove_address(e, *address);
                        }
                    }
                }
            }
            Claimed::Eni { eni } => match enis.iter().position(|e| e.mac() == eni.mac) {
                Some(i) if matches!(enis[i], EniState::Ready(_)) => {
                    confirmed.0.insert(claim.id.clone());
                }
                Some(i) => enis[i] = EniState::Ready(eni.clone()),
                None => {
                    unread.remove(&eni.mac);
                    enis.push(EniState::Ready(eni.clone()));
                    enis.sort_by_key(EniState::mac);
                }
            },
        }
    }
    let mut merged = Instance::new(primary_mac, enis);
    merged.confirmed_bare = confirmed_bare;
    merged.confirmed_bare_v6 = confirmed_bare_v6;
    merged.unread = unread;
    merged
}

fn holds(e: &Eni, a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => e.ipv4s.contains(&a),
        IpAddr::V6(a) => e.ipv6s.contains(&a),
    }
}

fn add_address(e: &mut Eni, a: IpAddr) {
    match a {
        IpAddr::V4(a) if !e.ipv4s.contains(&a) => e.ipv4s.push(a),
        IpAddr::V6(a) if !e.ipv6s.contains(&a) => e.ipv6s.push(a),
        _ => {}
    }
}

fn remove_address(e: &mut Eni, a: IpAddr) {
    match a {
        // Never the primary: it cannot move, and an ENI without it would
        // read as bare.
        IpAddr::V4(a) => {
            if e.ipv4s.first() != Some(&a) {
                e.ipv4s.retain(|x| *x != a);
            }
        }
        IpAddr::V6(a) => e.ipv6s.retain(|x| *x != a),
    }
}

/// The claims of this namespace merged into each metadata read, for a
/// long-running reader (the daemon).
#[derive(Debug)]
pub struct Pending {
    dir: Option<std::path::PathBuf>,
    confirmed: Confirmed,
}

impl Pending {
    pub fn new(dir: Option<std::path::PathBuf>) -> Pending {
        Pending {
            dir,
            confirmed: Confirmed::new(),
        }
    }

    /// The MACs that live claims name: read in depth whether or not their
    /// link is there yet, so that metadata can confirm them.
    pub fn macs(&self) -> Vec<Mac> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let now = SystemTime::now();
        load(dir)
            .iter()
            .filter(|c| !c.expired(now))
            .map(|c| match &c.what {
                Claimed::Address { mac, .. } => *mac,
                Claimed::Eni { eni } => eni.mac,
            })
            .collect()
    }

    pub fn apply(&mut self, instance: Instance) -> Instance {
        let Some(dir) = &self.dir else {
            return instance;
        };
        let claims = load(dir);
        // Forget confirmations of claims that are gone from the file.
        self.confirmed
            .0
            .retain(|id| claims.iter().any(|c| &c.id == id));
        let merged = merge(
            instance.clone(),
            &claims,
            SystemTime::now(),
            &mut self.confirmed,
        );
        if merged != instance {
            tracing::info!(
                "metadata does not show a takeover yet; its claim from EC2's answer is applied"
            );
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::EniKey;

    fn eni(mac: u8, device: u32, ips: &[&str]) -> Eni {
        Eni {
            mac: Mac::new([0x0a, 0, 0, 0, 0, mac]),
            key: EniKey::new(0, device).unwrap(),
            interface_id: Some(format!("eni-{mac}")),
            subnet_id: Some("subnet-1".into()),
            vpc_id: Some("vpc-1".into()),
            ipv4s: ips.iter().map(|a| a.parse().unwrap()).collect(),
            ipv4_prefixes: vec![],
            ipv6s: vec![],
            ipv6_prefixes: vec![],
            subnet_v4: Some("10.0.3.0/24".parse().unwrap()),
            subnet_v6: vec![],
            vpc_v4: vec!["10.0.0.0/16".parse().unwrap()],
            vpc_v6: vec![],
        }
    }

    const PRIMARY: Mac = Mac::new([0x0a, 0, 0, 0, 0, 0]);

    fn instance(enis: Vec<Eni>) -> Instance {
        Instance::new(PRIMARY, enis.into_iter().map(EniState::Ready).collect())
    }

    fn ready(i: &Instance, mac: u8) -> Option<&Eni> {
        i.ready()
            .find(|e| e.mac == Mac::new([0x0a, 0, 0, 0, 0, mac]))
    }

    #[test]
    fn an_address_claim_applies_until_metadata_shows_it() {
        let now = SystemTime::now();
        let claim = Claim::new(
            Claimed::Address {
                mac: Mac::new([0x0a, 0, 0, 0, 0, 2]),
                address: "10.0.3.100".parse().unwrap(),
            },
            PRIMARY,
            now,
        );
        let mut confirmed = Confirmed::new();
        let lagging = instance(vec![eni(0, 0, &["10.0.1.10"]), eni(2, 2, &["10.0.3.20"])]);
        let merged = merge(
            lagging.clone(),
            std::slice::from_ref(&claim),
            now,
            &mut confirmed,
        );
        assert_eq!(
            ready(&merged, 2).unwrap().ipv4s,
            vec![
                "10.0.3.20".parse::<std::net::Ipv4Addr>().unwrap(),
                "10.0.3.100".parse().unwrap()
            ]
        );
        // Metadata catches up: the claim is confirmed ...
        let shown = instance(vec![
            eni(0, 0, &["10.0.1.10"]),
            eni(2, 2, &["10.0.3.20", "10.0.3.100"]),
        ]);
        assert_eq!(
            merge(
                shown.clone(),
                std::slice::from_ref(&claim),
                now,
                &mut confirmed
            ),
            shown
        );
        // ... and a later move away is followed, not undone by the claim.
        assert_eq!(
            merge(
                lagging.clone(),
                std::slice::from_ref(&claim),
                now,
                &mut confirmed
            ),
            lagging
        );
        // An expired claim is ignored.
        let later = now + CLAIM_TTL + Duration::from_secs(1);
        let mut fresh = Confirmed::new();
        assert_eq!(merge(lagging.clone(), &[claim], later, &mut fresh), lagging);
    }

    #[test]
    fn an_address_moved_between_own_enis_leaves_the_old_one() {
        let now = SystemTime::now();
        let claim = Claim::new(
            Claimed::Address {
                mac: Mac::new([0x0a, 0, 0, 0, 0, 2]),
                address: "10.0.3.100".parse().unwrap(),
            },
            PRIMARY,
            now,
        );
        let before = instance(vec![
            eni(1, 1, &["10.0.3.10", "10.0.3.100"]),
            eni(2, 2, &["10.0.3.20"]),
        ]);
        let merged = merge(before, &[claim], now, &mut Confirmed::new());
        assert_eq!(ready(&merged, 1).unwrap().ipv4s.len(), 1);
        assert_eq!(ready(&merged, 2).unwrap().ipv4s.len(), 2);
    }

    #[test]
    fn an_eni_claim_adds_the_eni_until_metadata_lists_it() {
        let now = SystemTime::now();
        let moved = eni(5, 1, &["10.0.3.50"]);
        let claim = Claim::new(Claimed::Eni { eni: moved.clone() }, PRIMARY, now);
        let mut confirmed = Confirmed::new();
        let lagging = instance(vec![eni(0, 0, &["10.0.1.10"])]);
        let merged = merge(
            lagging.clone(),
            std::slice::from_ref(&claim),
            now,
            &mut confirmed,
        );
        assert_eq!(ready(&merged, 5), Some(&moved));
        let shown = instance(vec![eni(0, 0, &["10.0.1.10"]), moved]);
        merge(shown, std::slice::from_ref(&claim), now, &mut confirmed);
        assert_eq!(
            merge(lagging.clone(), &[claim], now, &mut confirmed),
            lagging
        );
    }

    /// The state directory of a namespace that reuses a gone namespace's
    /// inode number still holds that namespace's claims: an ENI moved to
    /// another simulated instance a moment ago, with the same address as
    /// the one moved here now. Only the claim made here counts, so the ENI
    /// is not held back as "one address on two ENIs".
    #[test]
    fn a_claim_counts_only_on_the_instance_it_was_made_on() {
        let now = SystemTime::now();
        let elsewhere = Mac::new([0x0b, 0, 0, 0, 0, 0]);
        let stale = Claim::new(
            Claimed::Eni {
                eni: eni(7, 2, &["10.0.3.50"]),
            },
            elsewhere,
            now,
        );
        let moved = eni(5, 2, &["10.0.3.50"]);
        let fresh = Claim::new(Claimed::Eni { eni: moved.clone() }, PRIMARY, now);
        let lagging = instance(vec![eni(0, 0, &["10.0.1.10"])]);
        let merged = merge(
            lagging.clone(),
            &[stale.clone(), fresh.clone()],
            now,
            &mut Confirmed::new(),
        );
        assert_eq!(ready(&merged, 5), Some(&moved));
        assert_eq!(merged.get(Mac::new([0x0a, 0, 0, 0, 0, 7])), None);
        // Nor does a claim that does not name its instance (older versions
        // wrote those into the same directories).
        let mut old = fresh.clone();
        old.instance = None;
        assert_eq!(
            merge(lagging.clone(), &[old], now, &mut Confirmed::new()),
            lagging
        );

        // Writing a claim drops what another instance left behind.
        let dir = std::env::temp_dir().join(format!("eniroute-claims-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        add(&dir, stale, now).unwrap();
        add(&dir, fresh.clone(), now).unwrap();
        assert_eq!(load(&dir), vec![fresh]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn claims_file_keeps_one_claim_per_subject() {
        let dir = std::env::temp_dir().join(format!("eniroute-claims-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = SystemTime::now();
        let a = |mac| Claimed::Address {
            mac: Mac::new([0x0a, 0, 0, 0, 0, mac]),
            address: "10.0.3.100".parse().unwrap(),
        };
        add(&dir, Claim::new(a(1), PRIMARY, now), now).unwrap();
        add(&dir, Claim::new(a(2), PRIMARY, now), now).unwrap();
        let claims = load(&dir);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].what, a(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
