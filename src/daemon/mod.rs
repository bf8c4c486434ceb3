//! The long-running agent: reconciles on every kernel event, polls the
//! volatile metadata, retries quickly while a new ENI's metadata settles,
//! and never tears anything down because something outside failed.
//!
//! Its decisions (what to read, when to reconcile, retry timing, readiness)
//! are a state machine in [`machine`], with the time passed in; this module
//! is the I/O around it: one loop that turns events, metadata results,
//! timers and signals into inputs, and carries out the commands that come
//! back. Metadata is read by a separate task ([`metadata`]), because a read
//! against a broken endpoint can take seconds (timeouts, retries): the loop
//! must keep repairing rules and answering signals meanwhile.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::agent::{self, Namespace, SetupError};
use crate::config::{self, Config};
use crate::imds::client::{ImdsClient, RequestCounts};
use crate::metrics::Metrics;
use crate::netlink::view::{Concern, Viewed, SAFETY_RESYNC};
use crate::netlink::{EventSource, Kernel, NetlinkError};
use crate::notify::Notifier;

mod machine;
mod metadata;
mod textfile;

use machine::{Command, Input, Machine, Reload};
use metadata::{metadata_task, FetchRequest, FetchResult};
use textfile::Textfile;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot subscribe to netlink events")]
    Events(#[source] NetlinkError),
    #[error("cannot handle {name}")]
    Signal {
        name: &'static str,
        source: std::io::Error,
    },
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
        // The numbering cannot change without a restart, so neither can
        // what the agent is concerned with.
        let concern = Concern {
            protocol: config.numbering.protocol,
            tables: config.numbering.table_base
                ..config
                    .numbering
                    .table_base
                    .saturating_add(config::TABLE_SPAN),
        };
        let kernel = Viewed::new(
            agent::kernel(&config)?.with_concern(concern.clone()),
            concern,
        );
        let mut d = Daemon::new(config, config_path, endpoint_override, kernel, ns)?;
        d.run().await
    })
}

/// The I/O around the [`Machine`], on any host.
struct Daemon<K: Kernel> {
    config: Config,
    config_path: Option<PathBuf>,
    endpoint_override: Option<String>,
    /// Reconciles read the kernel from a view that kernel events keep up
    /// to date.
    kernel: Viewed<K>,
    ns: Namespace,
    notifier: Notifier,
    requests: mpsc::UnboundedSender<FetchRequest>,
    results: mpsc::UnboundedReceiver<FetchResult>,
    /// A client for the next metadata read (the endpoint or timeouts
    /// changed on reload).
    next_client: Option<ImdsClient>,
    machine: Machine,
    metrics: Metrics,
    textfile: Textfile,
}

fn poll_interval(config: &Config) -> Duration {
    Duration::from_secs(config.metadata.volatile_refresh_secs.max(1))
}

impl<K: Kernel> Daemon<K> {
    fn new(
        config: Config,
        config_path: Option<PathBuf>,
        endpoint_override: Option<String>,
        kernel: Viewed<K>,
        ns: Namespace,
    ) -> Result<Daemon<K>, Error> {
        let counts = RequestCounts::default();
        let client = agent::metadata_client(&config)?.with_counts(counts.clone());
        let endpoint = client.endpoint_in_use();
        let (requests, request_rx) = mpsc::unbounded_channel();
        let (result_tx, results) = mpsc::unbounded_channel();
        tokio::spawn(metadata_task(client, request_rx, result_tx));
        let machine = Machine::new(
            Instant::now(),
            endpoint,
            poll_interval(&config),
            crate::backoff::random_unit,
        )
        .with_watchdog(Notifier::watchdog_interval());
        let textfile = Textfile::new(config.metrics.textfile.clone());
        Ok(Daemon {
            config,
            config_path,
            endpoint_override,
            kernel,
            ns,
            notifier: Notifier::from_env(),
            requests,
            results,
            next_client: None,
            machine,
            metrics: Metrics::new(counts),
            textfile,
        })
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

        tracing::info!(
            "eniroute {} starting (pid {}); metadata {}, polled every {:?}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.machine.endpoint(),
            poll_interval(&self.config)
        );
        let first = self.machine.start(Instant::now());
        self.perform(first).await;
        let mut resync_at = Instant::now() + SAFETY_RESYNC;
        let mut trimmed_after = 0;
        loop {
            let wake = self.machine.next_wake();
            let metrics_due = self.textfile.due(Instant::now());
            let commands = tokio::select! {
                change = events.next() => match change {
                    Ok(change) => {
                        tracing::trace!("{change:?}");
                        // Nothing of concern changed: no reconcile.
                        let Some(ev) = self.kernel.observe(&change) else {
                            continue;
                        };
                        self.metrics.event(Instant::now(), &ev);
                        self.machine.handle(Instant::now(), Input::Event(&ev))
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
                        self.kernel.invalidate("the event socket was reopened");
                        self.machine.handle(Instant::now(), Input::EventsLost)
                    }
                },
                _ = sleep_until(resync_at.into()) => {
                    resync_at = Instant::now() + SAFETY_RESYNC;
                    match self.kernel.resync("safety timer").await {
                        Ok(false) => continue,
                        Ok(true) => {
                            tracing::info!("the safety re-read found the kernel other than the agent's view of it; reconciling");
                            self.machine.handle(Instant::now(), Input::EventsLost)
                        }
                        Err(e) => {
                            tracing::warn!("safety re-read of the kernel: {e}");
                            continue;
                        }
                    }
                }
                Some(result) = self.results.recv() => {
                    self.metrics.metadata_read(result.is_ok());
                    if let Ok(instance) = &result {
                        self.metrics.listed_not_read(instance.unread.len());
                    }
                    self.textfile.changed();
                    self.machine.handle(Instant::now(), Input::Metadata(result))
                }
                _ = sleep_until(metrics_due.unwrap_or(wake).into()), if metrics_due.is_some() => Vec::new(),
                _ = sleep_until(wake.into()) => self.machine.handle(Instant::now(), Input::Timer),
                _ = usr1.recv() => self.machine.handle(Instant::now(), Input::Refresh),
                _ = hup.recv() => {
                    let reload = self.reload();
                    self.machine.handle(Instant::now(), Input::Reloaded(reload))
                }
                _ = term.recv() => return self.stop("SIGTERM").await,
                _ = int.recv() => return self.stop("SIGINT").await,
            };
            self.perform(commands).await;
            let reads = self.kernel.full_reads();
            if reads != trimmed_after {
                trimmed_after = reads;
                release_free_memory();
            }
            let metrics = &self.metrics;
            self.textfile.flush(Instant::now(), || metrics.render());
        }
    }

    async fn stop(&mut self, why: &'static str) -> Result<(), Error> {
        let commands = self.machine.handle(Instant::now(), Input::Stop(why));
        self.perform(commands).await;
        Ok(())
    }

    /// Carries out the machine's commands in order; a reconcile's outcome
    /// goes back to the machine, and what it answers is carried out too.
    async fn perform(&mut self, commands: Vec<Command>) {
        let mut queue = VecDeque::from(commands);
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Fetch {
                    clear,
                    forget,
                    depth,
                } => {
                    // The kernel view is up to date with every event seen so
                    // far, so a link that just appeared is among these.
                    let wanted = match self.kernel.links().await {
                        Ok(links) => Some(
                            links
                                .iter()
                                .filter_map(|l| l.mac)
                                .chain(self.config.named_macs())
                                .collect(),
                        ),
                        Err(e) => {
                            tracing::warn!("{e}; reading every ENI metadata lists");
                            None
                        }
                    };
                    let req = FetchRequest {
                        wanted,
                        depth,
                        client: self.next_client.take(),
                        static_max_age: Duration::from_secs(
                            self.config.metadata.static_refresh_secs.max(1),
                        ),
                        clear,
                        forget,
                    };
                    if self.requests.send(req).is_err() {
                        // The task only ends when this side is dropped;
                        // should it have died anyway, the last good state
                        // stays in place.
                        tracing::error!("metadata reader is gone; keeping the last known state");
                    }
                }
                Command::Reconcile => {
                    if let Some(why) = crate::coexist::standing_by(&self.config) {
                        self.metrics.standing_by();
                        self.textfile.changed();
                        queue.extend(self.machine.handle(Instant::now(), Input::StandingBy(why)));
                        continue;
                    }
                    let Some(instance) = self.machine.instance() else {
                        continue;
                    };
                    let t0 = Instant::now();
                    let sent = self.kernel.messages_sent();
                    let result = crate::reconcile::reconcile(
                        &self.kernel,
                        instance,
                        &self.config,
                        &mut self.ns.records,
                    )
                    .await;
                    let took = t0.elapsed();
                    tracing::debug!("reconcile done in {took:?}");
                    if let Ok(o) = &result {
                        self.kernel.planned(&o.plan.routes);
                        // Every reconcile, also one that changes nothing:
                        // what it costs is what `eniroute-lab bench` reads.
                        tracing::debug!(
                            "reconcile: {} changes, {} writes, {} netlink messages in {took:?}",
                            o.applied.ops.len(),
                            o.applied.writes,
                            self.kernel.messages_sent() - sent
                        );
                    }
                    let input = Input::Reconciled {
                        result: result.as_ref(),
                        took,
                    };
                    queue.extend(self.machine.handle(Instant::now(), input));
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    self.metrics
                        .reconciled(now, wall, result.as_ref(), self.machine.waiting());
                    self.textfile.changed();
                }
                Command::Notify(state) => self.notifier.send(&state),
                Command::Log(level, message, fields) => {
                    crate::logging::event(level, &message, &fields)
                }
            }
        }
    }

    /// SIGHUP: a bad file is reported and the running configuration kept.
    fn reload(&mut self) -> Reload {
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
                return Reload::default();
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
        let mut changed = Reload::default();
        if new.metadata != self.config.metadata {
            match agent::metadata_client(&new) {
                Ok(c) => {
                    let c = c.with_counts(self.metrics.requests());
                    changed.endpoint = Some(c.endpoint_in_use());
                    self.next_client = Some(c);
                }
                Err(e) => {
                    tracing::error!("reload: {e}; keeping the running configuration");
                    return changed;
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
            self.textfile.set_path(new.metrics.textfile.clone());
            self.config = new;
            changed.poll = Some(poll_interval(&self.config));
        }
        changed
    }
}

/// Hands the heap's free memory back to the kernel. A full read of the
/// kernel (at start, after an overrun, on the safety timer) holds every
/// link, address, rule and route of concern at once, and reconciling from
/// it allocates plans and diffs besides; glibc keeps what is freed for
/// reuse, so without this an idle daemon would stay at the size of its
/// largest read for good.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages of
    // the allocator's own heaps to the kernel.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

fn open_events<K: Kernel>(kernel: &K) -> Result<K::Events, Error> {
    kernel.events().map_err(Error::Events)
}
