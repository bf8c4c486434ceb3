//! `eniroute takeover` against an EC2 API emulator (moto, behind the lab's
//! front): a secondary IP and a whole ENI move from a primary to a standby
//! instance through the API, the standby routes them from the API's answer
//! before metadata shows them, and a real TCP client reaches the standby.
//! Faults (credentials, API errors, throttling, a takeover interrupted half
//! way) give their exit codes and messages and leave routing alone.
//!
//! Needs root (namespaces) and moto_server; each says why it skipped.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{need_root, text};
use eniroute_lab::agent::{self as lab_agent, Daemon};
use eniroute_lab::ec2_api::{self, ApiFault, CredentialsState, Ec2Lab, Host};
use eniroute_lab::{Client, Instance};

fn need_moto(test: &str) -> bool {
    if ec2_api::moto_server().is_some() {
        return true;
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test}: {}",
        ec2_api::MOTO_MISSING
    );
    false
}

/// A server on port 80 (IPv4 and IPv6) that answers every connection with
/// its name, so the client can tell which instance answered.
struct Named {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    ns: Instance,
}

fn named_server(ns: &Instance, name: &'static str) -> Named {
    let listener = ns.run_in(|| TcpListener::bind("[::]:80")).unwrap().unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let halt = Arc::clone(&stop);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            if halt.load(Ordering::Acquire) {
                return;
            }
            if let Ok(mut s) = s {
                let _ = writeln!(s, "{name}");
            }
        }
    });
    Named {
        stop,
        addr,
        ns: ns.clone(),
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.addr.port()));
        let _ = self.ns.run_in(move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        });
    }
}

/// Who answers at `ip:80` from the client, if anyone within 2 s. The first
/// answer counts; only a connection that fails is tried again, because the
/// first one to a freshly moved address may wait on neighbour discovery
/// (IPv6) longer than one attempt's 300 ms on a busy machine.
fn who(client: &Client, ip: &str) -> Option<String> {
    let dst = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 80);
    let once = move || -> Option<String> {
        let mut s = std::net::TcpStream::connect_timeout(&dst, Duration::from_millis(300)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out.trim().to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(name) = client.run_in(once).ok().flatten() {
            return Some(name);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One EC2 lab at a time: each runs a moto server, and several starting
/// at once on two cores make each one's first answers take many seconds.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct World {
    client: Client,
    primary: Host,
    standby: Host,
    lab: Ec2Lab,
    // Last: released once the lab above is gone.
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Two instances in one zone: the primary holds 10.0.3.100 on its eth2 and
/// the service ENI eth1 (10.0.2.50); the standby has eth0 and eth2.
fn world() -> World {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut lab = Ec2Lab::start().expect("start the EC2 lab");
    for cidr in ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"] {
        lab.subnet(cidr, "us-east-1a").unwrap();
    }
    lab.subnet("10.0.9.0/24", "us-east-1b").unwrap();
    let primary = lab
        .instance(
            "i1",
            &[
                ("eth0", "10.0.1.0/24", &["10.0.1.10"]),
                ("eth1", "10.0.2.0/24", &["10.0.2.50"]),
                ("eth2", "10.0.3.0/24", &["10.0.3.10", "10.0.3.100"]),
            ],
        )
        .unwrap();
    let standby = lab
        .instance(
            "i2",
            &[
                ("eth0", "10.0.1.0/24", &["10.0.1.20"]),
                ("eth2", "10.0.3.0/24", &["10.0.3.20"]),
            ],
        )
        .unwrap();
    let client = lab
        .vpc
        .client("client", "198.51.100.10/24".parse().unwrap())
        .unwrap();
    World {
        _serial: serial,
        client,
        primary,
        standby,
        lab,
    }
}

fn eniroute(host: &Host, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = host.ns.command(common::bin());
    cmd.arg("--imds-endpoint").arg(&host.endpoint).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null()).output().unwrap()
}

fn takeover(w: &World, args: &[&str]) -> Output {
    let mut all = vec!["takeover", "--ec2-endpoint", w.lab.endpoint.as_str()];
    all.extend_from_slice(args);
    eniroute(&w.standby, &all, &[])
}

fn lists(host: &Host, mac_path_value: &str) -> bool {
    host.sim.tree().to_string().contains(mac_path_value)
}

impl World {
    /// Both instances routed by a one-shot `apply`, each answering on port
    /// 80 with its name: the client reaches the primary to begin with.
    fn applied_and_serving(&self) -> (Named, Named) {
        common::apply(&self.primary.ns, &self.primary.endpoint);
        common::apply(&self.standby.ns, &self.standby.endpoint);
        (
            named_server(&self.primary.ns, "primary"),
            named_server(&self.standby.ns, "standby"),
        )
    }

    /// A daemon on the standby, once it has its rule for `own` (an address
    /// of the standby's own), so a takeover finds it running.
    fn standby_daemon(&self, ipv6: bool, own: &str) -> Daemon {
        let daemon = Daemon::start(
            common::bin(),
            &self.standby.ns,
            &self.standby.endpoint,
            None,
        )
        .unwrap();
        let family = if ipv6 { "-6" } else { "-4" };
        lab_agent::wait_for(Duration::from_secs(5), || {
            self.standby
                .ns
                .ip([family, "rule"])
                .unwrap_or_default()
                .contains(own)
        })
        .unwrap_or_else(|| panic!("standby daemon not configured:\n{}", daemon.log()));
        daemon
    }
}

/// A takeover that must have worked; the daemon's log tells why not.
fn succeeded(o: &Output, daemon: &Daemon) {
    assert!(
        o.status.success(),
        "{}\ndaemon log:\n{}",
        text(o),
        daemon.log()
    );
}

#[test]
fn ip_takeover_routes_the_address_before_metadata_shows_it() {
    if !need_root("ip_takeover_routes_the_address_before_metadata_shows_it")
        || !need_moto("ip_takeover_routes_the_address_before_metadata_shows_it")
    {
        return;
    }
    let w = world();
    let _servers = w.applied_and_serving();
    assert_eq!(who(&w.client, "10.0.3.100").as_deref(), Some("primary"));
    let daemon = w.standby_daemon(false, "10.0.3.20");
    let standby_eth2 = w.standby.eni_id("eth2").unwrap().to_string();

    // Metadata lags for as long as the test says: it catches up only at
    // the explicit sync below, so "before metadata shows it" holds however
    // slow the machine is.
    w.lab.set_lag(Duration::from_secs(600));
    let started = Instant::now();
    let o = takeover(&w, &["--ip", "10.0.3.100"]);
    let took = started.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("EC2 assigned 10.0.3.100 to {standby_eth2}")),
        "{out}"
    );
    assert!(out.contains("told the eniroute daemon"), "{out}");
    assert!(out.contains("is routed here"), "{out}");
    // Routed from EC2's answer: metadata (1 s behind) does not show it yet.
    assert!(
        !lists(&w.standby, "10.0.3.100"),
        "metadata already showed the address after {took:?}; the test proves nothing"
    );
    assert_eq!(who(&w.client, "10.0.3.100").as_deref(), Some("standby"));
    assert_eq!(
        common::dev_for(&w.standby.ns, "198.51.100.10", Some("10.0.3.100")),
        "eth2"
    );
    // EC2 moved it: the emulator has it on the standby's ENI only.
    let eni = w.lab.describe(&standby_eth2).unwrap();
    assert!(eni.ipv4s.contains(&"10.0.3.100".parse().unwrap()));
    let old = w.lab.describe(w.primary.eni_id("eth2").unwrap()).unwrap();
    assert!(
        !old.ipv4s.contains(&"10.0.3.100".parse().unwrap()),
        "{old:?}"
    );
    // Metadata confirms it later, and the old holder's metadata drops it.
    w.lab.sync(false).unwrap();
    lab_agent::wait_for(Duration::from_secs(15), || lists(&w.standby, "10.0.3.100"))
        .expect("standby metadata shows the address");
    assert!(!lists(&w.primary, "10.0.3.100"));
    assert_eq!(who(&w.client, "10.0.3.100").as_deref(), Some("standby"));
    drop(daemon);
}

/// The IPv6 lab: the subnet 10.0.3.0/24 of [`world`] gets an IPv6 /64 (a
/// block of the VPC's, as EC2 hands them out), the primary's eth2 holds
/// its own address and the floating one, the standby's eth2 its own, and
/// the client an IPv6 address of its own network behind the router.
struct World6 {
    w: World,
    floating: Ipv6Addr,
    standby_own: Ipv6Addr,
}

const CLIENT_V6: &str = "2001:db8:c::10";

fn world6() -> World6 {
    let w = world();
    let net = w.lab.subnet_ipv6("10.0.3.0/24").unwrap();
    let host = |n: u128| Ipv6Addr::from(u128::from(net.network()) + n);
    let (primary_own, standby_own, floating) = (host(0x10), host(0x20), host(0x100));
    w.lab
        .assign_ipv6(w.primary.eni_id("eth2").unwrap(), &[primary_own, floating])
        .unwrap();
    w.lab
        .assign_ipv6(w.standby.eni_id("eth2").unwrap(), &[standby_own])
        .unwrap();
    w.lab
        .vpc
        .client_ipv6(&w.client, format!("{CLIENT_V6}/64").parse().unwrap())
        .unwrap();
    World6 {
        w,
        floating,
        standby_own,
    }
}

#[test]
fn ipv6_takeover_moves_the_address_from_its_holder_and_routes_it_here() {
    if !need_root("ipv6_takeover_moves_the_address_from_its_holder_and_routes_it_here")
        || !need_moto("ipv6_takeover_moves_the_address_from_its_holder_and_routes_it_here")
    {
        return;
    }
    let World6 {
        w,
        floating,
        standby_own,
    } = world6();
    let ip = floating.to_string();
    let _servers = w.applied_and_serving();
    assert_eq!(who(&w.client, &ip).as_deref(), Some("primary"));
    let primary_eth2 = w.primary.eni_id("eth2").unwrap().to_string();
    let standby_eth2 = w.standby.eni_id("eth2").unwrap().to_string();

    let daemon = w.standby_daemon(true, &standby_own.to_string());

    w.lab.set_lag(Duration::from_secs(600));
    let o = takeover(&w, &["--ip", &ip]);
    succeeded(&o, &daemon);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("EC2 unassigned {ip} from {primary_eth2}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("EC2 assigned {ip} to {standby_eth2}")),
        "{out}"
    );
    assert!(out.contains("told the eniroute daemon"), "{out}");
    assert!(out.contains("is routed here"), "{out}");
    assert!(
        !lists(&w.standby, &ip),
        "metadata already showed the address; the test proves nothing"
    );
    // A real TCP connection over IPv6 reaches the standby, whose answer
    // leaves through eth2 (its table's default via the subnet's IPv6
    // router: eth0 has no IPv6 at all).
    assert_eq!(who(&w.client, &ip).as_deref(), Some("standby"));
    assert_eq!(common::dev_for(&w.standby.ns, CLIENT_V6, Some(&ip)), "eth2");
    let held = |id: &str| w.lab.describe(id).unwrap().ipv6s.contains(&floating);
    assert!(held(&standby_eth2));
    assert!(!held(&primary_eth2));

    // Metadata catches up; the old holder's agent then takes the address
    // off its link, and the client still reaches the standby.
    w.lab.sync(false).unwrap();
    lab_agent::wait_for(Duration::from_secs(15), || lists(&w.standby, &ip))
        .expect("standby metadata shows the address");
    assert!(!lists(&w.primary, &ip));
    assert!(w.primary.ns.ip(["-6", "addr"]).unwrap().contains(&ip));
    common::apply(&w.primary.ns, &w.primary.endpoint);
    let left = w.primary.ns.ip(["-6", "addr"]).unwrap();
    assert!(!left.contains(&ip), "{left}");
    assert_eq!(who(&w.client, &ip).as_deref(), Some("standby"));
    drop(daemon);
}

#[test]
fn ipv6_takeover_refusals_and_half_way() {
    if !need_root("ipv6_takeover_refusals_and_half_way")
        || !need_moto("ipv6_takeover_refusals_and_half_way")
    {
        return;
    }
    let World6 { w, floating, .. } = world6();
    let ip = floating.to_string();
    let _servers = w.applied_and_serving();
    let primary_eth2 = w.primary.eni_id("eth2").unwrap().to_string();
    let before = common::dumps(&w.standby.ns);
    let unchanged = |case: &str, o: &Output| {
        assert_eq!(common::dumps(&w.standby.ns), before, "{case}: {}", text(o));
        assert!(
            stderr(o).contains("nothing was changed"),
            "{case}: {}",
            text(o)
        );
    };

    // In no subnet of this instance: exit 2 before any API call.
    let o = takeover(&w, &["--ip", "2001:db8:ffff::1"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("2001:db8:ffff::1 is in none of this instance's subnets"),
        "{}",
        text(&o)
    );
    unchanged("outside every subnet", &o);
    assert_eq!(who(&w.client, &ip).as_deref(), Some("primary"));

    // EC2 has no reassignment for IPv6: the takeover unassigns the address
    // from its holder first, which --no-reassign forbids, so EC2 refuses the
    // assignment and the holder keeps it.
    let o = takeover(&w, &["--ip", &ip, "--no-reassign"]);
    assert_eq!(code(&o), Some(7), "{}", text(&o));
    assert!(
        stderr(&o).contains("InvalidIPAddress.InUse"),
        "{}",
        text(&o)
    );
    unchanged("held elsewhere, no reassignment", &o);
    assert_eq!(who(&w.client, &ip).as_deref(), Some("primary"));

    // Unassigned from the holder, then the assignment fails for good: no
    // ENI holds the address (nobody answers), exit 9, and running the same
    // takeover again finishes the move (no daemon: the command routes it).
    w.lab.inject(
        Some("AssignIpv6Addresses"),
        ApiFault::error(500, "InternalError", "An internal error has occurred"),
        None,
    );
    let o = takeover(&w, &["--ip", &ip]);
    w.lab.clear_faults();
    assert_eq!(code(&o), Some(9), "{}", text(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("was unassigned from {primary_eth2}")) && e.contains("no ENI holds it"),
        "{}",
        text(&o)
    );
    assert!(e.contains("run the same takeover again"), "{}", text(&o));
    assert_eq!(common::dumps(&w.standby.ns), before);
    assert_eq!(who(&w.client, &ip), None);
    let o = takeover(&w, &["--ip", &ip]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("unassigned"),
        "{}",
        text(&o)
    );
    assert_eq!(who(&w.client, &ip).as_deref(), Some("standby"));
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn ip_takeover_faults_exit_with_their_codes_and_change_nothing() {
    if !need_root("ip_takeover_faults_exit_with_their_codes_and_change_nothing")
        || !need_moto("ip_takeover_faults_exit_with_their_codes_and_change_nothing")
    {
        return;
    }
    let w = world();
    let _servers = w.applied_and_serving();
    let before = common::dumps(&w.standby.ns);
    let eth2 = w.standby.eni_id("eth2").unwrap().to_string();
    let unchanged = |case: &str, o: &Output| {
        assert_eq!(common::dumps(&w.standby.ns), before, "{case}: {}", text(o));
        assert_eq!(
            who(&w.client, "10.0.3.100").as_deref(),
            Some("primary"),
            "{case}"
        );
        let e = stderr(o);
        assert!(e.contains("nothing was changed"), "{case}: {e}");
        for secret in ["lab-role-secret", "lab-role-session-token"] {
            assert!(!e.contains(secret) && !String::from_utf8_lossy(&o.stdout).contains(secret));
        }
    };

    // Bad input: exit 2 before any API call.
    let o = takeover(&w, &["--ip", "10.0.9.5"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("10.0.9.5 is in none of this instance's subnets"),
        "{}",
        text(&o)
    );
    unchanged("address in no subnet", &o);
    let o = takeover(&w, &["--ip", "10.0.1.77", "--eni", &eth2]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("is not in the subnet of ENI"),
        "{}",
        text(&o)
    );
    unchanged("address outside the named ENI's subnet", &o);

    // The credentials endpoint fails, or serves expired credentials: exit 5.
    w.standby.sim.set_fault(
        Some("iam/security-credentials/"),
        Some(eniroute_lab::sim::Fault::Status(500)),
    );
    let o = takeover(&w, &["--ip", "10.0.3.100"]);
    w.standby
        .sim
        .set_fault(Some("iam/security-credentials/"), None);
    assert_eq!(code(&o), Some(5), "{}", text(&o));
    assert!(
        stderr(&o).contains("iam/security-credentials"),
        "{}",
        text(&o)
    );
    unchanged("credentials endpoint failing", &o);
    // The role's document says the role cannot be assumed (as IMDS does
    // when the instance profile's role trusts no EC2): exit 5 with EC2's
    // code, no secret printed.
    let role = format!("iam/security-credentials/{}", ec2_api::ROLE);
    w.standby.sim.set_fault(
        Some(&role),
        Some(eniroute_lab::sim::Fault::Body(
            r#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"EC2 cannot assume the role"}"#
                .into(),
        )),
    );
    let o = takeover(&w, &["--ip", "10.0.3.100"]);
    w.standby.sim.set_fault(Some(&role), None);
    assert_eq!(code(&o), Some(5), "{}", text(&o));
    assert!(
        stderr(&o).contains("AssumeRoleUnauthorizedAccess") && stderr(&o).contains(ec2_api::ROLE),
        "{}",
        text(&o)
    );
    unchanged("role not assumable", &o);
    w.lab
        .set_credentials(&w.standby, CredentialsState::Expired)
        .unwrap();
    let o = takeover(&w, &["--ip", "10.0.3.100"]);
    w.lab
        .set_credentials(&w.standby, CredentialsState::Valid)
        .unwrap();
    assert_eq!(code(&o), Some(5), "{}", text(&o));
    assert!(stderr(&o).contains("expired at"), "{}", text(&o));
    unchanged("expired credentials", &o);

    // EC2 refuses: permission (6), throttling through every retry (8), the
    // address held elsewhere when reassignment is not allowed (7).
    let assign = Some("AssignPrivateIpAddresses");
    w.lab.inject(
        assign,
        ApiFault::error(
            403,
            "UnauthorizedOperation",
            "You are not authorized to perform this operation.",
        ),
        Some(1),
    );
    let o = takeover(&w, &["--ip", "10.0.3.100"]);
    assert_eq!(code(&o), Some(6), "{}", text(&o));
    assert!(
        stderr(&o).contains("may not call ec2:AssignPrivateIpAddresses"),
        "{}",
        text(&o)
    );
    unchanged("permission denied", &o);
    w.lab.inject(
        assign,
        ApiFault::error(503, "RequestLimitExceeded", "Request limit exceeded."),
        None,
    );
    let o = takeover(&w, &["--ip", "10.0.3.100"]);
    w.lab.clear_faults();
    assert_eq!(code(&o), Some(8), "{}", text(&o));
    assert!(stderr(&o).contains("throttled"), "{}", text(&o));
    assert!(stderr(&o).contains("after 5 attempts"), "{}", text(&o));
    unchanged("throttled", &o);
    // EC2 refuses the values (4xx): exit 2, its code in the message.
    w.lab.inject(
        assign,
        ApiFault::error(
            400,
            "InvalidParameterValue",
            "Invalid value for PrivateIpAddress",
        ),
        Some(1),
    );
    let o = takeover(&w, &["--ip", "10.0.3.100"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("EC2 refused") && stderr(&o).contains("InvalidParameterValue"),
        "{}",
        text(&o)
    );
    unchanged("refused values", &o);
    // The connection ends without an answer: EC2 may have acted on the
    // request, so the message does not claim nothing changed, and the same
    // takeover finishes it. (The front dropped it before moto saw it.)
    w.lab.inject(assign, ApiFault::Drop, Some(1));
    let o = takeover(&w, &["--ip", "10.0.3.100"]);
    assert_eq!(code(&o), Some(1), "{}", text(&o));
    let e = stderr(&o);
    assert!(
        e.contains("AssignPrivateIpAddresses")
            && e.contains("may have made the change")
            && e.contains("run the same takeover again")
            && !e.contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(common::dumps(&w.standby.ns), before, "{}", text(&o));
    assert_eq!(who(&w.client, "10.0.3.100").as_deref(), Some("primary"));
    let o = takeover(&w, &["--ip", "10.0.3.100", "--no-reassign"]);
    assert_eq!(code(&o), Some(7), "{}", text(&o));
    assert!(stderr(&o).contains("PrivateIpAddressInUse"), "{}", text(&o));
    unchanged("in use without reassignment", &o);

    // Two server errors are retried; then it goes through. No daemon runs
    // on the standby: the command routes the address itself.
    w.lab.inject(
        assign,
        ApiFault::error(500, "InternalError", "An internal error has occurred"),
        Some(2),
    );
    let o = takeover(&w, &["--ip", "10.0.3.100"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("routed it directly"), "{out}");
    assert_eq!(who(&w.client, "10.0.3.100").as_deref(), Some("standby"));
    // Everything else in the standby is as it was: only the address and its
    // rule were added.
    let after = common::dumps(&w.standby.ns);
    let added: Vec<&str> = after.lines().filter(|l| !before.contains(l)).collect();
    assert!(
        added.iter().all(|l| l.contains("10.0.3.100")),
        "unexpected changes: {added:#?}"
    );
    let removed: Vec<&str> = before.lines().filter(|l| !after.contains(l)).collect();
    assert!(removed.is_empty(), "removed: {removed:#?}");
}

#[test]
fn eni_takeover_moves_the_eni_and_routes_it_before_metadata_shows_it() {
    if !need_root("eni_takeover_moves_the_eni_and_routes_it_before_metadata_shows_it")
        || !need_moto("eni_takeover_moves_the_eni_and_routes_it_before_metadata_shows_it")
    {
        return;
    }
    let w = world();
    let _servers = w.applied_and_serving();
    assert_eq!(who(&w.client, "10.0.2.50").as_deref(), Some("primary"));
    let daemon = w.standby_daemon(false, "10.0.3.20");
    let eni = w.primary.eni_id("eth1").unwrap().to_string();

    w.lab.set_lag(Duration::from_secs(600));
    let o = takeover(&w, &["--eni", &eni]);
    succeeded(&o, &daemon);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "EC2 detached {eni} from {}",
            w.primary.instance_id
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("EC2 attached {eni} to {}", w.standby.instance_id)),
        "{out}"
    );
    assert!(out.contains("is routed here"), "{out}");
    assert!(
        !lists(&w.standby, &eni),
        "metadata already showed the ENI; the test proves nothing"
    );
    assert_eq!(who(&w.client, "10.0.2.50").as_deref(), Some("standby"));
    assert_eq!(
        common::dev_for(&w.standby.ns, "198.51.100.10", Some("10.0.2.50")),
        "eth1"
    );
    let moved = w.lab.describe(&eni).unwrap();
    assert_eq!(
        moved.attachment.and_then(|a| a.instance_id).as_deref(),
        Some(w.standby.instance_id.as_str())
    );
    w.lab.sync(false).unwrap();
    lab_agent::wait_for(Duration::from_secs(15), || lists(&w.standby, &eni))
        .expect("standby metadata shows the ENI");
    assert!(!lists(&w.primary, &eni));
    assert_eq!(who(&w.client, "10.0.2.50").as_deref(), Some("standby"));
    drop(daemon);
}

#[test]
fn eni_takeover_carries_the_enis_ipv6_address() {
    if !need_root("eni_takeover_carries_the_enis_ipv6_address")
        || !need_moto("eni_takeover_carries_the_enis_ipv6_address")
    {
        return;
    }
    let World6 { w, .. } = world6();
    let net = w.lab.subnet_ipv6("10.0.2.0/24").unwrap();
    let service = Ipv6Addr::from(u128::from(net.network()) + 0x50).to_string();
    let eni = w.primary.eni_id("eth1").unwrap().to_string();
    w.lab
        .assign_ipv6(&eni, &[service.parse().unwrap()])
        .unwrap();
    let _servers = w.applied_and_serving();
    assert_eq!(who(&w.client, &service).as_deref(), Some("primary"));
    let daemon = w.standby_daemon(false, "10.0.3.20");

    w.lab.set_lag(Duration::from_secs(600));
    let o = takeover(&w, &["--eni", &eni]);
    succeeded(&o, &daemon);
    assert!(
        !lists(&w.standby, &eni),
        "metadata already showed the ENI; the test proves nothing"
    );
    // The claim carries the ENI's IPv6 address and its subnet's block
    // from EC2's answer: both families answer on the standby at once, and
    // the IPv6 answer leaves through the moved ENI's table.
    assert_eq!(
        who(&w.client, &service).as_deref(),
        Some("standby"),
        "daemon log:\n{}",
        daemon.log()
    );
    assert_eq!(who(&w.client, "10.0.2.50").as_deref(), Some("standby"));
    assert_eq!(
        common::dev_for(&w.standby.ns, CLIENT_V6, Some(&service)),
        "eth1"
    );
    w.lab.sync(false).unwrap();
    lab_agent::wait_for(Duration::from_secs(15), || lists(&w.standby, &eni))
        .expect("standby metadata shows the ENI");
    assert_eq!(who(&w.client, &service).as_deref(), Some("standby"));
    drop(daemon);
}

#[test]
fn eni_takeover_faults_half_way_and_other_zone() {
    if !need_root("eni_takeover_faults_half_way_and_other_zone")
        || !need_moto("eni_takeover_faults_half_way_and_other_zone")
    {
        return;
    }
    let w = world();
    common::apply(&w.primary.ns, &w.primary.endpoint);
    common::apply(&w.standby.ns, &w.standby.endpoint);
    let _s = named_server(&w.standby.ns, "standby");
    let before = common::dumps(&w.standby.ns);
    let eni = w.primary.eni_id("eth1").unwrap().to_string();

    // An ENI in another zone: refused before anything is detached.
    let far = w
        .lab
        .create_eni("eth5", "10.0.9.0/24", &["10.0.9.10"])
        .unwrap();
    let o = takeover(&w, &["--eni", &far]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("availability zone us-east-1b"),
        "{}",
        text(&o)
    );
    assert!(!w.lab.calls().iter().any(|c| c == "DetachNetworkInterface"));
    // No such ENI.
    let o = takeover(&w, &["--eni", "eni-0000000000000dead"]);
    assert_ne!(code(&o), Some(0), "{}", text(&o));
    assert_eq!(common::dumps(&w.standby.ns), before);

    // The role may not detach: exit 6 naming the action, and the ENI stays
    // where it is.
    w.lab.inject(
        Some("DetachNetworkInterface"),
        ApiFault::error(
            403,
            "UnauthorizedOperation",
            "You are not authorized to perform this operation.",
        ),
        Some(1),
    );
    let o = takeover(&w, &["--eni", &eni]);
    assert_eq!(code(&o), Some(6), "{}", text(&o));
    assert!(
        stderr(&o).contains("may not call ec2:DetachNetworkInterface")
            && stderr(&o).contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(common::dumps(&w.standby.ns), before);
    let still = w.lab.describe(&eni).unwrap();
    assert_eq!(
        still.attachment.and_then(|a| a.instance_id).as_deref(),
        Some(w.primary.instance_id.as_str())
    );
    assert!(!w.lab.calls().iter().any(|c| c == "AttachNetworkInterface"));

    // Detached, then the attach fails for good: exit 9, said plainly, and
    // the standby's routing is untouched.
    w.lab.inject(
        Some("AttachNetworkInterface"),
        ApiFault::error(500, "InternalError", "An internal error has occurred"),
        None,
    );
    let o = takeover(&w, &["--eni", &eni]);
    w.lab.clear_faults();
    assert_eq!(code(&o), Some(9), "{}", text(&o));
    assert!(stderr(&o).contains("attached nowhere"), "{}", text(&o));
    assert!(
        stderr(&o).contains("run the same takeover again"),
        "{}",
        text(&o)
    );
    assert_eq!(common::dumps(&w.standby.ns), before);
    let parked = w.lab.describe(&eni).unwrap();
    assert!(
        parked
            .attachment
            .as_ref()
            .is_none_or(|a| a.status == "detached"),
        "{parked:?}"
    );
    assert_eq!(who(&w.client, "10.0.2.50"), None);

    // Running it again finishes the move (no daemon: the command routes it).
    let o = takeover(&w, &["--eni", &eni]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("detached"),
        "{}",
        text(&o)
    );
    assert_eq!(who(&w.client, "10.0.2.50").as_deref(), Some("standby"));
}
