//! A secondary IPv4 added in metadata → the first answered connection to
//! it. Two instances; 10.0.2.50 moves from the second one's eth1 to the
//! first one's (where the daemon runs at default settings): the VPC routes
//! it there first, then metadata lists it, which is when the clock starts.
//! Once with nothing else (the daemon's volatile poll, every 5 s, finds
//! it) and once with `eniroute refresh` run right after the metadata
//! change, as a failover script does.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{command_in, first_answer, ms, timed, Budget, Options, Row, Stat, StateGuard, Table};
use crate::agent::{wait_for, Daemon};
use crate::world::{self, EniPlan, LabInstance};
use crate::{TcpServer, Vpc};

const GROUP: &str = "address";
const MOVED: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 50);

pub fn run(opts: &Options, table: &mut Table, progress: &mut dyn FnMut(&str)) -> io::Result<()> {
    let vpc = Vpc::new()?;
    let mut i1 = world::instance(
        &vpc,
        1,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"])?,
            EniPlan::new("eth1", 1, "10.0.2.0/24", &["10.0.2.20"])?,
        ],
    )?;
    let _state = StateGuard::new(&i1.ns);
    let mut i2 = world::instance(
        &vpc,
        2,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.11"])?,
            EniPlan::new("eth1", 1, "10.0.2.0/24", &["10.0.2.40", "10.0.2.50"])?,
        ],
    )?;
    let admin = vpc.client("admin", "10.9.0.5/24".parse().map_err(io::Error::other)?)?;
    let _srv = TcpServer::start(&i1.ns, SocketAddr::from(([0, 0, 0, 0], 22)))?;
    let d = Daemon::start(&opts.agent, &i1.ns, &i1.endpoint, None)?;
    super::hotplug::wait_ready(&d)?;

    let mut refreshed = Vec::new();
    for _ in 0..opts.n(5, 20) {
        refreshed.push(ms(add_address(opts, &vpc, &admin, &mut i1, &mut i2, true)?));
    }
    progress(&format!(
        "address: {} moves with `eniroute refresh`",
        refreshed.len()
    ));
    let mut polled = Vec::new();
    for n in 0..opts.n(2, 8) {
        // Moves land at different points of the 5 s poll cycle.
        std::thread::sleep(Duration::from_millis(1300 * n as u64 % 5000));
        polled.push(ms(add_address(
            opts, &vpc, &admin, &mut i1, &mut i2, false,
        )?));
    }
    progress(&format!(
        "address: {} moves at default settings",
        polled.len()
    ));
    table.push(
        Row::new(GROUP, "secondary IPv4 added in metadata → first answered connection, `eniroute refresh` run at once", "ms")
            .samples(refreshed)
            .budget(Budget::at_most(Stat::P50, 20.0)),
    );
    table.push(
        Row::new(GROUP, "secondary IPv4 added in metadata → first answered connection, default settings (5 s poll)", "ms")
            .samples(polled),
    );
    Ok(())
}

/// Moves 10.0.2.50 to the first instance and back; the time from metadata
/// listing it there to the first answered connection.
fn add_address(
    opts: &Options,
    vpc: &Vpc,
    admin: &crate::Client,
    i1: &mut LabInstance,
    i2: &mut LabInstance,
    refresh: bool,
) -> io::Result<Duration> {
    let ip4 = |s: &str| s.parse::<Ipv4Addr>().map_err(io::Error::other);
    let (e1, e2) = (i1.eni("eth1")?.clone(), i2.eni("eth1")?.clone());
    let dst = SocketAddr::from((MOVED, 22));
    vpc.move_address(&e2, &e1, MOVED)?;
    let (t0, answered) = std::thread::scope(|s| {
        let probe = s.spawn(|| first_answer(admin, dst, super::GIVE_UP));
        std::thread::sleep(Duration::from_millis(10));
        let t0 = Instant::now();
        let changed = (|| -> io::Result<()> {
            i1.set_ipv4s("eth1", vec![ip4("10.0.2.20")?, MOVED])?;
            i2.set_ipv4s("eth1", vec![ip4("10.0.2.40")?])?;
            if refresh {
                refresh_daemon(opts, i1)?;
            }
            Ok(())
        })();
        let answered = probe
            .join()
            .map_err(|_| io::Error::other("probe thread panicked"))
            .and_then(|r| r);
        (t0, changed.and(answered))
    });
    let took = answered?.saturating_duration_since(t0);
    // And back, then wait until this instance let go of it.
    vpc.move_address(&e1, &e2, MOVED)?;
    i1.set_ipv4s("eth1", vec![ip4("10.0.2.20")?])?;
    i2.set_ipv4s("eth1", vec![ip4("10.0.2.40")?, MOVED])?;
    refresh_daemon(opts, i1)?;
    wait_for(super::GIVE_UP, || {
        i1.ns
            .ip(["rule"])
            .map(|r| !r.contains("10.0.2.50"))
            .unwrap_or(false)
    })
    .ok_or_else(|| io::Error::other("the moved address was never let go"))?;
    std::thread::sleep(Duration::from_millis(50));
    Ok(took)
}

/// `eniroute refresh` inside the instance, as a failover script runs it.
fn refresh_daemon(opts: &Options, inst: &LabInstance) -> io::Result<()> {
    let mut cmd = command_in(&inst.ns, &opts.agent)?;
    cmd.arg("refresh");
    timed(cmd, "eniroute refresh").map(|_| ())
}
