//! The command line as a user meets it: what it prints and how it exits.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use eniroute_lab::sim::{Fault, Simulator};
use eniroute_lab::Netns;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/imds/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A namespace whose two links carry the management-network fixture's MACs,
/// and the simulator serving that fixture on the namespace's loopback.
fn fixture_host() -> (Netns, Simulator) {
    let ns = Netns::create("plan").unwrap();
    ns.ip([
        "link",
        "add",
        "eth0",
        "address",
        "0a:00:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "eth1",
        "address",
        "0a:00:00:00:00:02",
    ])
    .unwrap();
    ns.ip(["link", "set", "eth0", "up"]).unwrap();
    ns.ip(["addr", "add", "10.0.1.10/24", "dev", "eth0"])
        .unwrap();
    let listener = ns
        .run_in(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let sim = Simulator::serve(listener, fixture("management-network")).unwrap();
    (ns, sim)
}

fn has_rule(v: &Value, from: &str, table: u64) -> bool {
    v["rules"].as_array().unwrap().iter().any(|r| {
        r["from"] == from && r["table"] == table && r["priority"] == table && r["family"] == "ipv4"
    })
}

fn has_route(v: &Value, table: u64, dst: &str, gateway: Option<&str>, dev: &str) -> bool {
    v["routes"].as_array().unwrap().iter().any(|r| {
        r["table"] == table
            && r["dst"] == dst
            && r["dev"] == dev
            && r.get("gateway").and_then(Value::as_str) == gateway
    })
}

#[test]
fn plan_json_lists_rules_routes_and_changes() {
    if !need_root("plan_json_lists_rules_routes_and_changes") {
        return;
    }
    let (ns, sim) = fixture_host();
    let o = eniroute(&ns, &sim.endpoint(), &["plan", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(has_rule(&v, "10.0.2.20/32", 10001), "{v:#}");
    assert!(has_rule(&v, "10.0.2.21/32", 10001), "{v:#}");
    assert!(has_rule(&v, "10.0.1.10/32", 10000), "{v:#}");
    assert!(has_route(&v, 10001, "10.0.2.0/24", None, "eth1"), "{v:#}");
    assert!(
        has_route(&v, 10001, "0.0.0.0/0", Some("10.0.2.1"), "eth1"),
        "{v:#}"
    );
    let addrs = v["addresses"].as_array().unwrap();
    assert!(addrs
        .iter()
        .any(|a| a["dev"] == "eth1" && a["address"] == "10.0.2.21/32"));
    let changes: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        changes.contains(&"+ rule from 10.0.2.20 lookup 10001 priority 10001"),
        "{changes:?}"
    );
    // plan changes nothing.
    assert!(!ns.ip(["rule"]).unwrap().contains("10001"));

    let human = eniroute(&ns, &sim.endpoint(), &["plan"]);
    let out = String::from_utf8_lossy(&human.stdout);
    assert!(
        out.contains("+ rule from 10.0.2.21 lookup 10001 priority 10001"),
        "{out}"
    );
}

#[test]
fn plan_with_metadata_down_exits_1_with_the_cause() {
    if !need_root("plan_with_metadata_down_exits_1_with_the_cause") {
        return;
    }
    let (ns, sim) = fixture_host();
    sim.set_fault(None, Some(Fault::Status(500)));
    let start = Instant::now();
    let o = eniroute(&ns, &sim.endpoint(), &["plan", "--json"]);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(o.stdout.is_empty(), "no plan may be printed: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&sim.endpoint()) && err.contains("HTTP 500"),
        "{err}"
    );
}

fn run_local(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn temp_config(name: &str, body: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("eniroute-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn check_config_names_file_and_line_and_exits_2() {
    let p = temp_config("bad", "[numbering]\ntable_base = 10000\n\n[[eni]]\nmatch = { name = \"eth1\" }\nmain_routes = [{ dst = \"10.9.0.0/33\" }]\n");
    let o = run_local(&["check-config", "--config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:6:", p.display())), "{err}");
    let good = temp_config(
        "good",
        "[[eni]]\nmatch = { name = \"eth1\" }\nforwarding = true\n",
    );
    let o = run_local(&["check-config", "--config", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let _ = std::fs::remove_file(p);
    let _ = std::fs::remove_file(good);
}

#[test]
fn config_show_prints_the_effective_configuration() {
    let p = temp_config("show", "[metadata]\nvolatile_refresh_secs = 2\n");
    let o = run_local(&["config", "show", "--config", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("volatile_refresh_secs = 2"), "{shown}");
    assert!(shown.contains("table_base = 10000"), "{shown}");
    let back = eniroute::config::parse(&shown, std::path::Path::new("shown")).unwrap();
    assert_eq!(back.metadata.volatile_refresh_secs, 2);
    let _ = std::fs::remove_file(p);
}

#[test]
fn a_missing_explicit_config_is_an_error() {
    let o = run_local(&["plan", "--config", "/nonexistent/eniroute.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/eniroute.toml"));
}

/// Runs the agent, killing it if it has not finished within `limit`: a
/// reader that blocks must fail the test, not hang it.
fn run_bounded(args: &[&str], limit: std::time::Duration) -> Option<std::process::Output> {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

/// Issue 11 D: a FIFO, a symlink to /dev/zero or an oversized file as the
/// configuration is refused at once with a message saying why, never read
/// until something writes or memory runs out.
#[test]
fn check_config_refuses_what_is_not_a_regular_file_of_bounded_size() {
    let dir = std::env::temp_dir().join(format!("eniroute-cli-{}-special", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let zero = dir.join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let big = dir.join("big.toml");
    // Valid TOML all the way (comments), only too large.
    std::fs::write(&big, "# padding\n".repeat(200_000)).unwrap();
    for (path, why) in [(&fifo, "FIFO"), (&zero, "device"), (&big, "larger than")] {
        let o = run_bounded(
            &["check-config", "--config", path.to_str().unwrap()],
            std::time::Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("check-config on {} did not return", path.display()));
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&path.display().to_string()) && err.contains(why),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
