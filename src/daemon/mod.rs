//! The long-running agent: reconciles on every kernel event, polls the
//! volatile metadata, retries quickly while a new ENI's metadata settles,
//! and never tears anything down because something outside failed.
//!
//! One loop decides everything; events, timers and signals only set flags
//! (`dirty`: re-read the kernel and reconcile; `want_fetch`: re-read
//! metadata), and one reconcile follows however many of them arrived
//! together. Metadata is read by a separate task, because a read against a
//! broken endpoint can take seconds (timeouts, retries): the loop must keep
//! repairing rules and answering signals meanwhile.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::agent::{self, Namespace, SetupError};
use crate::config::{self, Config};
use crate::imds::client::{EndpointInUse, ImdsClient};
use crate::imds::model::{EniState, Instance};
use crate::netlink::events::Event;
use crate::netlink::rt::RtNetlink;
use crate::netlink::{Kernel, NetlinkError};
use crate::notify::Notifier;
use crate::plan::EniStatus;
use crate::values::Mac;

mod metadata;
mod retry;

use metadata::{metadata_task, FetchRequest, FetchResult};
use retry::{jitter, Retry};

/// Events that arrive this close together cause one reconcile: one attach
/// is a link, its addresses and routes, and our own writes echo back.
const COALESCE: Duration = Duration::from_millis(5);
/// Retry schedule for a link whose ENI metadata is not there yet (EC2 lists
/// a new MAC, and its device-number, a little after the link appears). The
/// first retries are cheap (the listing and a few keys from a link-local
/// endpoint) and a short lag is common, so they start well under 50 ms.
const LAG_FIRST_RETRY: Duration = Duration::from_millis(10);
const LAG_MAX_RETRY: Duration = Duration::from_secs(1);
const LAG_GIVE_UP: Duration = Duration::from_secs(120);
/// Retry schedule for a reconcile that failed or left errors, and for
/// links udev has not finished with.
const REPAIR_FIRST_RETRY: Duration = Duration::from_millis(50);
const REPAIR_MAX_RETRY: Duration = Duration::from_secs(5);
/// First retry after a failed metadata read; it doubles up to the normal
/// poll interval, never beyond: an outage must not make the agent slower to
/// notice that metadata is back than it is to notice a change.
const FAILURE_FIRST_RETRY: Duration = Duration::from_millis(250);
/// Boot is never held up longer than this waiting for the first reconcile
/// (systemd's own start timeout is usually 90 s; 30 s is the promise).
const READY_DEADLINE: Duration = Duration::from_secs(25);
/// Stands for "no deadline" where an `Instant` is needed.
const FAR: Duration = Duration::from_secs(3600);

/// Why the daemon could not start or had to stop.
#[derive(Debug)]
pub enum Error {
    Setup(SetupError),
    Runtime(std::io::Error),
    Events(NetlinkError),
    Signal {
        name: &'static str,
        source: std::io::Error,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Setup(e) => e.fmt(f),
            Error::Runtime(_) => f.write_str("cannot start the async runtime"),
            Error::Events(_) => f.write_str("cannot subscribe to netlink events"),
            Error::Signal { name, .. } => write!(f, "cannot handle {name}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Setup(e) => e.source(),
            Error::Runtime(e) => Some(e),
            Error::Events(e) => Some(e),
            Error::Signal { source, .. } => Some(source),
        }
    }
}

impl From<SetupError> for Error {
    fn from(e: SetupError) -> Error {
        Error::Setup(e)
    }
}

/// Runs the agent until SIGTERM or SIGINT, on a runtime of its own: a
/// single thread, since the agent does one thing at a time and a pool would
/// only cost memory.
pub fn run(
    config: Config,
    config_path: Option<PathBuf>,
    endpoint_override: Option<String>,
) -> Result<(), Error> {
    crate::logging::init(&config.log.level, &config.log.format);
    let ns = Namespace::claim()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let mut d = Daemon::new(config, config_path, endpoint_override, ns)?;
        d.run().await
    })
}

struct Daemon {
    config: Config,
    config_path: Option<PathBuf>,
    endpoint_override: Option<String>,
    /// The metadata endpoint in use, as the reader task's client sees it.
    endpoint: EndpointInUse,
    /// The endpoint last logged as answering, so a change is logged once.
    logged_endpoint: Option<String>,
    kernel: RtNetlink,
    ns: Namespace,
    notifier: Notifier,
    /// The last metadata read that succeeded; `None` until one did.
    instance: Option<Instance>,

    requests: mpsc::UnboundedSender<FetchRequest>,
    results: mpsc::UnboundedReceiver<FetchResult>,
    /// Parts of the next request, gathered until it is sent.
    next_client: Option<ImdsClient>,
    clear_cache: bool,
    forget: Vec<Mac>,
    want_fetch: bool,
    /// When the running metadata read started.
    in_flight: Option<Instant>,
    next_poll: Instant,
    failures: u32,

    dirty: bool,
    /// Links waiting for their ENI's metadata: when to look again, and why
    /// (logged when it changes).
    lagging: BTreeMap<Mac, (Retry, String)>,
    repair: Option<Retry>,
    last_errors: Vec<String>,
    last_warnings: Vec<String>,
    last_status: String,

    started: Instant,
    ready: bool,
}

impl Daemon {
    fn new(
        config: Config,
        config_path: Option<PathBuf>,
        endpoint_override: Option<String>,
        ns: Namespace,
    ) -> Result<Daemon, Error> {
        let client = agent::metadata_client(&config)?;
        let endpoint = client.endpoint_in_use();
        let kernel = agent::kernel(&config)?;
        let (requests, request_rx) = mpsc::unbounded_channel();
        let (result_tx, results) = mpsc::unbounded_channel();
        tokio::spawn(metadata_task(client, request_rx, result_tx));
        let now = Instant::now();
        Ok(Daemon {
            config,
            config_path,
            endpoint_override,
            endpoint,
            logged_endpoint: None,
            kernel,
            ns,
            notifier: Notifier::from_env(),
            instance: None,
            requests,
            results,
            next_client: None,
            clear_cache: false,
            forget: Vec::new(),
            want_fetch: true,
            in_flight: None,
            next_poll: now,
            failures: 0,
            dirty: true,
            lagging: BTreeMap::new(),
            repair: None,
            last_errors: Vec::new(),
            last_warnings: Vec::new(),
            last_status: String::new(),
            started: now,
            ready: false,
        })
    }

    fn volatile_interval(&self) -> Duration {
        Duration::from_secs(self.config.metadata.volatile_refresh_secs.max(1))
    }

    fn static_max_age(&self) -> Duration {
        Duration::from_secs(self.config.metadata.static_refresh_secs.max(1))
    }

    async fn run(&mut self) -> Result<(), Error> {
        let mut events = open_events(&self.kernel)?;
        let sig = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| Error::Signal { name, source })
        };
        let mut hup = sig(SignalKind::hangup(), "SIGHUP")?;
        let mut usr1 = sig(SignalKind::user_defined1(), "SIGUSR1")?;
        let mut term = sig(SignalKind::terminate(), "SIGTERM")?;
        let mut int = sig(SignalKind::interrupt(), "SIGINT")?;
        let watchdog = Notifier::watchdog_interval();
        let mut next_watchdog = Instant::now();

        tracing::info!(
            "eniroute {} starting (pid {}); metadata {}, polled every {:?}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.endpoint,
            self.volatile_interval()
        );
        loop {
            self.start_fetch();
            if self.dirty {
                self.dirty = false;
                self.reconcile().await;
            }
            self.check_ready_deadline();
            let wake = self.next_wake();
            let watchdog_at = match watchdog {
                Some(_) => next_watchdog,
                None => Instant::now() + FAR,
            };
            tokio::select! {
                ev = events.next() => {
                    match ev {
                        Ok(first) => {
                            self.note_event(&first);
                            let deadline = tokio::time::Instant::now() + COALESCE;
                            while let Ok(Ok(ev)) =
                                tokio::time::timeout_at(deadline, events.next()).await
                            {
                                self.note_event(&ev);
                            }
                        }
                        Err(e) => {
                            // Not an overrun (that is an event): the socket
                            // itself broke. A new one, then a full re-read,
                            // since anything may have changed unseen.
                            tracing::warn!("netlink event socket: {e}; reopening it and re-reading everything");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            match open_events(&self.kernel) {
                                Ok(s) => events = s,
                                Err(e) => tracing::error!("{}", crate::error_chain(&e)),
                            }
                            self.want_fetch = true;
                        }
                    }
                    self.dirty = true;
                }
                Some(result) = self.results.recv() => {
                    if let Some(t) = self.in_flight.take() {
                        tracing::debug!("metadata read in {:?}", t.elapsed());
                    }
                    self.metadata_read(result);
                }
                _ = sleep_until(wake.into()) => self.timers_fired(),
                _ = sleep_until(watchdog_at.into()) => {
                    self.notifier.send("WATCHDOG=1");
                    if let Some(w) = watchdog {
                        next_watchdog = Instant::now() + w;
                    }
                }
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: reading metadata again now");
                    self.clear_cache = true;
                    self.want_fetch = true;
                }
                _ = hup.recv() => {
                    self.reload();
                    self.want_fetch = true;
                    self.dirty = true;
                }
                _ = term.recv() => return self.stop("SIGTERM"),
                _ = int.recv() => return self.stop("SIGINT"),
            }
        }
    }

    fn stop(&self, why: &str) -> Result<(), Error> {
        tracing::info!("{why}: stopping; routing stays in place");
        self.notifier.send("STOPPING=1");
        Ok(())
    }

    /// Sends the next metadata request, if one is wanted and none is
    /// running (one read at a time: a second one would only race the first).
    fn start_fetch(&mut self) {
        if !self.want_fetch || self.in_flight.is_some() {
            return;
        }
        let req = FetchRequest {
            client: self.next_client.take(),
            static_max_age: self.static_max_age(),
            clear: std::mem::take(&mut self.clear_cache),
            forget: std::mem::take(&mut self.forget),
        };
        if self.requests.send(req).is_err() {
            // The task only ends when this side is dropped; should it have
            // died anyway, the last good state stays in place.
            tracing::error!("metadata reader is gone; keeping the last known state");
            self.want_fetch = false;
            return;
        }
        self.want_fetch = false;
        self.in_flight = Some(Instant::now());
        // The next poll is scheduled when this read finishes.
        self.next_poll = Instant::now() + FAR;
    }

    /// Records what an event means for the next round.
    fn note_event(&mut self, ev: &Event) {
        tracing::trace!("{ev:?}");
        match ev {
            Event::Overrun => {
                tracing::warn!("netlink events overran the socket buffer; re-reading everything");
                // A link may have appeared among the lost events.
                self.want_fetch = true;
            }
            Event::Link {
                mac: Some(mac),
                removed: true,
                ..
            } => self.forget_mac(*mac),
            Event::Link {
                mac: Some(mac),
                removed: false,
                added,
                ..
            } if mac.octets() != [0; 6] => {
                let known = self
                    .instance
                    .as_ref()
                    .and_then(|i| i.get(*mac))
                    .is_some_and(|e| matches!(e, EniState::Ready(_)));
                if !known {
                    // A link metadata does not describe (yet): a hot-plugged
                    // ENI shows up in the kernel first.
                    self.want_fetch = true;
                } else if *added {
                    // Known from a read made before the link appeared: act
                    // on it now, and read again in case this is a new
                    // attachment with another device number.
                    self.forget.push(*mac);
                    self.want_fetch = true;
                }
            }
            _ => {}
        }
    }

    /// A link went away: what metadata said about its attachment may be
    /// void (a re-attach of the same MAC can bring another device number),
    /// so it is read again before anything is configured from it. Until
    /// then the ENI counts as not ready, which also leaves alone any other
    /// link with that MAC (a VLAN on the ENI going away is not the ENI
    /// going away).
    fn forget_mac(&mut self, mac: Mac) {
        self.lagging.remove(&mac);
        let Some(e) = self
            .instance
            .as_mut()
            .and_then(|i| i.enis.iter_mut().find(|e| e.mac() == mac))
        else {
            // Not an ENI (a container's veth, say): nothing to re-read.
            return;
        };
        *e = EniState::NotReady {
            mac,
            reason: "its link went away; reading its metadata again".into(),
        };
        self.forget.push(mac);
        self.want_fetch = true;
    }

    fn failure_backoff(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(16);
        let step = FAILURE_FIRST_RETRY.saturating_mul(2u32.saturating_pow(exp));
        jitter(step.min(self.volatile_interval()))
    }

    /// A metadata read finished. On failure the last good instance stays in
    /// force: an outage must never look like "no ENIs".
    fn metadata_read(&mut self, result: FetchResult) {
        let now = Instant::now();
        match result {
            Ok(instance) => {
                if self.failures > 0 {
                    tracing::info!(
                        "metadata readable again after {} failed reads",
                        self.failures
                    );
                }
                self.failures = 0;
                self.next_poll = now + self.volatile_interval();
                // Which endpoint answered is known once one did (and may
                // change when the first stops answering): said once each.
                let current = self.endpoint.current().to_string();
                if self.logged_endpoint.as_deref() != Some(current.as_str()) {
                    tracing::info!("metadata endpoint: {}", self.endpoint);
                    self.logged_endpoint = Some(current);
                }
                // Unchanged metadata and an unchanged kernel (any change
                // there is an event) plan the same: nothing to do.
                if self.instance.as_ref() != Some(&instance) {
                    tracing::debug!("metadata changed");
                    self.instance = Some(instance);
                    self.dirty = true;
                }
            }
            Err(e) => {
                self.failures += 1;
                let retry = self.failure_backoff();
                self.next_poll = now + retry;
                // The first failure is worth a warning; a long outage
                // repeats it at most once a minute or so.
                let log_it = self.failures == 1 || self.failures.is_power_of_two();
                if log_it {
                    tracing::warn!(
                        "{e}; keeping the last known state ({} failed reads in a row), retrying in {retry:?}",
                        self.failures
                    );
                } else {
                    tracing::debug!("{e}; retrying in {retry:?}");
                }
            }
        }
    }

    /// The earliest timer: poll, lag retry, repair retry, ready deadline.
    fn next_wake(&self) -> Instant {
        let mut wake = self.next_poll;
        // While metadata fails, its backoff alone decides when to ask again.
        if self.failures == 0 {
            if let Some(lag) = self.lagging.values().map(|(l, _)| l.next).min() {
                wake = wake.min(lag);
            }
        }
        if let Some(r) = &self.repair {
            wake = wake.min(r.next);
        }
        if !self.ready {
            wake = wake.min(self.started + READY_DEADLINE);
        }
        wake
    }

    fn timers_fired(&mut self) {
        let now = Instant::now();
        if now >= self.next_poll {
            self.want_fetch = true;
            self.next_poll = now + FAR;
        }
        if self.failures == 0 {
            for (lag, _) in self.lagging.values_mut().filter(|(l, _)| now >= l.next) {
                self.want_fetch = true;
                lag.advance(now, LAG_MAX_RETRY, LAG_GIVE_UP);
            }
        }
        if let Some(r) = &mut self.repair {
            if now >= r.next {
                self.dirty = true;
                r.advance(now, REPAIR_MAX_RETRY, FAR);
            }
        }
    }

    async fn reconcile(&mut self) {
        let Some(instance) = &self.instance else {
            return;
        };
        let t0 = Instant::now();
        let result =
            crate::reconcile::reconcile(&self.kernel, instance, &self.config, &mut self.ns.records)
                .await;
        let took = t0.elapsed();
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!("reconcile: {e}; retrying");
                self.schedule_repair(true);
                return;
            }
        };
        for op in &out.applied.ops {
            tracing::info!("{op}");
        }
        // The same failure on every retry is logged once.
        if out.applied.errors != self.last_errors {
            for e in &out.applied.errors {
                tracing::error!("{e}");
            }
            self.last_errors = out.applied.errors.clone();
        }
        // Warnings (metadata, overlaps) and foreign rules that shadow ours
        // are logged when they change, not on every reconcile.
        let warnings: Vec<String> = out
            .plan
            .warnings
            .iter()
            .chain(&out.conflicts)
            .cloned()
            .collect();
        if warnings != self.last_warnings {
            for w in &warnings {
                tracing::warn!("{w}");
            }
            self.last_warnings = warnings;
        }
        if !out.applied.ops.is_empty() {
            tracing::info!(
                "reconciled: {} changes, {} writes in {took:?}",
                out.applied.ops.len(),
                out.applied.writes
            );
        }
        self.track_lag(&out);
        self.schedule_repair(!out.applied.errors.is_empty() || !out.udev_pending.is_empty());

        let managed = out
            .plan
            .enis
            .iter()
            .filter(|e| e.status == EniStatus::Managed)
            .count();
        let mut status = format!("{managed} ENIs managed");
        if !self.lagging.is_empty() {
            status += &format!(", {} waiting for metadata", self.lagging.len());
        }
        if !out.applied.errors.is_empty() {
            status += &format!(", {} changes failing", out.applied.errors.len());
        }
        status += &format!(
            "; last reconcile: {} changes in {} ms",
            out.applied.ops.len(),
            took.as_millis()
        );
        if !self.ready && out.applied.errors.is_empty() {
            self.ready = true;
            tracing::info!("ready: {status}");
            self.notifier.send(&format!("READY=1\nSTATUS={status}"));
        } else if status != self.last_status {
            self.notifier.send(&format!("STATUS={status}"));
        }
        self.last_status = status;
    }

    /// Keeps (or ends) the retry schedule for a reconcile that could not
    /// finish: a failed change, a failed kernel read, a link udev still holds.
    fn schedule_repair(&mut self, needed: bool) {
        if !needed {
            self.repair = None;
        } else if self.repair.is_none() {
            self.repair = Some(Retry::new(Instant::now(), REPAIR_FIRST_RETRY));
        }
    }

    /// Keeps the fast-retry schedule for links whose ENI metadata is not
    /// usable yet: 10 ms, doubling to 1 s, for up to 120 s. A link that is
    /// no ENI at all (a bridge, a container's veth) ends up polled at the
    /// normal rate after that.
    fn track_lag(&mut self, out: &crate::reconcile::Outcome) {
        let now = Instant::now();
        let mut waiting: Vec<(Mac, String)> = out
            .unknown_macs
            .iter()
            .map(|m| (*m, "not in metadata yet".to_string()))
            .collect();
        waiting.extend(out.plan.enis.iter().filter_map(|e| match &e.status {
            EniStatus::NotReady(reason) if e.index.is_some() => Some((e.mac, reason.clone())),
            _ => None,
        }));
        self.lagging
            .retain(|mac, _| waiting.iter().any(|(m, _)| m == mac));
        for (mac, reason) in waiting {
            let entry = self
                .lagging
                .entry(mac)
                .or_insert_with(|| (Retry::new(now, LAG_FIRST_RETRY), String::new()));
            if entry.1 != reason {
                tracing::debug!("link with MAC {mac} waits for its metadata: {reason}");
                entry.1 = reason;
            }
        }
    }

    /// Tells systemd the agent is up even though it could not finish, so
    /// boot goes on, and says what is missing.
    fn check_ready_deadline(&mut self) {
        if self.ready || self.started.elapsed() < READY_DEADLINE {
            return;
        }
        self.ready = true;
        let missing = self.missing();
        tracing::warn!(
            "reporting ready after {READY_DEADLINE:?} without a complete reconcile: {missing}"
        );
        self.notifier.send(&format!(
            "READY=1\nSTATUS=started without a complete reconcile: {missing}"
        ));
    }

    fn missing(&self) -> String {
        if self.instance.is_none() {
            format!("metadata not readable at {}", self.endpoint)
        } else if !self.last_errors.is_empty() {
            format!("{} changes failing, see the log", self.last_errors.len())
        } else {
            "the kernel could not be read, see the log".into()
        }
    }

    /// SIGHUP: a bad file is reported and the running configuration kept.
    fn reload(&mut self) {
        let mut new = match config::load_checked(self.config_path.as_deref()) {
            Ok(c) => c,
            Err(errors) => {
                // Every problem at once, so one edit can fix them all.
                for e in &errors {
                    tracing::error!("reload: {e}");
                }
                tracing::error!(
                    "reload: {} problems in the configuration; keeping the running one",
                    errors.len()
                );
                return;
            }
        };
        agent::override_endpoint(&mut new, self.endpoint_override.as_deref());
        // Ownership is recognised by the numbering: changing it under a
        // running agent would orphan what it created. The rest applies now.
        let held = config::restart_required(&self.config, &new);
        if !held.is_empty() {
            tracing::warn!(
                "reload: {} changed; that takes a restart (and `eniroute cleanup` first for [numbering]); keeping the running value",
                held.join(", ")
            );
            new.numbering = self.config.numbering.clone();
            new.log.format = self.config.log.format.clone();
        }
        if new.metadata != self.config.metadata {
            match agent::metadata_client(&new) {
                Ok(c) => {
                    self.endpoint = c.endpoint_in_use();
                    self.logged_endpoint = None;
                    self.next_client = Some(c);
                }
                Err(e) => {
                    tracing::error!("reload: {e}; keeping the running configuration");
                    return;
                }
            }
        }
        if new.log.level != self.config.log.level {
            crate::logging::set_level(&new.log.level);
        }
        if new == self.config {
            tracing::info!("reload: configuration unchanged");
        } else {
            tracing::info!("reload: configuration applied");
            self.config = new;
            self.next_poll = self
                .next_poll
                .min(Instant::now() + self.volatile_interval());
        }
    }
}

fn open_events<K: Kernel>(kernel: &K) -> Result<K::Events, Error> {
    kernel.events().map_err(Error::Events)
}
