//! Alternative names on managed ENI links, as amazon-ec2-net-utils gives
//! them: the ENI id (`eni-0123…`) and its position (`device-number-1`), so
//! `ip addr show eni-0123…`, `tcpdump -i device-number-1` and the runbooks
//! written for Amazon Linux work whatever the kernel named the link.
//!
//! Naming: `device-number-<d>` for an ENI on network card 0, and
//! `device-number-<d>.<c>` on card c > 0 (amazon-ec2-net-utils' suffix for a
//! card), so the names stay unique on instances with several cards: device
//! 1 exists once per card, and an alternative name once per namespace.
//! amazon-ec2-net-utils also writes `device-number-<d>.0` on card 0 where
//! metadata has a `network-card` key; a link found with that spelling keeps
//! it (taken over) rather than getting a second position name.
//!
//! Ownership: the names the agent added, or found already in place where it
//! wanted them (left by amazon-ec2-net-utils before the agent took over), are
//! recorded per link (ifindex and MAC) in the state directory. Only recorded
//! names are ever removed; a name someone else added, even one of the same
//! shape, is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::change::{apply, Applied, Op};
use crate::netlink::altname::valid;
use crate::netlink::{Kernel, LinkNames};
use crate::plan::{EniStatus, Plan};
use crate::values::{EniKey, Mac, Warning};

const RECORDS_FILE: &str = "altnames.json";

/// The position name of an ENI: `device-number-1`, or `device-number-1.2`
/// for device 1 on network card 2.
pub fn device_name(key: EniKey) -> String {
    if key.card == 0 {
        format!("device-number-{}", key.device)
    } else {
        format!("device-number-{}.{}", key.device, key.card)
    }
}

/// amazon-ec2-net-utils' spelling of the position name on card 0 where
/// metadata has a `network-card` key (and always for the primary ENI):
/// `device-number-1.0`. Where a link already carries it, it is taken over
/// instead of adding `device-number-1` beside it.
fn card_zero_suffixed(key: EniKey) -> Option<String> {
    (key.card == 0).then(|| format!("device-number-{}.0", key.device))
}

/// The alternative names each managed ENI's link should carry, by ifindex,
/// given the names `links` carry now. ENIs that are excluded, uncertain or
/// without a link get none.
pub fn wanted(plan: &Plan, links: &[LinkNames]) -> BTreeMap<u32, BTreeSet<String>> {
    let mut out: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for e in plan.enis.iter().filter(|e| e.status == EniStatus::Managed) {
        let Some(index) = e.index else { continue };
        let names = out.entry(index).or_default();
        if let Some(id) = e.interface_id.as_deref().filter(|id| valid(id)) {
            names.insert(id.to_string());
        }
        if let Some(key) = e.key {
            let carries = |name: &String| {
                links
                    .iter()
                    .any(|l| l.index == index && l.altnames.contains(name))
            };
            let name = match card_zero_suffixed(key) {
                Some(theirs) if carries(&theirs) && !carries(&device_name(key)) => theirs,
                _ => device_name(key),
            };
            names.insert(name);
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Record {
    ifindex: u32,
    mac: Mac,
    altname: String,
}

/// The alternative names the agent owns, kept in the namespace's state
/// directory beside the address records.
#[derive(Debug, Clone)]
pub struct AltnameRecords {
    path: PathBuf,
    records: BTreeSet<Record>,
}

impl AltnameRecords {
    /// A missing file is an empty set; a corrupt one is reported and read as
    /// empty (the agent then owns nothing, so it removes nothing).
    pub fn load(dir: &Path) -> AltnameRecords {
        let path = dir.join(RECORDS_FILE);
        let records = match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!("{}: unreadable, ignoring: {e}", path.display());
                BTreeSet::new()
            }),
            Err(_) => BTreeSet::new(),
        };
        AltnameRecords { path, records }
    }

    /// Whether `altname` on `link` is the agent's: recorded for this very
    /// link (an ifindex reused by a new link is not a match).
    pub fn owns(&self, link: &LinkNames, altname: &str) -> bool {
        let Some(mac) = link.mac else { return false };
        self.records.contains(&Record {
            ifindex: link.index,
            mac,
            altname: altname.to_string(),
        })
    }

    /// Records what is the agent's after a sync: every wanted name now on
    /// its link (added, or found there and taken over), minus what was
    /// removed, and nothing of links that are gone. Writes only on change.
    fn update(
        &mut self,
        links: &[LinkNames],
        wanted: &BTreeMap<u32, BTreeSet<String>>,
        applied: &Applied,
    ) -> Result<(), crate::state::StateError> {
        let before = self.records.clone();
        let record = |index: u32, name: &str| {
            let mac = links.iter().find(|l| l.index == index)?.mac?;
            Some(Record {
                ifindex: index,
                mac,
                altname: name.to_string(),
            })
        };
        for link in links {
            for name in wanted.get(&link.index).into_iter().flatten() {
                if link.altnames.contains(name) {
                    self.records.extend(record(link.index, name));
                }
            }
        }
        for op in &applied.ops {
            match op {
                Op::AddAltname { index, name, .. } => self.records.extend(record(*index, name)),
                Op::DelAltname { index, name, .. } => {
                    self.records
                        .retain(|r| !(r.ifindex == *index && &r.altname == name));
                }
                _ => {}
            }
        }
        self.records.retain(|r| {
            links
                .iter()
                .any(|l| l.index == r.ifindex && l.mac == Some(r.mac))
        });
        if self.records == before {
            return Ok(());
        }
        self.save()
    }

    fn save(&self) -> Result<(), crate::state::StateError> {
        let err = |path: &Path, e: &dyn fmt::Display| crate::state::StateError {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.records).map_err(|e| err(&tmp, &e))?;
        fs::write(&tmp, text).map_err(|e| err(&tmp, &e))?;
        fs::rename(&tmp, &self.path).map_err(|e| err(&self.path, &e))
    }
}

/// The changes that bring every link's alternative names to `plan`:
/// removals first (a name can only exist once in a namespace, so one moving
/// from link to link must leave before it arrives; no traffic depends on a
/// name), then additions. Names of links whose ENI is uncertain or excluded
/// stay as they are. A wanted name that another link holds and the agent
/// does not own is not taken: it comes back as a warning.
pub fn diff(
    plan: &Plan,
    links: &[LinkNames],
    owned: &BTreeSet<(u32, String)>,
) -> (Vec<Op>, Vec<Warning>) {
    let wanted = wanted(plan, links);
    let keep: BTreeSet<u32> = plan
        .uncertain_links()
        .union(&plan.excluded_links())
        .copied()
        .collect();
    let mut dels = Vec::new();
    let mut adds = Vec::new();
    let mut warnings = Vec::new();
    let mut leaving: BTreeSet<&str> = BTreeSet::new();
    for link in links.iter().filter(|l| !keep.contains(&l.index)) {
        let want = wanted.get(&link.index);
        for name in &link.altnames {
            if owned.contains(&(link.index, name.clone()))
                && !want.is_some_and(|w| w.contains(name))
            {
                leaving.insert(name);
                dels.push(Op::DelAltname {
                    index: link.index,
                    dev: link.name.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    for (index, names) in &wanted {
        let Some(link) = links.iter().find(|l| l.index == *index) else {
            continue;
        };
        for name in names {
            if link.altnames.contains(name) {
                continue;
            }
            let holder = links
                .iter()
                .find(|l| l.index != *index && (l.name == *name || l.altnames.contains(name)));
            match holder {
                Some(other) if !leaving.contains(name.as_str()) => {
                    warnings.push(Warning::AltnameTaken {
                        name: name.clone(),
                        dev: link.name.clone(),
                        holder: other.name.clone(),
                    })
                }
                _ => adds.push(Op::AddAltname {
                    index: *index,
                    dev: link.name.clone(),
                    name: name.clone(),
                }),
            }
        }
    }
    dels.extend(adds);
    (dels, warnings)
}

/// The names the records in `dir` say are the agent's, on the links
/// present: what [`diff`] may remove.
pub fn owned(dir: &Path, links: &[LinkNames]) -> BTreeSet<(u32, String)> {
    let records = AltnameRecords::load(dir);
    links
        .iter()
        .flat_map(|l| {
            l.altnames
                .iter()
                .filter(|a| records.owns(l, a))
                .map(|a| (l.index, a.clone()))
        })
        .collect()
}

/// Records in `dir` what the agent owns once `applied` (made from a
/// [`diff`] of `links` against `plan`) went in: what was added is on its
/// link, what was removed is gone.
pub fn record(
    dir: &Path,
    links: &[LinkNames],
    plan: &Plan,
    applied: &Applied,
) -> Result<(), crate::state::StateError> {
    let mut after = links.to_vec();
    for op in &applied.ops {
        match op {
            Op::AddAltname { index, name, .. } => {
                if let Some(l) = after.iter_mut().find(|l| l.index == *index) {
                    l.altnames.push(name.clone());
                }
            }
            Op::DelAltname { index, name, .. } => {
                if let Some(l) = after.iter_mut().find(|l| l.index == *index) {
                    l.altnames.retain(|a| a != name);
                }
            }
            _ => {}
        }
    }
    AltnameRecords::load(dir).update(&after, &wanted(plan, links), applied)
}

/// Removes every alternative name the agent owns (`eniroute cleanup`).
pub async fn teardown(kernel: &impl Kernel, dir: &Path) -> Applied {
    let links = match kernel.link_names().await {
        Ok(l) => l,
        Err(e) => {
            let mut failed = Applied::default();
            failed.errors.push(e.to_string());
            return failed;
        }
    };
    let records = AltnameRecords::load(dir);
    let ops = links
        .iter()
        .flat_map(|l| {
            l.altnames
                .iter()
                .filter(|a| records.owns(l, a))
                .map(|a| Op::DelAltname {
                    index: l.index,
                    dev: l.name.clone(),
                    name: a.clone(),
                })
        })
        .collect();
    apply(kernel, ops).await
}

/// Forgets the records (after `eniroute cleanup`).
pub fn remove_records(dir: &Path) -> std::io::Result<()> {
    match fs::remove_file(dir.join(RECORDS_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_stay_unique_across_cards() {
        let name = |card, device| device_name(EniKey::new(card, device).unwrap());
        assert_eq!(name(0, 0), "device-number-0");
        assert_eq!(name(0, 1), "device-number-1");
        assert_eq!(name(1, 1), "device-number-1.1");
        assert_ne!(name(0, 11), name(1, 1));
        assert!(valid(&name(EniKey::MAX_CARD, EniKey::MAX_DEVICE)));
        assert_eq!(
            card_zero_suffixed(EniKey::new(0, 1).unwrap()).as_deref(),
            Some("device-number-1.0")
        );
        assert_eq!(card_zero_suffixed(EniKey::new(1, 1).unwrap()), None);
    }
}
