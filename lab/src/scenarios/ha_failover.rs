//! Low-budget high availability: a service runs on a primary and a hot
//! standby instance, both with the agent. A client sends a request to the
//! service address every 10 ms. The primary fails (its agent and service
//! stop); a failover script moves the service ENI to the standby; later the
//! same for a secondary private IPv4 on another ENI.
//!
//! What is measured: the outage the client sees, and the part of it that is
//! the standby's to minimise: from the moment the ENI's link starts moving
//! to the standby (or the moved IP is in metadata) to the first answered
//! request.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::runner::{expect_route, human, like_ec2, net4, sock, INTERRUPTED};
use super::Session;
use crate::world::{self, EniPlan};
use crate::{Client, TcpServer, Vpc};

pub(super) const SERVICE_PORT: u16 = 80;
/// One request every this often.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(10);
/// A request not answered within this counts as lost. A lost SYN would be
/// retransmitted only after a second; the next request 10 ms later measures
/// the gap instead.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// The standby's part of an ENI move: link appears → first answer.
const HOST_SIDE_TARGET: Duration = Duration::from_millis(200);
/// Give up waiting for the standby to answer after this.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests watched after the first answer, to see the service stays up.
const SETTLE: Duration = Duration::from_millis(200);

/// Both instances poll metadata often and give up on a slow answer soon, as
/// docs/CONFIG.md recommends for a standby.
pub(super) const CONFIG: &str = "\
# A moved secondary IP shows up only in metadata: poll it often (a failover
# script also runs `eniroute refresh`). A moved ENI is picked up at once.
[metadata]
volatile_refresh_secs = 1
request_timeout_ms = 500
";

pub(super) fn run(s: &mut Session) -> io::Result<()> {
    let vpc = Vpc::new()?;
    let mut primary = world::instance(
        &vpc,
        1,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"])?,
            // The floating service ENI.
            EniPlan::new("eth1", 1, "10.0.2.0/24", &["10.0.2.50"])?,
            // Carries the floating secondary IP 10.0.3.100.
            EniPlan::new("eth2", 2, "10.0.3.0/24", &["10.0.3.10", "10.0.3.100"])?,
        ],
    )?;
    let mut standby = world::instance(
        &vpc,
        2,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.20"])?,
            EniPlan::new("eth2", 2, "10.0.3.0/24", &["10.0.3.20"])?,
        ],
    )?;
    like_ec2(&primary)?;
    like_ec2(&standby)?;
    let client = vpc.client("client", net4("198.51.100.10/24")?)?;
    let service_eni = primary.eni("eth1")?.primary();
    let floating_ip: Ipv4Addr = "10.0.3.100".parse().map_err(io::Error::other)?;

    s.vpc(&vpc, "VPC vpc-0lab1 (10.0.0.0/16)");
    s.instance("primary", &primary);
    s.instance("standby", &standby);
    s.client("client", &client);
    s.note(&format!(
        "service on port {SERVICE_PORT} on both instances; the client asks it every {} ms",
        PROBE_EVERY.as_millis()
    ));
    s.note(&format!(
        "floating: ENI eth1 ({service_eni}) and the secondary IP {floating_ip} of eth2"
    ));

    let any = Ipv4Addr::UNSPECIFIED;
    let mut primary_service = Some(TcpServer::start(&primary.ns, sock(any, SERVICE_PORT))?);
    let standby_service = TcpServer::start(&standby.ns, sock(any, SERVICE_PORT))?;

    let started = Instant::now();
    let primary_agent = s.start_agent("primary", &primary, Some(CONFIG))?;
    s.start_agent("standby", &standby, Some(CONFIG))?;
    let primary_done = s.wait_configured("primary", &primary, started);
    let standby_done = s.wait_configured("standby", &standby, started);
    s.routing("the primary", &primary);
    s.routing("the standby", &standby);
    s.add(primary_done);
    s.add(standby_done);
    s.proceed()?;

    // ---- 1. the service ENI moves ----------------------------------------
    let prober = Prober::start(&client, sock(service_eni, SERVICE_PORT))?;
    baseline(s, &prober, "primary", service_eni)?;
    // The primary fails: its service, then its agent.
    drop(primary_service.take());
    let failed = Instant::now();
    s.stop_agent(primary_agent);
    // The failover script: detach from the primary, attach to the standby.
    let (eni, meta) = primary.release("eth1")?;
    let link_moves = Instant::now();
    standby.adopt(&vpc, eni, meta, 1)?;
    let moved = link_moves.elapsed();
    let samples = prober.finish_after_recovery(failed)?;
    judge(
        s,
        &samples,
        Failover {
            what: "ENI move",
            service: service_eni,
            failed,
            host_side_from: link_moves,
            host_side_label: "link on the standby",
            step: format!("moving the link took {}", human(moved)),
        },
    );
    s.check(
        &format!("the standby's replies from {service_eni} leave through the moved eth1"),
        || expect_route(&standby.ns, client.addr(), Some(service_eni), "eth1"),
    );
    s.proceed()?;

    // ---- 2. the secondary IP moves ----------------------------------------
    // The primary comes back (without the ENI it lost) and serves the
    // secondary IP again, then fails once more.
    primary_service = Some(TcpServer::start(&primary.ns, sock(any, SERVICE_PORT))?);
    let restarted = Instant::now();
    let primary_agent = s.start_agent("primary, restarted", &primary, None)?;
    let back = s.wait_configured("primary (restarted)", &primary, restarted);
    s.add(back);
    let prober = Prober::start(&client, sock(floating_ip, SERVICE_PORT))?;
    baseline(s, &prober, "primary", floating_ip)?;
    drop(primary_service.take());
    let failed = Instant::now();
    s.stop_agent(primary_agent);
    // The failover script: reassign the IP in EC2 (the router and both
    // instances' metadata change), then tell the standby's agent.
    let from = primary.eni("eth2")?.clone();
    let to = standby.eni("eth2")?.clone();
    let reassigned = Instant::now();
    vpc.move_address(&from, &to, floating_ip)?;
    primary.set_ipv4s("eth2", vec![from.primary()])?;
    standby.set_ipv4s("eth2", vec![to.primary(), floating_ip])?;
    let refresh = s.agent().run(&standby, &["refresh"]);
    let refreshed = reassigned.elapsed();
    let samples = prober.finish_after_recovery(failed)?;
    let refresh_note = match refresh {
        Ok(out) if out.status.success() => {
            format!("`eniroute refresh` returned after {}", human(refreshed))
        }
        Ok(out) => format!(
            "`eniroute refresh` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("`eniroute refresh` did not run: {e}"),
    };
    judge(
        s,
        &samples,
        Failover {
            what: "secondary IP move",
            service: floating_ip,
            failed,
            host_side_from: reassigned,
            host_side_label: "IP in metadata",
            step: refresh_note,
        },
    );
    s.check(
        &format!("the standby's replies from {floating_ip} leave through its eth2"),
        || expect_route(&standby.ns, client.addr(), Some(floating_ip), "eth2"),
    );

    s.routing("the standby after both failovers", &standby);
    s.done((standby_service, client, primary, standby, vpc));
    super::ha_api::run(s)
}

/// Waits for the client to get answers from the service as it is before
/// the failure, and records that as a check.
pub(super) fn baseline(
    s: &mut Session,
    prober: &Prober,
    who: &str,
    service: Ipv4Addr,
) -> io::Result<()> {
    let start = Instant::now();
    let mut answered = 0;
    while start.elapsed() < Duration::from_secs(3) && answered < 20 {
        s.proceed()?;
        std::thread::sleep(PROBE_EVERY);
        answered = prober
            .samples()
            .iter()
            .filter(|x| x.answered.is_some())
            .count();
    }
    let total = prober.samples().len();
    s.record(
        &format!("client gets answers from the {who} at {service}:{SERVICE_PORT}"),
        answered >= 20,
        format!("{answered} of {total} requests answered"),
        start.elapsed(),
    );
    Ok(())
}

struct Failover {
    what: &'static str,
    service: Ipv4Addr,
    /// The primary's service was down from here on.
    failed: Instant,
    /// Where the standby's part starts.
    host_side_from: Instant,
    host_side_label: &'static str,
    /// How the failover step itself went, for the record.
    step: String,
}

/// Records the outage and the standby's part of it as checks.
fn judge(s: &mut Session, samples: &[Sample], f: Failover) {
    let Some(o) = Outage::find(samples, f.failed) else {
        let lost = samples.iter().filter(|x| x.sent >= f.failed).count();
        s.record(
            &format!("{}: the standby answers at {}", f.what, f.service),
            false,
            format!(
                "no answer in {} after the failure ({lost} requests lost; {})",
                human(RECOVERY_TIMEOUT),
                f.step
            ),
            f.failed.elapsed(),
        );
        return;
    };
    let outage = o.first_ok.saturating_duration_since(o.last_ok);
    let host_side = o.first_ok.saturating_duration_since(f.host_side_from);
    s.measure(&format!("{}: client-observed outage", f.what), outage);
    s.measure(
        &format!("{}: {} -> first answer", f.what, f.host_side_label),
        host_side,
    );
    s.record(
        &format!("{}: the standby answers at {}", f.what, f.service),
        o.lost_after == 0,
        format!(
            "client-observed outage {} ({} requests unanswered); {}; then {} of {} requests answered",
            human(outage),
            o.lost,
            f.step,
            o.after - o.lost_after,
            o.after
        ),
        outage,
    );
    s.record(
        &format!(
            "{}: {} -> first answered request within {}",
            f.what,
            f.host_side_label,
            human(HOST_SIDE_TARGET)
        ),
        host_side <= HOST_SIDE_TARGET,
        human(host_side),
        host_side,
    );
}

/// One request of the client.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub(super) sent: Instant,
    pub(super) answered: Option<Instant>,
}

/// The gap the client saw around a failure.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Outage {
    /// The last answer to a request sent before the failure.
    pub(super) last_ok: Instant,
    /// The first answer to a request sent after it.
    pub(super) first_ok: Instant,
    /// Requests sent after the failure and before that first answer.
    pub(super) lost: usize,
    /// Requests sent after the first answer, and how many of them failed.
    pub(super) after: usize,
    pub(super) lost_after: usize,
}

impl Outage {
    pub(super) fn find(samples: &[Sample], failed: Instant) -> Option<Outage> {
        let last_ok = samples
            .iter()
            .filter(|x| x.sent < failed)
            .filter_map(|x| x.answered)
            .max()?;
        let first = samples
            .iter()
            .filter(|x| x.sent >= failed && x.answered.is_some())
            .min_by_key(|x| x.answered)?;
        let first_ok = first.answered?;
        let lost = samples
            .iter()
            .filter(|x| x.sent >= failed && x.sent < first.sent && x.answered.is_none())
            .count();
        let later: Vec<&Sample> = samples.iter().filter(|x| x.sent > first.sent).collect();
        Some(Outage {
            last_ok,
            first_ok,
            lost,
            after: later.len(),
            lost_after: later.iter().filter(|x| x.answered.is_none()).count(),
        })
    }
}

/// A client that sends one request every [`PROBE_EVERY`] from its own
/// namespace, without waiting for earlier ones, and records each outcome.
pub(super) struct Prober {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Prober {
    pub(super) fn start(client: &Client, dst: SocketAddr) -> io::Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let ns = client.clone();
        let thread = {
            let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
            std::thread::Builder::new()
                .name(format!("probe-{dst}"))
                .spawn(move || ns.run_in(|| probe(dst, &stop, &samples))?)?
        };
        Ok(Prober {
            stop,
            samples,
            thread: Some(thread),
        })
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits for the first answer to a request sent after `failed` (or
    /// gives up), watches a little longer, stops and returns every sample.
    pub(super) fn finish_after_recovery(mut self, failed: Instant) -> io::Result<Vec<Sample>> {
        let start = Instant::now();
        while start.elapsed() < RECOVERY_TIMEOUT && !INTERRUPTED.load(Ordering::Relaxed) {
            let recovered = self
                .samples()
                .iter()
                .any(|x| x.sent >= failed && x.answered.is_some());
            if recovered {
                std::thread::sleep(SETTLE);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.halt()?;
        Ok(self.samples())
    }

    fn halt(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the probing thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// The probing loop, on a thread inside the client's namespace so that its
/// sockets are created there.
fn probe(dst: SocketAddr, stop: &AtomicBool, samples: &Mutex<Vec<Sample>>) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    rt.block_on(async {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inflight = tokio::task::JoinSet::new();
        while !stop.load(Ordering::Acquire) {
            tick.tick().await;
            inflight.spawn(async move {
                let sent = Instant::now();
                let ok = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, request(dst)).await,
                    Ok(Ok(()))
                );
                Sample {
                    sent,
                    answered: ok.then(Instant::now),
                }
            });
            while let Some(done) = inflight.try_join_next() {
                if let Ok(sample) = done {
                    samples
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(sample);
                }
            }
        }
        while let Some(done) = inflight.join_next().await {
            if let Ok(sample) = done {
                samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(sample);
            }
        }
    });
    Ok(())
}

/// One request: connect and read the server's answer (the peer address).
async fn request(dst: SocketAddr) -> io::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(dst).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    if answer.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "empty answer"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_runs_from_the_last_answer_before_to_the_first_after() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let sample = |sent: u64, answered: Option<u64>| Sample {
            sent: at(sent),
            answered: answered.map(at),
        };
        let samples = vec![
            sample(0, Some(1)),
            sample(10, Some(11)),
            sample(20, None), // in flight when the primary failed
            sample(30, None),
            sample(40, None),
            sample(50, Some(52)),
            sample(60, Some(61)),
        ];
        let o = Outage::find(&samples, at(25)).unwrap();
        assert_eq!(o.last_ok, at(11));
        assert_eq!(o.first_ok, at(52));
        assert_eq!((o.lost, o.after, o.lost_after), (2, 1, 0));
        assert!(Outage::find(&samples[..4], at(25)).is_none());
    }
}
