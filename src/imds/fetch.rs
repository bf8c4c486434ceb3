//! Reading a whole instance through the client: the walk over the metadata
//! tree, once ([`fetch_instance`]) or repeatedly with a per-MAC cache of the
//! keys that do not change ([`MetadataCache`]).
//!
//! The meaning of the values is decided by [`parse`]; this module only
//! decides what to ask for and turns "could not ask" into an error. An error
//! anywhere fails the whole read: a partial instance would look like ENIs
//! that went away.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};

use super::client::{ErrorKind, ImdsClient, ImdsError};
use super::model::{EniState, Instance};
use super::parse::{self, EniKeys, ENI_KEYS, VOLATILE_KEYS};
use crate::values::Mac;

const MACS_PATH: &str = "network/interfaces/macs/";

/// How many MACs are read at once. IMDS throttles per ENI by packet rate; a
/// handful of connections is fast and stays far from that.
const MAC_CONCURRENCY: usize = 4;

/// Reads the instance: the top-level `mac`, the MAC listing, and every key of
/// [`ENI_KEYS`] for each MAC (a 404 is an absent key).
pub async fn fetch_instance(client: &ImdsClient) -> Result<Instance, ImdsError> {
    let primary_mac = primary_mac(client).await?;
    let macs = mac_listing(client).await?;
    let enis = stream::iter(macs)
        .map(|mac| async move {
            let keys = fetch_keys(client, mac, ENI_KEYS.iter().copied()).await?;
            Ok::<_, ImdsError>(parse::eni(mac, mac == primary_mac, &keys))
        })
        .buffered(MAC_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(Instance::new(primary_mac, enis))
}

/// Metadata remembered between polls, for a daemon that reads the instance
/// every few seconds.
///
/// Addresses and prefixes (the [`VOLATILE_KEYS`]) move while the instance
/// runs and are read on every refresh, as is the MAC listing, so an ENI or an
/// IP moved to this host shows up within one poll. The rest (device number,
/// subnet, VPC CIDRs) is fixed for the life of an attachment and is re-read
/// only when older than `static_max_age`, which keeps a poll at five requests
/// per ENI instead of fourteen.
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
    /// Whether the ENI parsed as Ready with these keys.
    ready: bool,
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

    /// Reads the instance, reusing cached static keys where they are fresh.
    ///
    /// An ENI that was not Ready last time has all its keys read again: a new
    /// attachment's metadata propagates over a few seconds (MAC listed but
    /// keys missing, device-number reading 0), and waiting `static_max_age`
    /// to look again would leave a hot-plugged ENI unconfigured for minutes.
    ///
    /// On error the cache is left as it was.
    pub async fn refresh(
        &mut self,
        client: &ImdsClient,
        static_max_age: Duration,
    ) -> Result<Instance, ImdsError> {
        let primary_mac = match self.primary {
            Some(mac) => mac,
            None => primary_mac(client).await?,
        };
        let macs = mac_listing(client).await?;
        let cached = &self.enis;
        let fresh: Vec<(Mac, CachedEni, EniState)> = stream::iter(macs)
            .map(|mac| {
                let reuse = cached
                    .get(&mac)
                    .filter(|c| c.ready && c.fetched.elapsed() < static_max_age)
                    .cloned();
                async move {
                    let entry = match reuse {
                        Some(entry) => entry,
                        None => {
                            let fetched = Instant::now();
                            let static_keys = fetch_keys(client, mac, static_keys()).await?;
                            CachedEni {
                                static_keys,
                                fetched,
                                ready: false,
                            }
                        }
                    };
                    let mut keys = entry.static_keys.clone();
                    keys.extend(fetch_keys(client, mac, VOLATILE_KEYS.iter().copied()).await?);
                    let state = parse::eni(mac, mac == primary_mac, &keys);
                    let entry = CachedEni {
                        ready: matches!(state, EniState::Ready(_)),
                        ..entry
                    };
                    Ok::<_, ImdsError>((mac, entry, state))
                }
            })
            .buffered(MAC_CONCURRENCY)
            .try_collect()
            .await?;
        self.primary = Some(primary_mac);
        // MACs no longer listed are dropped: if the ENI comes back, it may
        // come back with another device number.
        self.enis = fresh
            .iter()
            .map(|(mac, entry, _)| (*mac, entry.clone()))
            .collect();
        Ok(Instance::new(
            primary_mac,
            fresh.into_iter().map(|(_, _, state)| state).collect(),
        ))
    }
}

/// The keys of [`ENI_KEYS`] that are not volatile.
fn static_keys() -> impl Iterator<Item = &'static str> {
    ENI_KEYS
        .iter()
        .copied()
        .filter(|k| !VOLATILE_KEYS.contains(k))
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

/// Reads `keys` of one MAC, one after another; 404s become `None`.
async fn fetch_keys(
    client: &ImdsClient,
    mac: Mac,
    keys: impl Iterator<Item = &str>,
) -> Result<EniKeys, ImdsError> {
    let mut out = EniKeys::new();
    for key in keys {
        let value = client.get(&format!("{MACS_PATH}{mac}/{key}")).await?;
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_volatile_keys_partition_eni_keys() {
        let statics: Vec<_> = static_keys().collect();
        assert_eq!(statics.len() + VOLATILE_KEYS.len(), ENI_KEYS.len());
        assert!(statics.contains(&"device-number"));
        assert!(!statics.contains(&"local-ipv4s"));
        assert!(VOLATILE_KEYS.iter().all(|k| ENI_KEYS.contains(k)));
    }
}
