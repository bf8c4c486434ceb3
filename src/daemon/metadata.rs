//! The metadata reader: a task of its own, because a read against a broken
//! endpoint can take seconds, and the event loop must keep repairing rules
//! and answering signals meanwhile.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::imds::client::{ImdsClient, ImdsError};
use crate::imds::fetch::{Depth, MetadataCache, Scope};
use crate::imds::model::Instance;
use crate::values::Mac;

/// What the metadata task is asked to do before its next read.
pub(super) struct FetchRequest {
    /// A new client (the endpoint or timeouts changed on reload).
    pub(super) client: Option<ImdsClient>,
    pub(super) static_max_age: Duration,
    /// Forget every cached static key (SIGUSR1: the operator wants
    /// everything read again).
    pub(super) clear: bool,
    /// Forget these MACs' cached keys (their link went away; if it comes
    /// back, it may come back with another device number).
    pub(super) forget: Vec<Mac>,
    /// Only what is new, or the volatile keys of every ENI too.
    pub(super) depth: Depth,
    /// The MACs of the links on the host as the read starts, and those the
    /// configuration names (`None` when the kernel could not be read):
    /// those are read in depth, with those that claims name.
    pub(super) wanted: Option<Vec<Mac>>,
}

pub(super) type FetchResult = Result<Instance, ImdsError>;

/// Reads metadata on request, one read at a time, keeping the per-MAC
/// cache of static keys between reads.
pub(super) async fn metadata_task(
    mut client: ImdsClient,
    mut requests: mpsc::UnboundedReceiver<FetchRequest>,
    results: mpsc::UnboundedSender<FetchResult>,
) {
    let mut cache = MetadataCache::new();
    // What `eniroute takeover` learnt from EC2 before metadata shows it.
    let mut claims = crate::claim::Pending::new(crate::state::run_dir().ok());
    while let Some(req) = requests.recv().await {
        if let Some(c) = req.client {
            client = c;
            cache.clear();
        }
        if req.clear {
            cache.clear();
        }
        for mac in req.forget {
            cache.invalidate(mac);
        }
        let scope = match &req.wanted {
            Some(macs) => Scope::Only(macs.iter().copied().chain(claims.macs()).collect()),
            None => Scope::All,
        };
        let result = cache
            .refresh(&client, req.static_max_age, req.depth, &scope)
            .await
            .map(|instance| claims.apply(instance));
        if results.send(result).is_err() {
            return;
        }
    }
}
