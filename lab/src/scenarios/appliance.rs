//! A network appliance (NAT instance, proxy): a private subnet's internet
//! traffic is routed through its inside ENI and leaves through its outside
//! ENI. The agent's policy routing must not disturb that forwarded traffic,
//! sets forwarding and rp_filter where the configuration says so, and keeps
//! the appliance's own management access working.
//!
//! No address translation: the internet side's route back to the private
//! subnet points at the appliance's outside ENI (a VPC ingress route), so
//! plain forwarding carries both directions and each endpoint sees the
//! other's real address.

use std::io;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::runner::{
    expect_forward_route, expect_route, expect_seen, forwarded_packets, ip4, like_ec2, net4,
    read_sysctl, sock,
};
use super::Session;
use crate::world::{self, subnet_route, EniPlan};
use crate::{TcpServer, Vpc};

pub(super) fn run(s: &mut Session) -> io::Result<()> {
    let vpc = Vpc::new()?;
    let inst = world::instance(
        &vpc,
        1,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"])?,
            EniPlan::new("eth1", 1, "10.0.3.0/24", &["10.0.3.10"])?,
            EniPlan::new("eth2", 2, "10.0.2.0/24", &["10.0.2.20"])?,
        ],
    )?;
    like_ec2(&inst)?;
    let private = vpc.client("private", net4("10.0.4.5/24")?)?;
    let internet = vpc.client("inet", net4("198.51.100.10/24")?)?;
    let admin = vpc.client("admin", net4("10.9.0.5/24")?)?;
    let outside = inst.eni("eth0")?.clone();
    let inside = inst.eni("eth1")?.clone();
    let mgmt = ip4("10.0.2.20")?;

    // EC2: source/destination check off on both ENIs that carry other
    // hosts' packets; the private subnet's route table sends internet
    // traffic to the inside ENI; the internet side's (ingress) route table
    // sends the private subnet's replies to the outside ENI.
    vpc.set_source_dest_check(&outside, false)?;
    vpc.set_source_dest_check(&inside, false)?;
    subnet_route(&vpc, &private, internet.net(), &inside, 201)?;
    subnet_route(&vpc, &internet, private.net(), &outside, 202)?;

    s.vpc(&vpc, "VPC vpc-0lab1 (10.0.0.0/16)");
    s.instance(
        "appliance (eth0 outside, eth1 inside, eth2 management)",
        &inst,
    );
    s.client("private-subnet host", &private);
    s.client("internet client", &internet);
    s.client("admin host", &admin);
    s.note(&format!(
        "VPC: source/destination check off on eth0 and eth1; route table of {}: {} -> eth1; \
         ingress route: {} -> eth0",
        private.net(),
        internet.net(),
        private.net()
    ));

    let any = Ipv4Addr::UNSPECIFIED;
    let web = TcpServer::start(&internet, sock(any, 80))?;
    let ssh = TcpServer::start(&inst.ns, sock(any, 22))?;
    s.note("services: 80 on the internet client; 22 on the appliance");

    let before = read_sysctl(&inst.ns, "net.ipv4.conf.eth1.forwarding")?;
    let config = format!(
        "# outside ENI: forwards the private subnet's traffic out and the replies back in\n\
         [[eni]]\n\
         match = {{ device = 0 }}\n\
         forwarding = true\n\
         \n\
         # inside ENI: the private subnet's gateway, reached from sources routed elsewhere\n\
         [[eni]]\n\
         match = {{ device = 1 }}\n\
         forwarding = true\n\
         rp_filter = \"loose\"\n\
         main_routes = [{{ dst = \"{}\" }}]\n",
        private.net()
    );
    let started = Instant::now();
    s.start_agent("appliance", &inst, Some(&config))?;
    let configured = s.wait_configured("appliance", &inst, started);
    s.routing("the appliance", &inst);
    s.add(configured);
    s.proceed()?;

    let ns = &inst.ns;
    s.check(
        "forwarding on the inside ENI set by the agent (net.ipv4.conf.eth1.forwarding)",
        || {
            let after =
                read_sysctl(ns, "net.ipv4.conf.eth1.forwarding").map_err(|e| e.to_string())?;
            if before == "0" && after == "1" {
                Ok("0 before the agent, 1 after".into())
            } else {
                Err(format!(
                    "{before} before the agent, {after} after; wanted 0 then 1"
                ))
            }
        },
    );
    s.check("the other sysctls follow the configuration", || {
        let mut got = Vec::new();
        for (key, want) in [
            ("net.ipv4.conf.eth0.forwarding", "1"),
            ("net.ipv4.conf.eth1.rp_filter", "2"),
            // Not configured: left as the system had it.
            ("net.ipv4.conf.eth2.forwarding", "0"),
        ] {
            let value = read_sysctl(ns, key).map_err(|e| e.to_string())?;
            if value != want {
                return Err(format!("{key} = {value}, wanted {want}"));
            }
            got.push(format!("{key} = {value}"));
        }
        Ok(got.join(", "))
    });

    let forwarded_before = forwarded_packets(ns)?;
    let (pc, ic) = (private.addr(), internet.addr());
    s.check(
        &format!("private host {pc} reaches the internet client {ic}:80 through the appliance"),
        || {
            let seen = expect_seen(&private, sock(ic, 80), None, pc)?;
            let forwarded = forwarded_packets(ns).map_err(|e| e.to_string())? - forwarded_before;
            if forwarded == 0 {
                return Err(format!("{seen}, but the appliance forwarded nothing"));
            }
            Ok(format!(
                "{seen}; the appliance forwarded {forwarded} packets"
            ))
        },
    );
    s.check("forwarded requests leave through the outside ENI", || {
        expect_forward_route(ns, ic, pc, "eth1", "eth0")
    });
    s.check("forwarded replies go back through the inside ENI", || {
        expect_forward_route(ns, pc, ic, "eth0", "eth1")
    });
    let ad = admin.addr();
    s.check(
        &format!("admin host reaches SSH on the management ENI's {mgmt}"),
        || expect_seen(&admin, sock(mgmt, 22), None, ad),
    );
    s.check(
        &format!("replies from {mgmt} to the admin leave through eth2"),
        || expect_route(ns, ad, Some(mgmt), "eth2"),
    );
    let own = inst.eni("eth0")?.primary();
    s.check(
        &format!("the appliance's own connection to {ic}:80 leaves from eth0's {own}"),
        || expect_seen(ns, sock(ic, 80), None, own),
    );

    s.done((web, ssh, private, internet, admin, inst, vpc));
    Ok(())
}
