//! Management network: eth0 carries public traffic (80/443), eth1 sits in a
//! management subnet that an admin range reaches for SSH. Without policy
//! routing the reply to an admin's SSH connection on eth1 leaves through
//! eth0's default route and the VPC drops it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::runner::{expect_altnames, expect_route, expect_seen, ip4, like_ec2, sock};
use super::Session;
use crate::world::management_network;
use crate::TcpServer;

/// The admin range behind the management subnet (a VPN gateway's clients).
const ADMIN_RANGE: &str = "10.9.0.0/24";

pub(super) fn run(s: &mut Session) -> io::Result<()> {
    let lab = management_network()?;
    like_ec2(&lab.inst)?;
    let public = ip4("10.0.1.10")?;
    let mgmt = ip4("10.0.2.20")?;
    let mgmt_secondary = ip4("10.0.2.21")?;
    let admin = lab.admin.addr();
    let internet = lab.internet.addr();

    s.vpc(&lab.vpc, "VPC vpc-0lab1 (10.0.0.0/16)");
    s.instance("the instance (eth0 public, eth1 management)", &lab.inst);
    s.client(
        &format!("admin host (admin range {ADMIN_RANGE})"),
        &lab.admin,
    );
    s.client("internet client", &lab.internet);
    s.note("eth0 is configured as DHCP leaves it; eth1 arrives bare, as a hot-plugged ENI does");

    // The instance's services: web on the public ENI, SSH for the admins.
    let any = Ipv4Addr::UNSPECIFIED;
    let servers = [
        TcpServer::start(&lab.inst.ns, sock(any, 80))?,
        TcpServer::start(&lab.inst.ns, sock(any, 443))?,
        TcpServer::start(&lab.inst.ns, sock(any, 22))?,
    ];
    // Something on the admin side the instance itself talks to (monitoring,
    // a config server).
    let admin_service = TcpServer::start(&lab.admin, sock(any, 9000))?;
    s.note("services: 80, 443 and 22 on the instance; 9000 on the admin host");

    let config = format!(
        "# eth1 (device 1) is the management ENI: the admin range is reached through it\n\
         [[eni]]\n\
         match = {{ device = 1 }}\n\
         main_routes = [{{ dst = \"{ADMIN_RANGE}\" }}]\n"
    );
    let started = Instant::now();
    s.start_agent("instance", &lab.inst, Some(&config))?;
    let configured = s.wait_configured("instance", &lab.inst, started);
    s.routing("the instance", &lab.inst);
    s.add(configured);
    s.proceed()?;

    let inet_ns = &lab.internet;
    let admin_ns = &lab.admin;
    let inst_ns = &lab.inst.ns;
    for port in [80, 443] {
        s.check(
            &format!("internet client reaches {public}:{port} on eth0"),
            || expect_seen(inet_ns, sock(public, port), None, internet),
        );
    }
    s.check(
        &format!("admin host reaches SSH on eth1's secondary address {mgmt_secondary}"),
        || expect_seen(admin_ns, sock(mgmt_secondary, 22), None, admin),
    );
    s.check(
        &format!("admin host reaches SSH on eth1's primary address {mgmt}"),
        || expect_seen(admin_ns, sock(mgmt, 22), None, admin),
    );
    s.check(
        &format!("replies from {mgmt_secondary} to the admin leave through eth1"),
        || expect_route(inst_ns, admin, Some(mgmt_secondary), "eth1"),
    );
    s.check(
        &format!("replies from {public} to the internet leave through eth0"),
        || expect_route(inst_ns, internet, Some(public), "eth0"),
    );
    s.check(
        &format!("configured route: the instance's own traffic to {admin} uses eth1"),
        || expect_route(inst_ns, admin, None, "eth1"),
    );
    let admin_svc: SocketAddr = admin_service.local_addr();
    let admin_svc = sock(admin, admin_svc.port());
    s.check(
        &format!("instance connects to {admin_svc} without binding; admin sees eth1's {mgmt}"),
        || expect_seen(inst_ns, admin_svc, None, mgmt),
    );
    s.check(
        &format!("the instance's other traffic (to {internet}) still uses eth0"),
        || expect_route(inst_ns, internet, None, "eth0"),
    );
    s.check(
        "runbooks name the management ENI by its id or device number, as on Amazon Linux",
        || expect_altnames(inst_ns, "eth1", &["eni-0010001lab", "device-number-1"]),
    );

    s.done((servers, admin_service, lab));
    Ok(())
}
