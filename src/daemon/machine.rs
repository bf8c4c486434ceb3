//! The daemon's decisions, apart from its I/O: what to read, when to
//! reconcile, how long to wait before trying again, when to tell systemd it
//! is ready. [`Machine::handle`] takes one input and the time it happened
//! and returns the commands to carry out; [`Machine::next_wake`] says when
//! the next timer is due. Nothing here reads a clock, a socket or a file,
//! so every schedule can be tested by passing the time in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::Level;

use crate::backoff::{self, Retry, NEVER};
use crate::imds::client::{EndpointInUse, ImdsError};
use crate::imds::fetch::Depth;
use crate::imds::model::{EniState, Instance};
use crate::logging::LogFields;
use crate::netlink::{Event, NetlinkError};
use crate::plan::{EniStatus, Plan};
use crate::reconcile::{Op, Outcome};
use crate::values::{Mac, Warning};

/// Events that arrive this close together cause one reconcile: one attach
/// is a link, its addresses and routes, and our own writes echo back.
pub(super) const COALESCE: Duration = Duration::from_millis(5);
/// Retry schedule for a link whose ENI metadata is not there yet (EC2 lists
/// a new MAC, and its device-number, a little after the link appears). A
/// retry reads only the MAC listing while it has nothing new (one request
/// to a link-local endpoint), and a lag of a fraction of a second is
/// common: the listing is read every `LAG_FIRST_RETRY` for `LAG_FAST_FOR`,
/// so the ENI is configured within that of being listed, and only then do
/// the retries back off, doubling to `LAG_MAX_RETRY`. 15 ms keeps one
/// waiting link at about 70 requests a second, far below what IMDS
/// throttles.
pub(super) const LAG_FIRST_RETRY: Duration = Duration::from_millis(15);
pub(super) const LAG_FAST_FOR: Duration = Duration::from_secs(3);
pub(super) const LAG_MAX_RETRY: Duration = Duration::from_secs(1);
pub(super) const LAG_GIVE_UP: Duration = Duration::from_secs(120);
/// Retry schedule for a reconcile that failed or left errors, and for
/// links udev has not finished with.
pub(super) const REPAIR_FIRST_RETRY: Duration = Duration::from_millis(50);
pub(super) const REPAIR_MAX_RETRY: Duration = Duration::from_secs(5);
/// First retry after a failed metadata read; it doubles up to the normal
/// poll interval, never beyond: an outage must not make the agent slower to
/// notice that metadata is back than it is to notice a change.
pub(super) const FAILURE_FIRST_RETRY: Duration = Duration::from_millis(250);
/// Boot is never held up longer than this waiting for the first reconcile
/// (systemd's own start timeout is usually 90 s; 30 s is the promise).
pub(super) const READY_DEADLINE: Duration = Duration::from_secs(25);

/// Something that happened.
pub(super) enum Input<'a> {
    /// A kernel notification.
    Event(&'a Event),
    /// The event socket broke and was replaced: changes may have gone unseen.
    EventsLost,
    /// A metadata read finished.
    Metadata(Result<Instance, ImdsError>),
    /// A reconcile finished, after `took`.
    Reconciled {
        result: Result<&'a Outcome, &'a NetlinkError>,
        took: Duration,
    },
    /// A reconcile was due, but the agent must change nothing for now, for
    /// this reason (amazon-ec2-net-utils is installed; see
    /// [`crate::coexist::standing_by`]).
    StandingBy(String),
    /// The time [`Machine::next_wake`] named has come.
    Timer,
    /// SIGUSR1: read metadata now, nothing cached.
    Refresh,
    /// SIGHUP was handled: the configuration was read again.
    Reloaded(Reload),
    /// SIGTERM or SIGINT.
    Stop(&'static str),
}

/// What a reload changed that the machine needs to know.
#[derive(Debug, Default)]
pub(super) struct Reload {
    /// The new poll interval, when the configuration changed.
    pub(super) poll: Option<Duration>,
    /// The new metadata endpoint, when the client was replaced.
    pub(super) endpoint: Option<EndpointInUse>,
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    /// Read metadata: forget every cached key first (`clear`), or those of
    /// these MACs; only what is new, or the volatile keys of every ENI too.
    Fetch {
        clear: bool,
        forget: Vec<Mac>,
        depth: Depth,
    },
    /// Reconcile the kernel with [`Machine::instance`].
    Reconcile,
    /// Tell systemd (sd_notify).
    Notify(String),
    /// Log a line, with the ENI it is about as journal fields.
    Log(Level, String, LogFields),
}

pub(super) struct Machine {
    /// How often the volatile metadata is read.
    poll: Duration,
    /// The metadata endpoint in use, as the reader task's client sees it:
    /// logged when it changes, and named when metadata never came.
    endpoint: EndpointInUse,
    /// The endpoint last logged as answering, so a change is logged once.
    logged_endpoint: Option<String>,
    /// A number in [0, 1) for jitter.
    unit: fn() -> f64,
    /// The last metadata read that succeeded; `None` until one did.
    instance: Option<Instance>,

    /// A read wanted, and how deep.
    want_fetch: Option<Depth>,
    clear_cache: bool,
    forget: Vec<Mac>,
    /// When the running metadata read started, and how deep it reads.
    in_flight: Option<(Instant, Depth)>,
    next_poll: Instant,
    failures: u32,

    /// Re-read the kernel and reconcile.
    dirty: bool,
    /// The end of the burst of events being gathered.
    burst_until: Option<Instant>,
    /// Links waiting for their ENI's metadata: when to look again, and why
    /// (logged when it changes).
    lagging: BTreeMap<Mac, (Retry, String)>,
    /// MACs of the links that metadata did not list at the first
    /// reconcile. Metadata lists every attached ENI; only a hot-plugged one
    /// can be missing for a while, so these are no ENIs (a bridge, a
    /// container's veth) and never count as waiting in `STATUS=`.
    not_enis: Option<BTreeSet<Mac>>,
    repair: Option<Retry>,
    last_errors: Vec<String>,
    last_warnings: Vec<Warning>,
    last_status: String,
    /// Links waiting for metadata after the last reconcile, as `STATUS=`
    /// counts them.
    waiting: usize,

    started: Instant,
    ready: bool,
    /// How often to tell systemd's watchdog the agent is alive, and when
    /// next.
    watchdog: Option<(Duration, Instant)>,
    /// Why the agent changes nothing for now, while it does.
    standing_by: Option<String>,
}

impl Machine {
    /// A daemon that started at `now` and wants metadata at once.
    pub(super) fn new(
        now: Instant,
        endpoint: EndpointInUse,
        poll: Duration,
        unit: fn() -> f64,
    ) -> Machine {
        Machine {
            poll,
            endpoint,
            logged_endpoint: None,
            unit,
            instance: None,
            want_fetch: Some(Depth::Volatile),
            clear_cache: false,
            forget: Vec::new(),
            in_flight: None,
            next_poll: now,
            failures: 0,
            dirty: true,
            burst_until: None,
            lagging: BTreeMap::new(),
            not_enis: None,
            repair: None,
            last_errors: Vec::new(),
            last_warnings: Vec::new(),
            last_status: String::new(),
            waiting: 0,
            started: now,
            ready: false,
            watchdog: None,
            standing_by: None,
        }
    }

    /// Sends WATCHDOG=1 at start and then every `every` (when systemd's
    /// `WatchdogSec=` is set).
    pub(super) fn with_watchdog(mut self, every: Option<Duration>) -> Machine {
        self.watchdog = every.map(|e| (e, self.started));
        self
    }

    /// The metadata endpoint, as the log names it.
    pub(super) fn endpoint(&self) -> &EndpointInUse {
        &self.endpoint
    }

    /// The metadata the next reconcile is made from.
    pub(super) fn instance(&self) -> Option<&Instance> {
        self.instance.as_ref()
    }

    /// Links waiting for metadata after the last reconcile.
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// The commands at start.
    pub(super) fn start(&mut self, now: Instant) -> Vec<Command> {
        let mut out = Vec::new();
        self.drive(now, &mut out);
        out
    }

    pub(super) fn handle(&mut self, now: Instant, input: Input<'_>) -> Vec<Command> {
        let mut out = Vec::new();
        match input {
            Input::Event(ev) => {
                self.note_event(ev, &mut out);
                self.dirty = true;
                self.burst_until.get_or_insert(now + COALESCE);
            }
            Input::EventsLost => {
                self.want(Depth::Volatile);
                self.dirty = true;
            }
            Input::Metadata(result) => self.metadata_read(now, result, &mut out),
            Input::Reconciled { result, took } => {
                if self.standing_by.take().is_some() {
                    log(
                        &mut out,
                        Level::INFO,
                        "amazon-ec2-net-utils is gone: taking over its tables and rules",
                    );
                }
                self.reconciled(now, result, took, &mut out)
            }
            Input::StandingBy(why) => self.stand_by(now, why, &mut out),
            Input::Timer => self.timers_fired(now, &mut out),
            Input::Refresh => {
                log(&mut out, Level::INFO, "SIGUSR1: reading metadata again now");
                self.clear_cache = true;
                self.want(Depth::Volatile);
            }
            Input::Reloaded(r) => {
                if let Some(e) = r.endpoint {
                    self.endpoint = e;
                    self.logged_endpoint = None;
                }
                if let Some(p) = r.poll {
                    self.poll = p;
                    self.next_poll = self.next_poll.min(now + p);
                }
                self.want(Depth::Volatile);
                self.dirty = true;
            }
            Input::Stop(why) => {
                log(
                    &mut out,
                    Level::INFO,
                    format!("{why}: stopping; routing stays in place"),
                );
                out.push(Command::Notify("STOPPING=1".into()));
                return out;
            }
        }
        self.drive(now, &mut out);
        out
    }

    /// The earliest timer: the end of a burst, poll, lag retry, repair
    /// retry, ready deadline, watchdog.
    pub(super) fn next_wake(&self) -> Instant {
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
        if let Some(b) = self.burst_until {
            wake = wake.min(b);
        }
        if let Some((_, next)) = self.watchdog {
            wake = wake.min(next);
        }
        wake
    }

    /// What follows from the state now: a metadata read if one is wanted
    /// and none is running (a second one would only race the first), a
    /// reconcile if something changed, and readiness once the deadline has
    /// passed. Nothing while a burst of events is still arriving.
    fn drive(&mut self, now: Instant, out: &mut Vec<Command>) {
        // A read does not wait for a burst to end: what metadata says does
        // not depend on the kernel, and a hot-plugged link's first event
        // is the moment to ask.
        if self.in_flight.is_none() {
            if let Some(depth) = self.want_fetch.take() {
                self.in_flight = Some((now, depth));
                if depth == Depth::Volatile {
                    // The next poll is scheduled when this read finishes.
                    self.next_poll = now + NEVER;
                }
                out.push(Command::Fetch {
                    clear: std::mem::take(&mut self.clear_cache),
                    forget: std::mem::take(&mut self.forget),
                    depth,
                });
            }
        }
        match self.burst_until {
            Some(until) if now < until => return,
            _ => self.burst_until = None,
        }
        if self.dirty {
            self.dirty = false;
            if self.instance.is_some() {
                // Readiness is decided from its outcome.
                out.push(Command::Reconcile);
                return;
            }
        }
        self.check_ready_deadline(now, out);
    }

    /// Records what an event means for the next round.
    fn note_event(&mut self, ev: &Event, out: &mut Vec<Command>) {
        match ev {
            Event::Overrun => {
                log(
                    out,
                    Level::WARN,
                    "netlink events overran the socket buffer; re-reading everything",
                );
                // A link may have appeared among the lost events.
                self.want(Depth::Volatile);
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
                    // ENI shows up in the kernel first. Only what is new
                    // is read: the others were read at the last poll.
                    self.want(Depth::New);
                } else if *added {
                    // Known from a read made before the link appeared: act
                    // on it now, and read again in case this is a new
                    // attachment with another device number.
                    self.forget.push(*mac);
                    self.want(Depth::New);
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
        self.want(Depth::New);
    }

    /// Asks for a read at least `depth` deep.
    fn want(&mut self, depth: Depth) {
        self.want_fetch = self.want_fetch.max(Some(depth));
    }

    /// A metadata read finished. On failure the last good instance stays in
    /// force: an outage must never look like "no ENIs".
    fn metadata_read(
        &mut self,
        now: Instant,
        result: Result<Instance, ImdsError>,
        out: &mut Vec<Command>,
    ) {
        let depth = match self.in_flight.take() {
            Some((t, depth)) => {
                let mut line = format!("metadata read ({depth:?}) in {:?}", now.duration_since(t));
                if let Ok(i) = &result {
                    if !i.unread.is_empty() {
                        line += &format!(
                            "; {} listed ENIs have no link here and were not read",
                            i.unread.len()
                        );
                    }
                }
                log(out, Level::DEBUG, line);
                depth
            }
            None => Depth::Volatile,
        };
        match result {
            Ok(mut instance) => {
                instance.confirm_bare(self.instance.as_ref());
                if self.failures > 0 {
                    log(
                        out,
                        Level::INFO,
                        format!(
                            "metadata readable again after {} failed reads",
                            self.failures
                        ),
                    );
                }
                self.failures = 0;
                // A read of what is new does not stand in for the poll of
                // every ENI's addresses.
                if depth == Depth::Volatile {
                    self.next_poll = now + self.poll;
                }
                // Which endpoint answered is known once one did (and may
                // change when the first stops answering): said once each.
                let current = self.endpoint.current().to_string();
                if self.logged_endpoint.as_deref() != Some(current.as_str()) {
                    log(
                        out,
                        Level::INFO,
                        format!("metadata endpoint: {}", self.endpoint),
                    );
                    self.logged_endpoint = Some(current);
                }
                // Unchanged metadata and an unchanged kernel (any change
                // there is an event) plan the same: nothing to do.
                if self.instance.as_ref() != Some(&instance) {
                    log(out, Level::DEBUG, "metadata changed");
                    self.instance = Some(instance);
                    self.dirty = true;
                }
            }
            Err(e) => {
                self.failures += 1;
                let step = backoff::doubling(FAILURE_FIRST_RETRY, self.failures, self.poll);
                let retry = backoff::spread(step, 0.8, 1.2, (self.unit)());
                self.next_poll = now + retry;
                // The first failure is worth a warning; a long outage
                // repeats it at most once a minute or so.
                if self.failures == 1 || self.failures.is_power_of_two() {
                    log(
                        out,
                        Level::WARN,
                        format!(
                            "{}; keeping the last known state ({} failed reads in a row), retrying in {retry:?}",
                            crate::imds::hint::explain(&e),
                            self.failures
                        ),
                    );
                } else {
                    log(out, Level::DEBUG, format!("{e}; retrying in {retry:?}"));
                }
            }
        }
    }

    fn timers_fired(&mut self, now: Instant, out: &mut Vec<Command>) {
        if let Some((every, next)) = &mut self.watchdog {
            if now >= *next {
                out.push(Command::Notify("WATCHDOG=1".into()));
                *next = now + *every;
            }
        }
        if now >= self.next_poll {
            self.want(Depth::Volatile);
            self.next_poll = now + NEVER;
        }
        if self.failures == 0 {
            let mut due = false;
            for (lag, _) in self.lagging.values_mut().filter(|(l, _)| now >= l.next) {
                due = true;
                if now.duration_since(lag.since()) < LAG_FAST_FOR {
                    lag.next = now + LAG_FIRST_RETRY;
                } else {
                    lag.advance(now, LAG_MAX_RETRY, LAG_GIVE_UP);
                }
            }
            if due {
                self.want(Depth::New);
            }
        }
        if let Some(r) = &mut self.repair {
            if now >= r.next {
                self.dirty = true;
                r.advance(now, REPAIR_MAX_RETRY, NEVER);
            }
        }
    }

    fn reconciled(
        &mut self,
        now: Instant,
        result: Result<&Outcome, &NetlinkError>,
        took: Duration,
        out: &mut Vec<Command>,
    ) {
        let o = match result {
            Ok(o) => o,
            Err(e) => {
                log(out, Level::WARN, format!("reconcile: {e}; retrying"));
                self.schedule_repair(now, true);
                return;
            }
        };
        for op in &o.applied.ops {
            log_eni(out, Level::INFO, op.to_string(), op_fields(&o.plan, op));
        }
        // The same failure on every retry is logged once.
        if o.applied.errors != self.last_errors {
            for e in &o.applied.errors {
                log_eni(out, Level::ERROR, e.clone(), error_fields(&o.plan, e));
            }
            self.last_errors = o.applied.errors.clone();
        }
        // Warnings (metadata, overlaps) and foreign rules that shadow ours
        // are logged when they change, not on every reconcile.
        let warnings: Vec<Warning> = o
            .plan
            .warnings
            .iter()
            .chain(&o.conflicts)
            .cloned()
            .collect();
        if warnings != self.last_warnings {
            for w in &warnings {
                let (dev, table) = w.subject();
                log_eni(
                    out,
                    Level::WARN,
                    w.to_string(),
                    eni_fields(&o.plan, dev, table),
                );
            }
            self.last_warnings = warnings;
        }
        if !o.applied.ops.is_empty() {
            log(
                out,
                Level::INFO,
                format!(
                    "reconciled: {} changes, {} writes in {took:?}",
                    o.applied.ops.len(),
                    o.applied.writes
                ),
            );
        }
        self.track_lag(now, o, out);
        self.schedule_repair(
            now,
            !o.applied.errors.is_empty() || !o.udev_pending.is_empty(),
        );

        let managed = o
            .plan
            .enis
            .iter()
            .filter(|e| e.status == EniStatus::Managed)
            .count();
        let not_enis = self
            .not_enis
            .get_or_insert_with(|| o.unknown_macs.iter().copied().collect());
        // Waiting: ENIs metadata lists but not whole yet, and links that
        // appeared since start and may be a hot-plugged ENI metadata does
        // not list yet, until the lag retries give up on them.
        let waiting = self
            .lagging
            .iter()
            .filter(|(mac, (retry, _))| {
                !o.unknown_macs.contains(mac)
                    || (!not_enis.contains(mac) && now.duration_since(retry.since()) <= LAG_GIVE_UP)
            })
            .count();
        self.waiting = waiting;
        let mut status = format!("{managed} ENIs managed");
        if waiting > 0 {
            status += &format!(", {waiting} waiting for metadata");
        }
        let held = o.plan.held().count();
        if held > 0 {
            status += &format!(", {held} held on metadata not applied");
        }
        if !o.applied.errors.is_empty() {
            status += &format!(", {} changes failing", o.applied.errors.len());
        }
        status += &format!(
            "; last reconcile: {} changes in {} ms",
            o.applied.ops.len(),
            took.as_millis()
        );
        if !self.ready && o.applied.errors.is_empty() {
            self.ready = true;
            log(out, Level::INFO, format!("ready: {status}"));
            out.push(Command::Notify(format!("READY=1\nSTATUS={status}")));
        } else if status != self.last_status {
            out.push(Command::Notify(format!("STATUS={status}")));
        }
        self.last_status = status;
    }

    /// Changes nothing, says why (once, and in `STATUS=`), and looks again
    /// on the repair schedule (up to every 5 s): removing a package sends
    /// no netlink event. Boot is not held up: the other agent routes until
    /// then.
    fn stand_by(&mut self, now: Instant, why: String, out: &mut Vec<Command>) {
        if self.standing_by.as_deref() != Some(why.as_str()) {
            log(out, Level::WARN, why.clone());
        }
        if !self.ready {
            self.ready = true;
            out.push(Command::Notify(format!("READY=1\nSTATUS={why}")));
        } else if why != self.last_status {
            out.push(Command::Notify(format!("STATUS={why}")));
        }
        self.last_status = why.clone();
        self.standing_by = Some(why);
        self.schedule_repair(now, true);
    }

    /// Keeps (or ends) the retry schedule for a reconcile that could not
    /// finish: a failed change, a failed kernel read, a link udev still holds.
    fn schedule_repair(&mut self, now: Instant, needed: bool) {
        if !needed {
            self.repair = None;
        } else if self.repair.is_none() {
            self.repair = Some(Retry::new(now, REPAIR_FIRST_RETRY));
        }
    }

    /// Keeps the fast-retry schedule for links whose ENI metadata is not
    /// usable yet: every 15 ms for 3 s, then doubling to 1 s, for up to
    /// 120 s. A link that is
    /// no ENI at all (a bridge, a container's veth) ends up polled at the
    /// normal rate after that.
    fn track_lag(&mut self, now: Instant, o: &Outcome, out: &mut Vec<Command>) {
        let mut waiting: Vec<(Mac, String)> = o
            .unknown_macs
            .iter()
            .map(|m| (*m, "not in metadata yet".to_string()))
            .collect();
        waiting.extend(o.plan.enis.iter().filter_map(|e| match &e.status {
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
                log_eni(
                    out,
                    Level::DEBUG,
                    format!("link with MAC {mac} waits for its metadata: {reason}"),
                    LogFields {
                        mac: Some(mac.to_string()),
                        ..LogFields::default()
                    },
                );
                entry.1 = reason;
            }
        }
    }

    /// Tells systemd the agent is up even though it could not finish, so
    /// boot goes on, and says what is missing.
    fn check_ready_deadline(&mut self, now: Instant, out: &mut Vec<Command>) {
        if self.ready || now.duration_since(self.started) < READY_DEADLINE {
            return;
        }
        self.ready = true;
        let missing = self.missing();
        log(
            out,
            Level::WARN,
            format!(
                "reporting ready after {READY_DEADLINE:?} without a complete reconcile: {missing}"
            ),
        );
        out.push(Command::Notify(format!(
            "READY=1\nSTATUS=started without a complete reconcile: {missing}"
        )));
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
}

fn log(out: &mut Vec<Command>, level: Level, message: impl Into<String>) {
    out.push(Command::Log(level, message.into(), LogFields::default()));
}

fn log_eni(out: &mut Vec<Command>, level: Level, message: impl Into<String>, fields: LogFields) {
    out.push(Command::Log(level, message.into(), fields));
}

/// The ENI a change or warning is about, found by its link or its table in
/// the plan, as journal fields. An ENI gone from metadata (its link still
/// there) is named by its link alone.
fn eni_fields(plan: &Plan, dev: Option<&str>, table: Option<u32>) -> LogFields {
    let eni = plan.enis.iter().find(|e| {
        (dev.is_some() && e.dev.as_deref() == dev) || (table.is_some() && e.table == table)
    });
    LogFields {
        eni_id: eni.and_then(|e| e.interface_id.clone()),
        mac: eni.map(|e| e.mac.to_string()),
        link: dev.map(str::to_string).or(eni.and_then(|e| e.dev.clone())),
        table: table.or(eni.and_then(|e| e.table)),
        operation: None,
    }
}

/// A failed change's ENI: the reconciler puts `ENI <id> (<dev>): ` in
/// front of it (the id, or the MAC where metadata has none).
fn error_fields(plan: &Plan, error: &str) -> LogFields {
    let Some(rest) = error.strip_prefix("ENI ") else {
        return LogFields::default();
    };
    let named = |id: &str| {
        rest.strip_prefix(id)
            .is_some_and(|r| r.starts_with(' ') || r.starts_with(':'))
    };
    match plan.enis.iter().find(|e| match &e.interface_id {
        Some(id) => named(id),
        None => named(&e.mac.to_string()),
    }) {
        Some(e) => eni_fields(plan, e.dev.as_deref(), e.table),
        None => LogFields::default(),
    }
}

fn op_fields(plan: &Plan, op: &Op) -> LogFields {
    let (dev, table) = op.subject();
    LogFields {
        operation: Some(op.kind().to_string()),
        ..eni_fields(plan, dev, table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imds::client::ErrorKind;
    use crate::imds::{parse, tree};

    const POLL: Duration = Duration::from_secs(5);
    const ENDPOINT: &str = "http://169.254.169.254:80";

    /// The endpoint of a client configured with [`ENDPOINT`]; the client
    /// never sends a request.
    fn endpoint() -> EndpointInUse {
        let opts = crate::imds::client::ImdsOptions {
            endpoint: ENDPOINT.into(),
            ..Default::default()
        };
        crate::imds::client::ImdsClient::new(opts)
            .unwrap()
            .endpoint_in_use()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fixture(name: &str) -> Instance {
        let path = format!(
            "{}/tests/fixtures/imds/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let tree: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        parse::instance_from(|p| tree::lookup(&tree, p)).unwrap()
    }

    /// Jitter at the middle of its range: every delay exactly as scheduled.
    fn middle() -> f64 {
        0.5
    }

    fn outage() -> ImdsError {
        ImdsError::new(ENDPOINT, "PUT", "latest/api/token", ErrorKind::Timeout)
    }

    fn outcome(errors: &[&str], unknown: &[Mac], udev: &[u32]) -> Outcome {
        let mut o = Outcome::default();
        o.applied.errors = errors.iter().map(|e| e.to_string()).collect();
        o.unknown_macs = unknown.to_vec();
        o.udev_pending = udev.to_vec();
        o
    }

    fn reconciled(m: &mut Machine, now: Instant, o: &Outcome) -> Vec<Command> {
        m.handle(
            now,
            Input::Reconciled {
                result: Ok(o),
                took: ms(2),
            },
        )
    }

    fn fetches(c: &[Command]) -> Vec<&Command> {
        c.iter()
            .filter(|c| matches!(c, Command::Fetch { .. }))
            .collect()
    }

    fn reconciles(c: &[Command]) -> usize {
        c.iter().filter(|c| **c == Command::Reconcile).count()
    }

    fn notes(c: &[Command]) -> Vec<&str> {
        c.iter()
            .filter_map(|c| match c {
                Command::Notify(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn logs(c: &[Command], level: Level) -> Vec<&str> {
        c.iter()
            .filter_map(|c| match c {
                Command::Log(l, s, _) if *l == level => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn fields(c: &[Command]) -> Vec<(&str, &LogFields)> {
        c.iter()
            .filter_map(|c| match c {
                Command::Log(_, s, f) => Some((s.as_str(), f)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn changes_warnings_and_failures_name_their_eni_for_the_journal() {
        let t0 = Instant::now();
        let mut m = Machine::new(t0, endpoint(), POLL, middle);
        let instance = fixture("management-network");
        let links = [
            crate::values::Link {
                index: 2,
                name: "eth0".into(),
                mac: Some("0a:00:00:00:00:01".parse().unwrap()),
                up: true,
                group: 0,
                mtu: 1500,
                addresses: vec![],
            },
            crate::values::Link {
                index: 3,
                name: "eth1".into(),
                mac: Some("0a:00:00:00:00:02".parse().unwrap()),
                up: true,
                group: 0,
                mtu: 1500,
                addresses: vec![],
            },
        ];
        let mut o = outcome(&[], &[], &[]);
        o.plan = crate::plan::plan(&instance, &links, &crate::config::Config::default());
        let eth1 = o
            .plan
            .enis
            .iter()
            .find(|e| e.dev.as_deref() == Some("eth1"))
            .unwrap()
            .clone();
        let rule = o
            .plan
            .rules
            .iter()
            .find(|r| Some(r.table) == eth1.table)
            .unwrap()
            .clone();
        let address = o
            .plan
            .addresses
            .iter()
            .find(|a| a.dev == "eth1")
            .unwrap()
            .clone();
        o.applied.ops = vec![Op::AddRule(rule.clone()), Op::AddAddress(address.clone())];
        let id = eth1.interface_id.clone().unwrap();
        o.applied.errors = vec![
            format!("ENI {id} (eth1): RTM_NEWROUTE for route …: Operation not permitted"),
            "RTM_NEWRULE for rule …: Operation not permitted".into(),
        ];
        let c = reconciled(&mut m, t0, &o);
        let f = fields(&c);
        let want = LogFields {
            eni_id: Some(id.clone()),
            mac: Some(eth1.mac.to_string()),
            link: Some("eth1".into()),
            table: eth1.table,
            operation: None,
        };
        let of = |line: &str| {
            f.iter()
                .find(|(s, _)| *s == line)
                .map(|(_, f)| (*f).clone())
                .unwrap_or_else(|| panic!("no log {line}: {f:?}"))
        };
        assert_eq!(
            of(&Op::AddRule(rule).to_string()),
            LogFields {
                operation: Some("add-rule".into()),
                ..want.clone()
            }
        );
        assert_eq!(
            of(&Op::AddAddress(address).to_string()),
            LogFields {
                operation: Some("add-address".into()),
                ..want.clone()
            }
        );
        assert_eq!(of(&o.applied.errors[0]), want);
        assert_eq!(of(&o.applied.errors[1]), LogFields::default());
        assert_eq!(
            of("reconciled: 2 changes, 0 writes in 2ms"),
            LogFields::default()
        );
    }

    fn link(index: u32, mac: &str, added: bool, removed: bool) -> Event {
        Event::Link {
            index,
            added,
            removed,
            name: Some(format!("eth{index}")),
            mac: Some(mac.parse().unwrap()),
        }
    }

    /// A daemon started at `t0` that read metadata and reconciled cleanly.
    fn running(t0: Instant) -> Machine {
        let mut m = Machine::new(t0, endpoint(), POLL, middle);
        assert_eq!(fetches(&m.start(t0)).len(), 1);
        let c = m.handle(t0, Input::Metadata(Ok(fixture("management-network"))));
        assert_eq!(reconciles(&c), 1);
        reconciled(&mut m, t0, &outcome(&[], &[], &[]));
        m
    }

    #[test]
    fn standing_by_is_ready_says_why_and_looks_again_until_it_may_reconcile() {
        let t0 = Instant::now();
        let mut m = Machine::new(t0, endpoint(), POLL, middle);
        m.start(t0);
        let c = m.handle(t0, Input::Metadata(Ok(fixture("management-network"))));
        assert_eq!(reconciles(&c), 1);
        let why = "standing by: amazon-ec2-net-utils is installed".to_string();
        let c = m.handle(t0, Input::StandingBy(why.clone()));
        assert_eq!(notes(&c), [format!("READY=1\nSTATUS={why}").as_str()]);
        assert_eq!(logs(&c, Level::WARN), [why.as_str()]);
        // Looked at again soon, and said only once.
        let wake = m.next_wake();
        assert!(wake <= t0 + REPAIR_FIRST_RETRY * 2, "{:?}", wake - t0);
        let c = m.handle(wake, Input::Timer);
        assert_eq!(reconciles(&c), 1);
        let c = m.handle(wake, Input::StandingBy(why.clone()));
        assert!(
            notes(&c).is_empty() && logs(&c, Level::WARN).is_empty(),
            "{c:?}"
        );
        // Gone: the next reconcile says so and the schedule ends with it.
        let wake = m.next_wake();
        let c = m.handle(wake, Input::Timer);
        assert_eq!(reconciles(&c), 1);
        let c = reconciled(&mut m, wake, &outcome(&[], &[], &[]));
        assert!(
            logs(&c, Level::INFO)
                .iter()
                .any(|l| l.contains("amazon-ec2-net-utils is gone")),
            "{c:?}"
        );
        assert!(m.repair.is_none());
    }

    #[test]
    fn status_counts_as_waiting_only_links_that_are_or_may_be_enis() {
        let t0 = Instant::now();
        let mut m = Machine::new(t0, endpoint(), POLL, middle);
        m.start(t0);
        m.handle(t0, Input::Metadata(Ok(fixture("management-network"))));
        // A container's veth, there from the start and never in metadata.
        let veth: Mac = "02:42:ac:11:00:02".parse().unwrap();
        let c = reconciled(&mut m, t0 + ms(5), &outcome(&[], &[veth], &[]));
        assert_eq!(
            notes(&c),
            ["READY=1\nSTATUS=0 ENIs managed; last reconcile: 0 changes in 2 ms"]
        );
        // A link that appears later and metadata does not list yet: a
        // hot-plugged ENI, as far as anyone can tell.
        let eni: Mac = "0a:e0:00:01:00:09".parse().unwrap();
        let c = reconciled(&mut m, t0 + ms(50), &outcome(&[], &[veth, eni], &[]));
        assert_eq!(
            notes(&c),
            ["STATUS=0 ENIs managed, 1 waiting for metadata; last reconcile: 0 changes in 2 ms"]
        );
        // Still not listed when the lag retries give up: no ENI after all.
        let late = t0 + ms(50) + LAG_GIVE_UP + ms(1);
        let c = reconciled(&mut m, late, &outcome(&[], &[veth, eni], &[]));
        assert_eq!(
            notes(&c),
            ["STATUS=0 ENIs managed; last reconcile: 0 changes in 2 ms"]
        );
    }

    #[test]
    fn status_counts_the_enis_held_on_metadata_not_applied() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let mut o = outcome(&[], &[], &[]);
        o.plan.enis.push(crate::plan::EniSummary {
            mac: "0a:00:00:00:00:02".parse().unwrap(),
            interface_id: None,
            key: None,
            table: None,
            dev: Some("eth1".into()),
            index: Some(3),
            status: EniStatus::Invalid("ENI x: key subnet-ipv4-cidr-block".into()),
            addresses: vec![],
        });
        let c = reconciled(&mut m, t0 + ms(10), &o);
        assert_eq!(
            notes(&c),
            ["STATUS=0 ENIs managed, 1 held on metadata not applied; last reconcile: 0 changes in 2 ms"]
        );
    }

    #[test]
    fn starts_with_a_read_then_reconciles_and_is_ready_after_the_first_clean_reconcile() {
        let t0 = Instant::now();
        let mut m = Machine::new(t0, endpoint(), POLL, middle);
        let c = m.start(t0);
        assert_eq!(
            c,
            [Command::Fetch {
                clear: false,
                forget: vec![],
                depth: Depth::Volatile,
            }]
        );
        let c = m.handle(
            t0 + ms(30),
            Input::Metadata(Ok(fixture("management-network"))),
        );
        assert_eq!(reconciles(&c), 1);
        // A reconcile with a failed change is not complete: not ready yet.
        let c = reconciled(
            &mut m,
            t0 + ms(32),
            &outcome(&["RTM_NEWRULE failed"], &[], &[]),
        );
        assert!(notes(&c).iter().all(|n| !n.contains("READY=1")), "{c:?}");
        assert_eq!(logs(&c, Level::ERROR), ["RTM_NEWRULE failed"]);
        let c = reconciled(&mut m, t0 + ms(90), &outcome(&[], &[], &[]));
        assert_eq!(
            notes(&c),
            ["READY=1\nSTATUS=0 ENIs managed; last reconcile: 0 changes in 2 ms"]
        );
        // The next poll is the normal interval after the read.
        assert_eq!(m.next_wake(), t0 + ms(30) + POLL);
    }

    #[test]
    fn a_burst_of_events_causes_one_reconcile_and_one_read_when_it_ends() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let t = t0 + ms(1000);
        let mut c = Vec::new();
        // An attach: the link of an ENI metadata does not list yet, then
        // its addresses and routes, and the echoes of our own writes.
        c.extend(m.handle(t, Input::Event(&link(5, "0a:00:00:00:00:09", true, false))));
        for i in 0..200u32 {
            let at = t + Duration::from_micros(20 * u64::from(i));
            let ev = if i % 2 == 0 {
                Event::Address
            } else {
                Event::Route {
                    protocol: 233,
                    table: 10002,
                }
            };
            c.extend(m.handle(at, Input::Event(&ev)));
        }
        // Metadata is asked at once (it does not depend on the kernel);
        // the reconcile waits for the burst to end.
        assert_eq!(fetches(&c).len(), 1, "{c:?}");
        assert_eq!(reconciles(&c), 0, "{c:?}");
        assert_eq!(m.next_wake(), t + COALESCE);
        let c = m.handle(t + COALESCE, Input::Timer);
        assert!(fetches(&c).is_empty(), "{c:?}");
        assert_eq!(reconciles(&c), 1, "{c:?}");
        // A later event opens a new burst of its own.
        let later = t + ms(20);
        assert_eq!(
            reconciles(&m.handle(later, Input::Event(&Event::Address))),
            0
        );
        assert_eq!(m.next_wake(), later + COALESCE);
        assert_eq!(reconciles(&m.handle(later + COALESCE, Input::Timer)), 1);
    }

    #[test]
    fn a_waiting_link_polls_the_listing_every_15ms_for_3s_then_backs_off_and_gives_up_after_120s() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let inst = fixture("management-network");
        let mac: Mac = "0a:00:00:00:00:09".parse().unwrap();
        let c = reconciled(&mut m, t0, &outcome(&[], &[mac], &[]));
        assert_eq!(
            logs(&c, Level::DEBUG),
            [format!("link with MAC {mac} waits for its metadata: not in metadata yet").as_str()]
        );
        let (mut new, mut polls) = (Vec::new(), Vec::new());
        let mut now = t0;
        while now < t0 + Duration::from_secs(150) {
            now = m.next_wake();
            let c = m.handle(now, Input::Timer);
            for f in fetches(&c) {
                match f {
                    Command::Fetch {
                        depth: Depth::New, ..
                    } => new.push(now - t0),
                    _ => polls.push(now - t0),
                }
                // Metadata still without the MAC: nothing changed, nothing
                // to reconcile.
                let c = m.handle(now, Input::Metadata(Ok(inst.clone())));
                assert_eq!(reconciles(&c), 0);
            }
        }
        let gaps = |reads: &[Duration], from: u64, to: u64| -> Vec<u128> {
            reads
                .windows(2)
                .filter(|w| w[0] >= Duration::from_secs(from) && w[1] <= Duration::from_secs(to))
                .map(|w| (w[1] - w[0]).as_millis())
                .collect()
        };
        // The listing every 15 ms for the first 3 s...
        assert_eq!(new[0], ms(15));
        let fast = gaps(&new, 0, 3);
        assert!(fast.iter().all(|g| *g == 15), "{fast:?}");
        assert_eq!(fast.len(), 199);
        // ... then doubling to once a second, until 120 s.
        let slow = gaps(&new, 3, 150);
        assert_eq!(slow[..8], [30, 60, 120, 240, 480, 960, 1000, 1000]);
        assert!(new.iter().all(|r| *r <= Duration::from_secs(121)));
        let waited = new.iter().filter(|r| **r > Duration::from_secs(3)).count();
        assert!((115..=125).contains(&waited), "{waited} reads");
        // The poll of every ENI's addresses goes on as usual meanwhile.
        let poll = gaps(&polls, 0, 150);
        assert!(
            polls[0] == POLL && poll.iter().all(|g| *g == 5000),
            "{polls:?}"
        );
    }

    #[test]
    fn failed_reads_back_off_from_250ms_doubling_but_never_beyond_the_poll_interval() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let mut now = t0 + POLL;
        assert_eq!(m.next_wake(), now);
        let mut gaps = Vec::new();
        let mut warnings = 0;
        for _ in 0..12 {
            let c = m.handle(now, Input::Timer);
            assert_eq!(fetches(&c).len(), 1, "{c:?}");
            let c = m.handle(now, Input::Metadata(Err(outage())));
            warnings += logs(&c, Level::WARN).len();
            let next = m.next_wake();
            gaps.push((next - now).as_millis());
            now = next;
        }
        assert_eq!(
            gaps,
            [250, 500, 1000, 2000, 4000, 5000, 5000, 5000, 5000, 5000, 5000, 5000]
        );
        // Failures 1, 2, 4 and 8 are warned about; the rest are debug lines.
        assert_eq!(warnings, 4);
        // The last good state stays: nothing is reconciled from an outage.
        assert_eq!(m.instance(), Some(&fixture("management-network")));
        let c = m.handle(now, Input::Timer);
        let c2 = m.handle(now, Input::Metadata(Ok(fixture("management-network"))));
        assert_eq!(reconciles(&c) + reconciles(&c2), 0);
        assert_eq!(
            logs(&c2, Level::INFO),
            ["metadata readable again after 12 failed reads"]
        );
        assert_eq!(m.next_wake(), now + POLL);
    }

    #[test]
    fn jitter_spreads_a_failure_backoff_by_a_fifth_either_way() {
        let t0 = Instant::now();
        let cases: [(fn() -> f64, u128); 3] = [(|| 0.0, 200), (|| 0.5, 250), (|| 0.999, 299)];
        for (unit, want) in cases {
            let mut m = Machine::new(t0, endpoint(), POLL, unit);
            m.start(t0);
            m.handle(t0, Input::Metadata(Err(outage())));
            assert_eq!((m.next_wake() - t0).as_millis(), want);
        }
    }

    #[test]
    fn without_metadata_readiness_comes_at_25s_saying_why_and_only_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(t0, endpoint(), POLL, middle);
        m.start(t0);
        let mut ready = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(60) {
            let c = m.handle(now, Input::Metadata(Err(outage())));
            ready.extend(notes(&c).iter().map(|n| (now, n.to_string())));
            now = m.next_wake();
            let c = m.handle(now, Input::Timer);
            ready.extend(notes(&c).iter().map(|n| (now, n.to_string())));
        }
        assert_eq!(
            ready,
            [(
                t0 + READY_DEADLINE,
                format!(
                    "READY=1\nSTATUS=started without a complete reconcile: metadata not readable at {ENDPOINT} (configured)"
                )
            )]
        );
    }

    #[test]
    fn a_failing_change_is_retried_from_50ms_doubling_to_5s_until_it_goes_in() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let failing = outcome(
            &["RTM_NEWROUTE for route x: Network is unreachable"],
            &[],
            &[],
        );
        let c = reconciled(&mut m, t0, &failing);
        assert_eq!(logs(&c, Level::ERROR).len(), 1);
        let mut now = t0;
        let mut last = t0;
        let mut gaps = Vec::new();
        let mut errors_logged = 0;
        while gaps.len() < 9 {
            now = m.next_wake();
            let c = m.handle(now, Input::Timer);
            if !fetches(&c).is_empty() {
                // The regular poll, in between: metadata as it was.
                m.handle(now, Input::Metadata(Ok(fixture("management-network"))));
            }
            if reconciles(&c) == 1 {
                gaps.push((now - last).as_millis());
                last = now;
                errors_logged += logs(&reconciled(&mut m, now, &failing), Level::ERROR).len();
            }
        }
        assert_eq!(gaps, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // The same failure on every retry is logged once.
        assert_eq!(errors_logged, 0);
        // A link udev still holds keeps the retries going too; a clean
        // reconcile ends them.
        reconciled(&mut m, now, &outcome(&[], &[], &[7]));
        assert!(m.repair.is_some());
        reconciled(&mut m, now, &outcome(&[], &[], &[]));
        assert!(m.repair.is_none());
        // A reconcile that could not even read the kernel is retried too.
        let e = NetlinkError {
            call: "RTM_GETLINK",
            object: "links".into(),
            errno: None,
            message: "gone".into(),
        };
        let c = m.handle(
            now,
            Input::Reconciled {
                result: Err(&e),
                took: ms(1),
            },
        );
        assert_eq!(logs(&c, Level::WARN).len(), 1);
        assert_eq!(m.next_wake(), now + REPAIR_FIRST_RETRY);
    }

    /// Issue 11 A: one read with an empty `local-ipv4s` is not a removal;
    /// the same answer on the next read confirms it (and is a change to
    /// reconcile from); a good read in between starts over.
    #[test]
    fn an_empty_address_list_is_confirmed_only_by_the_next_read() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let good = fixture("management-network");
        let mut bare = good.clone();
        let mac = bare.enis[1].mac();
        match &mut bare.enis[1] {
            EniState::Ready(e) => e.ipv4s.clear(),
            other => panic!("{other:?}"),
        }
        m.handle(t0 + ms(10), Input::Metadata(Ok(bare.clone())));
        assert!(m.instance().unwrap().confirmed_bare.is_empty());
        m.handle(t0 + ms(20), Input::Metadata(Ok(good.clone())));
        m.handle(t0 + ms(30), Input::Metadata(Ok(bare.clone())));
        assert!(m.instance().unwrap().confirmed_bare.is_empty());
        let c = m.handle(t0 + ms(40), Input::Metadata(Ok(bare.clone())));
        assert!(m.instance().unwrap().confirmed_bare.contains(&mac));
        let c2 = m.handle(t0 + ms(40) + COALESCE, Input::Timer);
        assert_eq!(reconciles(&c) + reconciles(&c2), 1);
    }

    #[test]
    fn a_vanished_enis_link_makes_it_unready_until_its_metadata_is_read_again() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let inst = fixture("management-network");
        let mac = inst.enis[1].mac();
        let t = t0 + ms(100);
        let c = m.handle(t, Input::Event(&link(3, &mac.to_string(), false, true)));
        assert!(matches!(
            m.instance().and_then(|i| i.get(mac)),
            Some(EniState::NotReady { .. })
        ));
        // Read at once; the reconcile waits for the burst to end.
        assert_eq!(
            fetches(&c),
            [&Command::Fetch {
                clear: false,
                forget: vec![mac],
                depth: Depth::New,
            }]
        );
        let c = m.handle(t + COALESCE, Input::Timer);
        assert!(fetches(&c).is_empty(), "{c:?}");
        assert_eq!(reconciles(&c), 1);
        // The same ENI read again is a change: reconciled from it.
        let c = m.handle(t + ms(20), Input::Metadata(Ok(inst.clone())));
        assert_eq!(reconciles(&c), 1);
    }

    /// On EC2 the link of a moved ENI appears seconds after the attach
    /// returns, so `takeover`'s refresh (SIGUSR1) comes first: the read it
    /// asks for carries the ENI from the claim, before its link exists.
    /// When the link appears, the ENI is configured from what is known at
    /// once (and its metadata read again), not held back until metadata
    /// shows it.
    #[test]
    fn an_eni_known_before_its_link_appears_is_configured_at_the_links_first_event() {
        let t0 = Instant::now();
        let claimed = fixture("management-network");
        let moved = claimed.enis[1].mac();
        let lagging = Instance::new(claimed.primary_mac, claimed.enis[..1].to_vec());
        let mut m = Machine::new(t0, endpoint(), POLL, middle);
        m.start(t0);
        assert_eq!(reconciles(&m.handle(t0, Input::Metadata(Ok(lagging)))), 1);
        reconciled(&mut m, t0, &outcome(&[], &[], &[]));

        let t = t0 + ms(500);
        assert_eq!(fetches(&m.handle(t, Input::Refresh)).len(), 1);
        let c = m.handle(t + ms(5), Input::Metadata(Ok(claimed.clone())));
        assert_eq!(reconciles(&c), 1);
        reconciled(&mut m, t + ms(6), &outcome(&[], &[], &[]));

        let appears = t + ms(3000);
        let c = m.handle(
            appears,
            Input::Event(&link(7, &moved.to_string(), true, false)),
        );
        assert_eq!(
            fetches(&c),
            [&Command::Fetch {
                clear: false,
                forget: vec![moved],
                depth: Depth::New,
            }]
        );
        assert!(matches!(
            m.instance().and_then(|i| i.get(moved)),
            Some(EniState::Ready(_))
        ));
        let c = m.handle(appears + COALESCE, Input::Timer);
        assert_eq!(reconciles(&c), 1, "{c:?}");
        // The read finds metadata still lagging, the claim merged again:
        // nothing new, nothing more to do.
        let c = m.handle(appears + ms(10), Input::Metadata(Ok(claimed)));
        assert_eq!(reconciles(&c), 0, "{c:?}");
    }

    #[test]
    fn signals_refresh_reload_and_stop() {
        let t0 = Instant::now();
        let mut m = running(t0);
        let c = m.handle(t0 + ms(10), Input::Refresh);
        assert_eq!(
            fetches(&c),
            [&Command::Fetch {
                clear: true,
                forget: vec![],
                depth: Depth::Volatile,
            }]
        );
        m.handle(
            t0 + ms(20),
            Input::Metadata(Ok(fixture("management-network"))),
        );
        let c = m.handle(
            t0 + ms(30),
            Input::Reloaded(Reload {
                poll: Some(Duration::from_secs(2)),
                endpoint: None,
            }),
        );
        assert_eq!(fetches(&c).len(), 1);
        assert_eq!(reconciles(&c), 1);
        m.handle(
            t0 + ms(40),
            Input::Metadata(Ok(fixture("management-network"))),
        );
        assert_eq!(m.next_wake(), t0 + ms(40) + Duration::from_secs(2));
        let c = m.handle(t0 + ms(50), Input::Stop("SIGTERM"));
        assert_eq!(notes(&c), ["STOPPING=1"]);
        assert_eq!(
            logs(&c, Level::INFO),
            ["SIGTERM: stopping; routing stays in place"]
        );
    }

    #[test]
    fn the_watchdog_is_fed_at_start_and_then_every_interval_whatever_else_happens() {
        let t0 = Instant::now();
        let mut m = Machine::new(t0, endpoint(), POLL, middle).with_watchdog(Some(ms(1500)));
        m.start(t0);
        let mut fed = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(10) {
            now = m.next_wake();
            let mut c = m.handle(now, Input::Timer);
            if !fetches(&c).is_empty() {
                c.extend(m.handle(now, Input::Metadata(Err(outage()))));
            }
            if notes(&c).contains(&"WATCHDOG=1") {
                fed.push((now - t0).as_millis());
            }
        }
        assert_eq!(fed, [0, 1500, 3000, 4500, 6000, 7500, 9000, 10500]);
        // Without WatchdogSec= nothing is sent.
        let mut m = Machine::new(t0, endpoint(), POLL, middle).with_watchdog(None);
        m.start(t0);
        let c = m.handle(t0, Input::Timer);
        assert!(!notes(&c).contains(&"WATCHDOG=1"));
    }
}
