//! Reading a whole instance through the client: the walk over the metadata
//! tree, once ([`fetch_instance`]) or repeatedly with a per-MAC cache of the
//! keys that do not change ([`MetadataCache`]).
//!
//! The meaning of the values is decided by [`parse`]; this module only
//! decides what to ask for and turns "could not ask" into an error. An error
//! anywhere fails the whole read: a partial instance would look like ENIs
//! that went away.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::client::{ErrorKind, ImdsClient, ImdsError};
use super::model::{EniState, Instance};
use super::parse::{self, EniKeys, FIRST_KEYS, VOLATILE_KEYS};
use crate::values::Mac;

const MACS_PATH: &str = "network/interfaces/macs/";

/// How many MACs are read at once, and how many keys of each: at most
/// their product of requests in flight. IMDS throttles per ENI by packet
/// rate; a handful of connections is fast and stays far from that, and a
/// full read of many ENIs takes a few round trips instead of one per key.
const MAC_CONCURRENCY: usize = 4;
const KEY_CONCURRENCY: usize = 4;

/// How much a [`MetadataCache::refresh`] reads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Depth {
    /// The MAC listing, and every key of the MACs not read before (or not
    /// whole when last read); ENIs read whole before keep what that read
    /// found. What a hot-plugged link, or one waiting for its metadata,
    /// needs: one request while the listing has nothing new.
    New,
    /// Also the volatile keys of every ENI (addresses move while an
    /// instance runs): the periodic poll.
    Volatile,
}

/// Which of the MACs the listing names are read beyond the listing.
///
/// Metadata lists every ENI attached to the instance, and an instance can
/// list thousands; only an ENI whose link is on this host can be
/// configured, so only those (and the primary ENI, whose VPC the others are
/// compared with) are worth their dozen requests each. The others are
/// listed in [`Instance::unread`], and one is read as soon as its link
/// appears.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every listed MAC (when the links cannot be read, and for tests).
    #[default]
    All,
    /// The primary ENI's MAC and these: the links present on the host, and
    /// MACs a takeover claim names.
    Only(BTreeSet<Mac>),
}

impl Scope {
    fn reads(&self, mac: Mac, primary: Mac) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(macs) => mac == primary || macs.contains(&mac),
        }
    }
}

/// Reads the instance: the top-level `mac`, the MAC listing, and the keys
/// the agent uses of each MAC in `scope` (a 404 is an absent key).
pub async fn fetch_instance(client: &ImdsClient, scope: &Scope) -> Result<Instance, ImdsError> {
    // Both answered before either error counts, so that a broken endpoint
    // is reported the same way every time: the `mac` first.
    let (primary_mac, macs) = futures::join!(primary_mac(client), mac_listing(client));
    let (primary_mac, macs) = (primary_mac?, macs?);
    let (macs, unread): (Vec<Mac>, Vec<Mac>) =
        macs.into_iter().partition(|m| scope.reads(*m, primary_mac));
    let primary_vpc = OnceCell::new();
    let enis = stream::iter(macs)
        .map(|mac| {
            let primary_vpc = &primary_vpc;
            async move {
                let keys = read_eni(client, mac, primary_mac, primary_vpc).await?;
                Ok::<_, ImdsError>(parse::eni(mac, mac == primary_mac, &keys))
            }
        })
        .buffered(MAC_CONCURRENCY)
        .try_collect()
        .await?;
    let mut instance = Instance::new(primary_mac, enis);
    instance.unread = unread.into_iter().collect();
    Ok(instance)
}

/// Reads the keys of one ENI that the agent uses, in stages: the
/// [`FIRST_KEYS`] say whether it is ready at all and which of the rest are
/// needed ([`parse::rest_keys`]); the rest follow. The primary ENI's
/// `vpc-id` is read once per walk, whoever needs it first.
async fn read_eni(
    client: &ImdsClient,
    mac: Mac,
    primary_mac: Mac,
    primary_vpc: &OnceCell<Option<String>>,
) -> Result<EniKeys, ImdsError> {
    let primary = mac == primary_mac;
    let mut keys = if primary {
        let own: Vec<&'static str> = FIRST_KEYS
            .iter()
            .copied()
            .filter(|k| *k != "vpc-id")
            .collect();
        let (mut keys, vpc) = futures::try_join!(
            fetch_keys(client, mac, &own),
            primary_vpc_id(client, primary_mac, primary_vpc)
        )?;
        keys.insert("vpc-id".to_string(), vpc.clone());
        keys
    } else {
        fetch_keys(client, mac, FIRST_KEYS).await?
    };
    if parse::settled_early(primary, &keys) {
        return Ok(keys);
    }
    let vpc = if parse::needs_primary_vpc(primary, &keys) {
        primary_vpc_id(client, primary_mac, primary_vpc)
            .await?
            .clone()
    } else {
        None
    };
    let rest = parse::rest_keys(primary, &keys, vpc.as_deref());
    keys.extend(fetch_keys(client, mac, &rest).await?);
    Ok(keys)
}

/// The primary ENI's `vpc-id`, read by the first ENI that needs it; the
/// others wait for that read rather than asking again.
async fn primary_vpc_id<'a>(
    client: &ImdsClient,
    primary_mac: Mac,
    cell: &'a OnceCell<Option<String>>,
) -> Result<&'a Option<String>, ImdsError> {
    cell.get_or_try_init(|| async { Ok(fetch_key(client, primary_mac, "vpc-id").await?.1) })
        .await
}

/// Metadata remembered between polls, for a daemon that reads the instance
/// every few seconds.
///
/// Addresses and prefixes (the [`VOLATILE_KEYS`]) move while the instance
/// runs and are read on every refresh, as is the MAC listing, so an ENI or an
/// IP moved to this host shows up within one poll. The rest (device number,
/// subnet, VPC) is fixed for the life of an attachment and is re-read only
/// when older than `static_max_age`, which keeps a poll at two to five
/// requests per ENI instead of a dozen (see [`fetch_volatile`]). MACs
/// outside the [`Scope`] are not read at all.
#[derive(Debug, Default)]
pub struct MetadataCache {
    /// The primary ENI cannot be detached, so the top-level `mac` is read
    /// once.
    primary: Option<Mac>,
    enis: BTreeMap<Mac, CachedEni>,
}

#[derive(Debug, Clone)]
struct CachedEni {
    static_keys: EniKeys,
    fetched: Instant,
    /// The volatile keys as last read.
    volatile: EniKeys,
    /// Whether the ENI parsed as Ready with these keys.
    ready: bool,
    /// Ready, and with addresses: what a read of only what is new may take
    /// from the last read. An ENI that read no addresses is asked again
    /// every time, so that a second read confirming a removal is a read.
    reusable: bool,
}

impl MetadataCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forces a full re-read of `mac` on the next refresh, e.g. when a link
    /// with that MAC (re)appears: a detach and re-attach between two polls
    /// can change its device number without the MAC leaving the listing.
    pub fn invalidate(&mut self, mac: Mac) {
        self.enis.remove(&mac);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Reads the instance, reusing cached static keys where they are fresh,
    /// and reading only the MACs in `scope` beyond the listing.
    ///
    /// An ENI that was not Ready last time has all its keys read again: a new
    /// attachment's metadata propagates over a few seconds (MAC listed but
    /// keys missing, device-number reading 0), and waiting `static_max_age`
    /// to look again would leave a hot-plugged ENI unconfigured for minutes.
    ///
    /// On error the cache is left as it was.
    ///
    /// With [`Depth::New`], an ENI read whole and with addresses last time
    /// is not asked again: its keys are the last read's.
    pub async fn refresh(
        &mut self,
        client: &ImdsClient,
        static_max_age: Duration,
        depth: Depth,
        scope: &Scope,
    ) -> Result<Instance, ImdsError> {
        let primary_mac = match self.primary {
            Some(mac) => mac,
            None => primary_mac(client).await?,
        };
        let (macs, unread): (Vec<Mac>, Vec<Mac>) = mac_listing(client)
            .await?
            .into_iter()
            .partition(|m| scope.reads(*m, primary_mac));
        let cached = &self.enis;
        // The primary's VPC as last read saves asking again.
        let primary_vpc = OnceCell::new_with(
            cached
                .get(&primary_mac)
                .filter(|c| c.ready)
                .map(|c| c.static_keys.get("vpc-id").cloned().flatten()),
        );
        let primary_vpc = &primary_vpc;
        let fresh: Vec<(Mac, CachedEni, EniState)> = stream::iter(macs)
            .map(|mac| {
                let keep = cached
                    .get(&mac)
                    .filter(|c| c.reusable && depth == Depth::New)
                    .cloned();
                let reuse = cached
                    .get(&mac)
                    .filter(|c| c.ready && c.fetched.elapsed() < static_max_age)
                    .cloned();
                async move {
                    if let Some(entry) = keep {
                        let mut keys = entry.static_keys.clone();
                        keys.extend(entry.volatile.clone());
                        let state = parse::eni(mac, mac == primary_mac, &keys);
                        return Ok::<_, ImdsError>((mac, entry, state));
                    }
                    let (entry, volatile) = match reuse {
                        Some(entry) => {
                            let volatile = fetch_volatile(client, mac, &entry.volatile).await?;
                            (entry, volatile)
                        }
                        None => {
                            let fetched = Instant::now();
                            let all = read_eni(client, mac, primary_mac, primary_vpc).await?;
                            let (volatile, static_keys): (EniKeys, EniKeys) = all
                                .into_iter()
                                .partition(|(k, _)| VOLATILE_KEYS.contains(&k.as_str()));
                            let entry = CachedEni {
                                static_keys,
                                fetched,
                                volatile: EniKeys::new(),
                                ready: false,
                                reusable: false,
                            };
                            (entry, volatile)
                        }
                    };
                    let mut keys = entry.static_keys.clone();
                    keys.extend(volatile.clone());
                    let entry = CachedEni { volatile, ..entry };
                    let state = parse::eni(mac, mac == primary_mac, &keys);
                    let entry = CachedEni {
                        ready: matches!(state, EniState::Ready(_)),
                        // The two removals a second read must confirm (see
                        // `Instance::confirm_bare`).
                        reusable: matches!(&state, EniState::Ready(e)
                            if !e.ipv4s.is_empty()
                                && (!e.ipv6s.is_empty() || e.subnet_v6.is_empty())),
                        ..entry
                    };
                    Ok::<_, ImdsError>((mac, entry, state))
                }
            })
            .buffered(MAC_CONCURRENCY)
            .try_collect()
            .await?;
        self.primary = Some(primary_mac);
        // MACs no longer listed, or no longer read, are dropped: if the ENI
        // comes back, it may come back with another device number.
        self.enis = fresh
            .iter()
            .map(|(mac, entry, _)| (*mac, entry.clone()))
            .collect();
        let mut instance = Instance::new(
            primary_mac,
            fresh.into_iter().map(|(_, _, state)| state).collect(),
        );
        instance.unread = unread.into_iter().collect();
        Ok(instance)
    }
}

fn malformed(client: &ImdsClient, path: &str, what: String) -> ImdsError {
    ImdsError::new(
        client.endpoint(),
        "GET",
        &format!("latest/meta-data/{path}"),
        ErrorKind::Malformed(what),
    )
}

async fn primary_mac(client: &ImdsClient) -> Result<Mac, ImdsError> {
    let body = client
        .get("mac")
        .await?
        .ok_or_else(|| malformed(client, "mac", "missing (404)".into()))?;
    body.trim()
        .parse()
        .map_err(|e| malformed(client, "mac", format!("{e}")))
}

/// The MAC listing. A listing that is missing, empty or does not parse is an
/// error, not an empty list: every instance has at least its primary ENI, so
/// such an answer says the endpoint is broken, and "no ENIs" would make the
/// reconciler tear down every ENI's routing.
async fn mac_listing(client: &ImdsClient) -> Result<Vec<Mac>, ImdsError> {
    let body = client
        .get(MACS_PATH)
        .await?
        .ok_or_else(|| malformed(client, MACS_PATH, "MAC listing missing (404)".into()))?;
    let macs =
        parse::mac_listing(&body).map_err(|e| malformed(client, MACS_PATH, e.to_string()))?;
    if macs.is_empty() {
        return Err(malformed(client, MACS_PATH, "MAC listing is empty".into()));
    }
    Ok(macs)
}

/// The [`VOLATILE_KEYS`] of a MAC whose keys were read before (`last`: the
/// volatile keys as that read found them).
///
/// A key that had a value last time is read again as it is: its value may
/// have changed, and its absence now is a removal that only a read of the
/// key itself may report. Whether a key that was absent (404) has appeared
/// is told by the MAC's directory listing, which names the keys that exist,
/// read alongside them: an ENI with only IPv4 addresses costs two requests
/// a poll instead of four, and an appearing key is read in the same poll.
/// A listing that is missing, or names none of the keys every ENI has, is
/// no guide: then every absent key is read, as before.
async fn fetch_volatile(
    client: &ImdsClient,
    mac: Mac,
    last: &EniKeys,
) -> Result<EniKeys, ImdsError> {
    let (present, absent): (Vec<&'static str>, Vec<&'static str>) = VOLATILE_KEYS
        .iter()
        .partition(|k| matches!(last.get(**k), Some(Some(_))));
    if absent.is_empty() {
        return fetch_keys(client, mac, &present).await;
    }
    let dir = format!("{MACS_PATH}{mac}/");
    let (listing, mut keys) =
        futures::try_join!(client.get(&dir), fetch_keys(client, mac, &present))?;
    let appeared: Vec<&'static str> = match listing.as_deref().map(parse::key_listing) {
        Some(listed) if listed.iter().any(|k| ALWAYS_LISTED.contains(&k.as_str())) => absent
            .iter()
            .copied()
            .filter(|k| listed.iter().any(|l| l == k))
            .collect(),
        _ => absent.clone(),
    };
    keys.extend(fetch_keys(client, mac, &appeared).await?);
    for key in absent {
        keys.entry(key.to_string()).or_insert(None);
    }
    Ok(keys)
}

/// Keys every ENI's directory lists: a listing without them is not one.
const ALWAYS_LISTED: &[&str] = &["local-ipv4s", "device-number", "interface-id"];

/// Reads `keys` of one MAC, [`KEY_CONCURRENCY`] at a time; 404s become
/// `None`. The first failure fails the whole read.
async fn fetch_keys(
    client: &ImdsClient,
    mac: Mac,
    keys: &[&'static str],
) -> Result<EniKeys, ImdsError> {
    let mut out = EniKeys::new();
    for chunk in keys.chunks(KEY_CONCURRENCY) {
        let reads = chunk.iter().map(|key| fetch_key(client, mac, key));
        out.extend(futures::future::try_join_all(reads).await?);
    }
    Ok(out)
}

async fn fetch_key(
    client: &ImdsClient,
    mac: Mac,
    key: &'static str,
) -> Result<(String, Option<String>), ImdsError> {
    let value = client.get(&format!("{MACS_PATH}{mac}/{key}")).await?;
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imds::parse::ENI_KEYS;

    #[test]
    fn static_and_volatile_keys_partition_eni_keys() {
        let statics: Vec<&str> = ENI_KEYS
            .iter()
            .copied()
            .filter(|k| !VOLATILE_KEYS.contains(k))
            .collect();
        assert_eq!(statics.len() + VOLATILE_KEYS.len(), ENI_KEYS.len());
        assert!(statics.contains(&"device-number"));
        assert!(!statics.contains(&"local-ipv4s"));
        assert!(VOLATILE_KEYS.iter().all(|k| ENI_KEYS.contains(k)));
    }
}
