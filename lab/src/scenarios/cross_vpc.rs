//! Dual-homed across two VPCs: a secondary ENI from VPC B, whose primary
//! CIDR (10.0.0.0/16) overlaps the instance's own VPC A and whose secondary
//! CIDR (172.31.0.0/16) does not. The host reaches VPC B's 172.31 addresses
//! through that ENI without binding a source; 10.0.0.0/16 stays with VPC A,
//! and the overlap is reported.

use std::io;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::runner::{expect_route, expect_seen, like_ec2, net4, sock};
use super::Session;
use crate::world::{self, EniPlan};
use crate::{TcpServer, Vpc};

pub(super) fn run(s: &mut Session) -> io::Result<()> {
    let vpc_a = Vpc::new()?;
    let vpc_b = Vpc::new()?;
    let mut inst = world::instance(
        &vpc_a,
        1,
        &[EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"])?],
    )?;
    like_ec2(&inst)?;
    let overlapping = net4("10.0.0.0/16")?;
    let secondary = net4("172.31.0.0/16")?;
    let from_b = EniPlan {
        name: "eth1".into(),
        card: 0,
        device: 1,
        subnet: net4("172.31.1.0/24")?,
        ipv4s: vec!["172.31.1.20".parse().map_err(io::Error::other)?],
        vpc_id: "vpc-0lab2".into(),
        vpc_cidrs: vec![overlapping, secondary],
    };
    inst.attach(&vpc_b, &from_b, true)?;
    let server_a = vpc_a.client("a-server", net4("10.0.3.50/24")?)?;
    let server_b = vpc_b.client("b-server", net4("172.31.2.50/24")?)?;

    s.vpc(&vpc_a, "VPC A vpc-0lab1 (10.0.0.0/16)");
    s.vpc(&vpc_b, "VPC B vpc-0lab2 (10.0.0.0/16 and 172.31.0.0/16)");
    s.instance("instance (eth0 in VPC A, eth1 from VPC B)", &inst);
    s.client("server in VPC A", &server_a);
    s.client("server in VPC B's secondary CIDR", &server_b);

    let any = Ipv4Addr::UNSPECIFIED;
    let servers = [
        TcpServer::start(&server_a, sock(any, 5432))?,
        TcpServer::start(&server_b, sock(any, 5432))?,
        TcpServer::start(&inst.ns, sock(any, 22))?,
    ];
    s.note("services: 5432 on both servers, 22 on the instance");

    let started = Instant::now();
    s.start_agent("instance", &inst, None)?;
    let configured = s.wait_configured("instance", &inst, started);
    s.routing("the instance", &inst);
    s.add(configured);
    s.proceed()?;

    let ns = &inst.ns;
    let eth0 = inst.eni("eth0")?.primary();
    let eth1 = inst.eni("eth1")?.primary();
    let (a, b) = (server_a.addr(), server_b.addr());
    s.check(
        &format!("VPC B's {secondary} is routed through eth1 in the main table"),
        || expect_route(ns, b, None, "eth1"),
    );
    s.check(
        &format!("instance -> VPC B server {b}:5432 without binding; server sees eth1's {eth1}"),
        || expect_seen(ns, sock(b, 5432), None, eth1),
    );
    s.check(
        &format!("VPC B server reaches SSH on eth1's {eth1} (replies leave through eth1)"),
        || expect_seen(&server_b, sock(eth1, 22), None, b),
    );
    s.check(
        &format!("the overlapping {overlapping} stays with VPC A: {a} goes through eth0"),
        || expect_route(ns, a, None, "eth0"),
    );
    s.check(
        &format!("instance -> VPC A server {a}:5432; server sees eth0's {eth0}"),
        || expect_seen(ns, sock(a, 5432), None, eth0),
    );
    let agent = s.agent();
    s.check("`eniroute status` reports the overlap", || {
        let out = agent.run(&inst, &["status"]).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("overlaps") && l.contains(&overlapping.to_string()))
            .ok_or_else(|| {
                format!(
                    "no overlap warning in `eniroute status` (exit {:?}):\n{text}{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        Ok(line.trim().to_string())
    });

    s.done((servers, server_a, server_b, inst, vpc_b, vpc_a));
    Ok(())
}
