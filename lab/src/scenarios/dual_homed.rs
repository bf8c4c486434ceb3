//! Dual-homed tiers: a web server with a leg in the mid-tier subnet, an app
//! server with its primary ENI in the mid tier and a leg in the database
//! subnet, and a database host. Each tier talks to the next through the ENI
//! in that tier's subnet, and no packet is routed *through* a host.

use std::io;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::runner::{expect_route, expect_seen, forwarded_packets, like_ec2, net4, sock};
use super::Session;
use crate::world::{self, EniPlan};
use crate::{TcpServer, Vpc};

pub(super) fn run(s: &mut Session) -> io::Result<()> {
    let vpc = Vpc::new()?;
    // front 10.0.1.0/24, mid 10.0.5.0/24, database 10.0.6.0/24
    let web = world::instance(
        &vpc,
        1,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"])?,
            EniPlan::new("eth1", 1, "10.0.5.0/24", &["10.0.5.10"])?,
        ],
    )?;
    let app = world::instance(
        &vpc,
        2,
        &[
            EniPlan::new("eth0", 0, "10.0.5.0/24", &["10.0.5.20"])?,
            EniPlan::new("eth1", 1, "10.0.6.0/24", &["10.0.6.20"])?,
        ],
    )?;
    // The database needs no agent: one ENI, configured by DHCP.
    let db = world::instance(
        &vpc,
        3,
        &[EniPlan::new("eth0", 0, "10.0.6.0/24", &["10.0.6.30"])?],
    )?;
    for inst in [&web, &app, &db] {
        like_ec2(inst)?;
    }
    let internet = vpc.client("inet", net4("198.51.100.10/24")?)?;

    s.vpc(&vpc, "VPC vpc-0lab1 (10.0.0.0/16)");
    s.instance("web server (front + mid tier)", &web);
    s.instance("app server (mid tier + database subnet)", &app);
    s.instance("database host (no agent needed: one ENI)", &db);
    s.client("internet client", &internet);

    let any = Ipv4Addr::UNSPECIFIED;
    let servers = [
        TcpServer::start(&web.ns, sock(any, 443))?,
        TcpServer::start(&app.ns, sock(any, 8080))?,
        TcpServer::start(&db.ns, sock(any, 5432))?,
    ];
    s.note("services: 443 on web, 8080 on app, 5432 on the database");

    let started = Instant::now();
    s.start_agent("web", &web, None)?;
    s.start_agent("app", &app, None)?;
    let web_done = s.wait_configured("web", &web, started);
    let app_done = s.wait_configured("app", &app, started);
    s.routing("web", &web);
    s.routing("app", &app);
    s.add(web_done);
    s.add(app_done);
    s.proceed()?;

    let forwarded_before = (forwarded_packets(&web.ns)?, forwarded_packets(&app.ns)?);
    let web_front = web.eni("eth0")?.primary();
    let web_mid = web.eni("eth1")?.primary();
    let app_mid = app.eni("eth0")?.primary();
    let app_db = app.eni("eth1")?.primary();
    let db_addr = db.eni("eth0")?.primary();
    let ic = internet.addr();

    s.check(
        &format!("internet client reaches web's front address {web_front}:443"),
        || expect_seen(&internet, sock(web_front, 443), None, ic),
    );
    s.check(
        &format!("web's traffic to app {app_mid} uses its mid-tier ENI eth1"),
        || expect_route(&web.ns, app_mid, None, "eth1"),
    );
    s.check(
        &format!("web -> app {app_mid}:8080; app sees web's mid-tier {web_mid}"),
        || expect_seen(&web.ns, sock(app_mid, 8080), None, web_mid),
    );
    s.check(
        &format!("app's replies to web {web_mid} leave through its mid-tier eth0"),
        || expect_route(&app.ns, web_mid, Some(app_mid), "eth0"),
    );
    s.check(
        &format!("app's traffic to the database {db_addr} uses its database ENI eth1"),
        || expect_route(&app.ns, db_addr, None, "eth1"),
    );
    s.check(
        &format!("app -> database {db_addr}:5432; database sees app's {app_db}"),
        || expect_seen(&app.ns, sock(db_addr, 5432), None, app_db),
    );
    s.check(
        "web's front address answers the internet through the front ENI eth0",
        || expect_route(&web.ns, ic, Some(web_front), "eth0"),
    );
    s.check(
        "no packet was routed through web or app (IP ForwDatagrams unchanged)",
        || {
            let after = (
                forwarded_packets(&web.ns).map_err(|e| e.to_string())?,
                forwarded_packets(&app.ns).map_err(|e| e.to_string())?,
            );
            if after == forwarded_before {
                Ok("web and app forwarded nothing".into())
            } else {
                Err(format!(
                    "forwarded: web {}, app {}",
                    after.0 - forwarded_before.0,
                    after.1 - forwarded_before.1
                ))
            }
        },
    );

    s.done((servers, internet, web, app, db, vpc));
    Ok(())
}
