//! Hotplug and repair on the management-network instance (eth0, eth1 with
//! 10.0.2.20 and 10.0.2.21) with the daemon at default settings:
//!
//! - hotplug → first answered TCP connection, metadata present: a third ENI
//!   (10.0.3.30) is attached, its metadata published and its router port
//!   set up in a parking namespace first, then its link moves into the
//!   instance; measured from the moment the link appears there to the
//!   first connection the admin host gets answered on 10.0.3.30;
//! - the same with its metadata listed 0.5 s after the link appears,
//!   measured from the moment metadata lists it;
//! - metadata requests per hotplug (from the link appearing until 100 ms
//!   after the first answered connection);
//! - a deleted rule restored: `from 10.0.2.21 lookup 10001` deleted over
//!   netlink, until a rule dump shows it again.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{first_answer, ms, Budget, Options, Row, Stat, StateGuard, Table, GIVE_UP};
use crate::agent::{wait_for, Daemon};
use crate::imds_tree::{put_eni, remove_eni, EniMeta};
use crate::netns::Netns;
use crate::vpc::{EniSpec, Instance};
use crate::world::{self, ManagementLab};
use crate::TcpServer;
use eniroute::netlink::{Kernel, RtNetlink};
use eniroute::values::Mac;

const GROUP: &str = "hotplug";
/// The agent's protocol number at default settings.
const PROTOCOL: u8 = 233;
/// How late metadata lists the ENI in the lagging case.
const LAG: Duration = Duration::from_millis(500);
/// Requests after the first answered connection still count for the
/// hotplug that caused them.
const SETTLE: Duration = Duration::from_millis(100);

pub fn run(opts: &Options, table: &mut Table, progress: &mut dyn FnMut(&str)) -> io::Result<()> {
    let lab = world::management_network()?;
    let _state = StateGuard::new(&lab.inst.ns);
    let _ssh = TcpServer::start(&lab.inst.ns, SocketAddr::from(([0, 0, 0, 0], 22)))?;
    let park = lab.vpc.instance("park")?;
    let d = Daemon::start(&opts.agent, &lab.inst.ns, &lab.inst.endpoint, None)?;
    wait_ready(&d)?;

    let mut present = Vec::new();
    let mut present_requests = Vec::new();
    for _ in 0..opts.n(5, 20) {
        let (took, requests) = attach(&lab, &park, None)?;
        present.push(ms(took));
        present_requests.push(requests as f64);
    }
    progress(&format!(
        "hotplug: metadata present, {} attaches",
        present.len()
    ));
    let mut late = Vec::new();
    let mut late_requests = Vec::new();
    for _ in 0..opts.n(3, 10) {
        let (took, requests) = attach(&lab, &park, Some(LAG))?;
        late.push(ms(took));
        late_requests.push(requests as f64);
    }
    progress(&format!(
        "hotplug: metadata 0.5 s late, {} attaches",
        late.len()
    ));
    let restored = rule_repair(&lab.inst.ns, opts.n(5, 20))?;

    table.push(
        Row::new(
            GROUP,
            "hotplug → first answered connection, metadata present (from the link appearing)",
            "ms",
        )
        .samples(present)
        .budget(Budget::at_most(Stat::P50, 15.0))
        .budget(Budget::at_most(Stat::P99, 30.0)),
    );
    table.push(
        Row::new(
            GROUP,
            "metadata requests per hotplug, metadata present",
            "requests",
        )
        .samples(present_requests)
        .budget(Budget::at_most(Stat::P50, 15.0)),
    );
    table.push(
        Row::new(GROUP, "hotplug with metadata 0.5 s late → first answered connection (from metadata listing the ENI)", "ms")
            .samples(late)
            .budget(Budget::at_most(Stat::P99, 50.0)),
    );
    table.push(
        Row::new(
            GROUP,
            "metadata requests per hotplug, metadata 0.5 s late",
            "requests",
        )
        .samples(late_requests),
    );
    table.push(
        Row::new(
            GROUP,
            "deleted rule restored (from its deletion to a dump showing it)",
            "ms",
        )
        .samples(restored),
    );
    Ok(())
}

pub(super) fn wait_ready(d: &Daemon) -> io::Result<()> {
    wait_for(GIVE_UP, || d.log().contains("ready: "))
        .map(|_| ())
        .ok_or_else(|| io::Error::other(format!("daemon never ready:\n{}", d.log())))
}

/// The ENI every attach brings: device 2, 10.0.3.30.
fn third_eni() -> io::Result<(EniSpec, EniMeta)> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let subnet = "10.0.3.0/24".parse().map_err(|e| bad(format!("{e}")))?;
    let addr = "10.0.3.30".parse().map_err(|e| bad(format!("{e}")))?;
    let mac = Mac::new([0x0a, 0xe0, 0, 1, 0, 2]);
    let spec = EniSpec {
        name: "eth2".into(),
        mac,
        subnet,
        addresses: vec![addr],
    };
    let meta = EniMeta {
        mac,
        eni_id: "eni-0010002lab".into(),
        card: 0,
        device: 2,
        subnet,
        subnet_id: "subnet-1003".into(),
        vpc_id: "vpc-0lab1".into(),
        vpc_cidrs: vec!["10.0.0.0/16".parse().map_err(|e| bad(format!("{e}")))?],
        ipv4s: vec![addr],
    };
    Ok((spec, meta))
}

/// One attach and detach. Returns the time to the first answered
/// connection (from the link appearing, or from metadata listing the ENI
/// when it lags) and the metadata requests it caused.
fn attach(
    lab: &ManagementLab,
    park: &Instance,
    lag: Option<Duration>,
) -> io::Result<(Duration, u64)> {
    let (spec, meta) = third_eni()?;
    let dst: SocketAddr = SocketAddr::from(([10, 0, 3, 30], 22));
    let inst = &lab.inst;
    // Everything the VPC does for an attach happens before the link
    // reaches the instance, so what is measured is the agent's part only.
    let eni = lab.vpc.attach_eni(park, spec)?;
    inst.sim.update(|t| put_eni(t, &meta));
    let listed = lag.map(|l| {
        let at = Instant::now() + l;
        inst.sim.set_lag(meta.mac, l);
        at
    });
    let before = inst.sim.requests();
    let (appeared, answered) = std::thread::scope(|s| {
        let admin = &lab.admin;
        let probe = s.spawn(move || first_answer(admin, dst, GIVE_UP));
        let inst_ns: &Netns = &inst.ns;
        let link = s.spawn(move || link_appears(inst_ns, "eth2"));
        // The prober runs before the link arrives, as an admin's retries
        // would.
        std::thread::sleep(Duration::from_millis(20));
        let moved = lab.vpc.move_eni(&eni, &inst.ns);
        let join = |h: std::thread::ScopedJoinHandle<'_, io::Result<Instant>>| {
            h.join()
                .map_err(|_| io::Error::other("probe thread panicked"))
                .and_then(|r| r)
        };
        let answered = join(probe);
        let appeared = join(link);
        (appeared, moved.and(answered))
    });
    let (appeared, answered) = (appeared?, answered?);
    std::thread::sleep(SETTLE);
    let requests = inst.sim.requests() - before;
    // Detach: metadata forgets it, the link goes, and the daemon lets go
    // of its rules before the next attach.
    inst.sim.update(|t| remove_eni(t, meta.mac));
    lab.vpc.detach_eni(&eni)?;
    wait_for(GIVE_UP, || {
        inst.ns
            .ip(["rule"])
            .map(|r| !r.contains("10.0.3.30"))
            .unwrap_or(false)
    })
    .ok_or_else(|| io::Error::other("the detached ENI's rules never went away"))?;
    std::thread::sleep(Duration::from_millis(50));
    let from = listed.unwrap_or(appeared).max(appeared);
    Ok((answered.saturating_duration_since(from), requests))
}

/// When `name` appears in `ns`, to within a fraction of a millisecond.
fn link_appears(ns: &Netns, name: &str) -> io::Result<Instant> {
    let r = ns.run_in(|| {
        let end = Instant::now() + GIVE_UP;
        while Instant::now() < end {
            if nix::net::if_::if_nametoindex(name).is_ok() {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        None
    })?;
    r.ok_or_else(|| io::Error::other(format!("link {name} never appeared")))
}

/// Deletes eth1's rule for 10.0.2.21 `n` times over netlink and times how
/// long the daemon takes to put it back, as seen by rule dumps every
/// quarter millisecond.
fn rule_repair(ns: &Netns, n: usize) -> io::Result<Vec<f64>> {
    ns.run_in(move || -> io::Result<Vec<f64>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let nl = |e: eniroute::netlink::NetlinkError| io::Error::other(e.to_string());
            let kernel = RtNetlink::connect(PROTOCOL).map_err(nl)?;
            let wanted = |r: &eniroute::values::KernelRule| {
                r.protocol == PROTOCOL
                    && r.rule
                        .from
                        .is_some_and(|f| f.addr().to_string() == "10.0.2.21")
            };
            let rule = kernel
                .rules()
                .await
                .map_err(nl)?
                .into_iter()
                .find(|r| wanted(r))
                .ok_or_else(|| io::Error::other("no rule from 10.0.2.21 to delete"))?
                .rule;
            let mut out = Vec::new();
            for _ in 0..n {
                kernel.del_rule(&rule).await.map_err(nl)?;
                let deleted = Instant::now();
                loop {
                    if kernel.rules().await.map_err(nl)?.iter().any(&wanted) {
                        out.push(ms(deleted.elapsed()));
                        break;
                    }
                    if deleted.elapsed() > GIVE_UP {
                        return Err(io::Error::other("a deleted rule was never restored"));
                    }
                    tokio::time::sleep(Duration::from_micros(250)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(out)
        })
    })?
}
