//! The long-running agent: reconciles on every kernel event, polls the
//! volatile metadata, retries quickly while a new ENI's metadata settles,
//! and never tears anything down because something outside failed.
//!
//! One task, one loop: events, timers and signals all end up in the same
//! place (`dirty` / `fetch`), and one reconcile follows however many of them
//! arrived together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::time::sleep_until;

use crate::cli::{runtime, Failure};
use crate::config::{self, Config};
use crate::imds::client::{ImdsClient, ImdsOptions};
use crate::imds::fetch::MetadataCache;
use crate::imds::model::{Instance, Mac};
use crate::netlink::events::{Event, EventSocket};
use crate::netlink::rt::RtNetlink;
use crate::notify::Notifier;
use crate::state;

/// Events that arrive this close together cause one reconcile.
const COALESCE: Duration = Duration::from_millis(5);
/// Fast retries for an ENI whose metadata is not there yet.
const LAG_FIRST_RETRY: Duration = Duration::from_millis(50);
const LAG_MAX_RETRY: Duration = Duration::from_secs(1);
const LAG_GIVE_UP: Duration = Duration::from_secs(120);
/// Metadata failures back off to this.
const FAILURE_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Boot is never held up longer than this waiting for the first reconcile.
const READY_DEADLINE: Duration = Duration::from_secs(25);

pub fn run(
    config: Config,
    config_path: Option<PathBuf>,
    endpoint_override: Option<String>,
) -> Result<(), Failure> {
    crate::logging::init(&config.log.level, &config.log.format);
    let dir = state::run_dir().map_err(Failure::runtime)?;
    let _lock = state::Lock::acquire(&dir).map_err(Failure::runtime)?;
    let records = state::AddressRecords::load(&dir);
    runtime()?.block_on(async move {
        let mut d = Daemon::new(config, config_path, endpoint_override, records)?;
        d.run().await
    })
}

/// A MAC seen on a link but not (yet) usable in metadata.
struct Lagging {
    since: Instant,
    next: Instant,
    step: Duration,
}

struct Daemon {
    config: Config,
    config_path: Option<PathBuf>,
    endpoint_override: Option<String>,
    client: ImdsClient,
    cache: MetadataCache,
    kernel: RtNetlink,
    records: state::AddressRecords,
    notifier: Notifier,
    instance: Option<Instance>,
    lagging: BTreeMap<Mac, Lagging>,
    failures: u32,
    ready: bool,
    reconciles: u64,
    last_summary: String,
}

impl Daemon {
    fn new(
        config: Config,
        config_path: Option<PathBuf>,
        endpoint_override: Option<String>,
        records: state::AddressRecords,
    ) -> Result<Daemon, Failure> {
        let client =
            ImdsClient::new(ImdsOptions::from(&config.metadata)).map_err(Failure::usage)?;
        let kernel = RtNetlink::connect(config.numbering.protocol)
            .map_err(|e| Failure::runtime(format!("cannot open a netlink socket: {e}")))?;
        Ok(Daemon {
            config,
            config_path,
            endpoint_override,
            client,
            cache: MetadataCache::new(),
            kernel,
            records,
            notifier: Notifier::from_env(),
            instance: None,
            lagging: BTreeMap::new(),
            failures: 0,
            ready: false,
            reconciles: 0,
            last_summary: String::new(),
        })
    }

    fn volatile_interval(&self) -> Duration {
        Duration::from_secs(self.config.metadata.volatile_refresh_secs.max(1))
    }

    fn static_max_age(&self) -> Duration {
        Duration::from_secs(self.config.metadata.static_refresh_secs.max(1))
    }

    async fn run(&mut self) -> Result<(), Failure> {
        let mut events = EventSocket::open()
            .map_err(|e| Failure::runtime(format!("cannot subscribe to netlink events: {e}")))?;
        let sig = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| Failure::runtime(format!("cannot handle {name}: {e}")))
        };
        let mut hup = sig(SignalKind::hangup(), "SIGHUP")?;
        let mut usr1 = sig(SignalKind::user_defined1(), "SIGUSR1")?;
        let mut term = sig(SignalKind::terminate(), "SIGTERM")?;
        let mut int = sig(SignalKind::interrupt(), "SIGINT")?;
        let watchdog = Notifier::watchdog_interval();
        let started = Instant::now();
        let far = Duration::from_secs(3600);

        tracing::info!(
            "eniroute {} starting; metadata {}",
            env!("CARGO_PKG_VERSION"),
            self.client.endpoint()
        );
        let mut fetch = true;
        let mut dirty = true;
        let mut next_poll = Instant::now();
        let mut next_watchdog = Instant::now();
        loop {
            if fetch {
                fetch = false;
                let ok = self.refresh_metadata().await;
                next_poll = Instant::now()
                    + if ok {
                        self.volatile_interval()
                    } else {
                        self.failure_backoff()
                    };
                dirty |= ok;
            }
            if dirty {
                dirty = false;
                self.reconcile().await;
            }
            if !self.ready && started.elapsed() >= READY_DEADLINE {
                self.ready = true;
                self.notifier.send(&format!(
                    "READY=1\nSTATUS=started without a complete reconcile: {}",
                    self.missing()
                ));
                tracing::warn!(
                    "reporting ready after {READY_DEADLINE:?} without a complete reconcile: {}",
                    self.missing()
                );
            }
            let lag_at = self.lagging.values().map(|l| l.next).min();
            let ready_at = (!self.ready).then(|| started + READY_DEADLINE);
            let wake = [Some(next_poll), lag_at, ready_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + far);
            let watchdog_at = watchdog
                .map(|_| next_watchdog)
                .unwrap_or_else(|| Instant::now() + far);
            tokio::select! {
                ev = events.next() => {
                    match ev {
                        Ok(first) => {
                            fetch |= self.note_event(&first);
                            // Coalesce the burst that usually follows (one
                            // attach is a link, addresses and routes).
                            let deadline = tokio::time::Instant::now() + COALESCE;
                            while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, events.next()).await {
                                fetch |= self.note_event(&ev);
                            }
                        }
                        Err(e) => {
                            tracing::warn!("netlink event socket: {e}; re-reading everything");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    dirty = true;
                }
                _ = sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if now >= next_poll || lag_at.is_some_and(|t| now >= t) {
                        fetch = true;
                    }
                }
                _ = sleep_until(watchdog_at.into()) => {
                    self.notifier.send("WATCHDOG=1");
                    if let Some(w) = watchdog {
                        next_watchdog = Instant::now() + w;
                    }
                }
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: refreshing metadata now");
                    self.cache.clear();
                    fetch = true;
                }
                _ = hup.recv() => {
                    self.reload();
                    fetch = true;
                    dirty = true;
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: stopping, routing stays in place");
                    self.notifier.send("STOPPING=1");
                    return Ok(());
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping, routing stays in place");
                    self.notifier.send("STOPPING=1");
                    return Ok(());
                }
            }
        }
    }

    /// Records what an event means; returns whether metadata must be read
    /// (a link appeared whose MAC metadata has not described yet).
    fn note_event(&mut self, ev: &Event) -> bool {
        match ev {
            Event::Overrun => {
                tracing::warn!("netlink events overran the socket buffer; re-reading everything");
                false
            }
            Event::Link {
                mac: Some(mac),
                removed: false,
                ..
            } => {
                let known = self
                    .instance
                    .as_ref()
                    .and_then(|i| i.get(*mac))
                    .is_some_and(|e| matches!(e, crate::imds::model::EniState::Ready(_)));
                !known && mac.octets() != [0; 6]
            }
            _ => false,
        }
    }

    fn failure_backoff(&self) -> Duration {
        let exp = self.failures.min(8);
        (Duration::from_millis(250) * 2u32.pow(exp)).min(FAILURE_MAX_BACKOFF)
    }

    /// Reads metadata. On failure the last good instance stays in force:
    /// an outage must never look like "no ENIs".
    async fn refresh_metadata(&mut self) -> bool {
        match self
            .cache
            .refresh(&self.client, self.static_max_age())
            .await
        {
            Ok(instance) => {
                if self.failures > 0 {
                    tracing::info!("metadata reachable again after {} failures", self.failures);
                }
                self.failures = 0;
                let changed = self.instance.as_ref() != Some(&instance);
                if changed {
                    tracing::debug!("metadata changed");
                }
                self.instance = Some(instance);
                changed || !self.lagging.is_empty()
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(
                    "metadata: {e}; keeping the last known state, retrying in {:?}",
                    self.failure_backoff()
                );
                false
            }
        }
    }

    async fn reconcile(&mut self) {
        let Some(instance) = &self.instance else {
            return;
        };
        let t0 = Instant::now();
        match crate::reconcile::reconcile(&self.kernel, instance, &self.config, &mut self.records)
            .await
        {
            Ok(out) => {
                self.reconciles += 1;
                for op in &out.applied.ops {
                    tracing::info!("{op}");
                }
                for e in &out.applied.errors {
                    tracing::error!("{e}");
                }
                let summary = out.plan.warnings.join("; ");
                if summary != self.last_summary {
                    for w in &out.plan.warnings {
                        tracing::warn!("{w}");
                    }
                    self.last_summary = summary;
                }
                if !out.applied.ops.is_empty() {
                    tracing::info!(
                        "reconciled: {} changes, {} writes in {:?}",
                        out.applied.ops.len(),
                        out.applied.writes,
                        t0.elapsed()
                    );
                }
                self.track_lag(&out);
                let managed = out
                    .plan
                    .enis
                    .iter()
                    .filter(|e| e.status == crate::plan::EniStatus::Managed)
                    .count();
                let status = format!(
                    "STATUS={managed} ENIs managed; last reconcile {} changes, {} pending",
                    out.applied.ops.len(),
                    self.lagging.len()
                );
                if !self.ready && out.applied.errors.is_empty() {
                    self.ready = true;
                    self.notifier.send(&format!("READY=1\n{status}"));
                } else {
                    self.notifier.send(&status);
                }
            }
            Err(e) => tracing::warn!("reconcile: {e}; will retry on the next event or poll"),
        }
    }

    /// Keeps the fast-retry schedule for links whose ENI metadata is not
    /// usable yet: starting at 50 ms, doubling to 1 s, for up to 120 s.
    fn track_lag(&mut self, out: &crate::reconcile::Outcome) {
        let now = Instant::now();
        let mut waiting: Vec<Mac> = out.unknown_macs.clone();
        waiting.extend(
            out.plan
                .enis
                .iter()
                .filter(|e| {
                    matches!(e.status, crate::plan::EniStatus::NotReady(_)) && e.index.is_some()
                })
                .map(|e| e.mac),
        );
        self.lagging.retain(|mac, _| waiting.contains(mac));
        for mac in waiting {
            let entry = self.lagging.entry(mac).or_insert(Lagging {
                since: now,
                next: now,
                step: LAG_FIRST_RETRY,
            });
            if entry.next <= now {
                entry.next = now + entry.step;
                entry.step = (entry.step * 2).min(LAG_MAX_RETRY);
            }
            if now.duration_since(entry.since) > LAG_GIVE_UP {
                // Not an ENI after all (a bridge, a container's veth), or
                // metadata never caught up: back to the normal poll.
                entry.next = now + Duration::from_secs(3600);
            }
        }
    }

    fn missing(&self) -> String {
        if self.instance.is_none() {
            format!("metadata not reachable at {}", self.client.endpoint())
        } else if !self.lagging.is_empty() {
            format!("{} ENIs still waiting for metadata", self.lagging.len())
        } else {
            "reconcile failed, see the log".into()
        }
    }

    /// SIGHUP: a bad file is reported and the running configuration kept.
    fn reload(&mut self) {
        match config::load(self.config_path.as_deref()) {
            Ok(mut new) => {
                // A metadata endpoint given on the command line still wins.
                if let Some(url) = &self.endpoint_override {
                    new.metadata.endpoint = url.clone();
                    new.metadata.use_ipv6 = false;
                }
                // Ownership is recognised by these numbers: changing them
                // under a running agent would orphan what it created.
                if new.numbering != self.config.numbering {
                    tracing::error!(
                        "reload: [numbering] changed; that needs `eniroute cleanup` and a restart, keeping the running configuration"
                    );
                    return;
                }
                if new.metadata != self.config.metadata {
                    match ImdsClient::new(ImdsOptions::from(&new.metadata)) {
                        Ok(c) => self.client = c,
                        Err(e) => {
                            tracing::error!("reload: {e}; keeping the running configuration");
                            return;
                        }
                    }
                }
                tracing::info!("configuration reloaded");
                self.config = new;
            }
            Err(e) => tracing::error!("reload: {e}; keeping the running configuration"),
        }
    }
}
