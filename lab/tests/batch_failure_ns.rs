//! Failures in the middle of a large batch of netlink changes, on the real
//! kernel. `apply` sends up to 64 changes before it reads the first answer;
//! these tests make the kernel refuse changes in the middle of such a
//! batch (15 ENIs, each with 50 IPv4 addresses and 4 delegated prefixes)
//! and check what a user sees: every refusal reported against the ENI and
//! the object that caused it, nothing before or after it lost or blamed
//! on it, and an ENI whose new table cannot be completed left routing
//! through its old one, whole.

mod common;

use std::collections::BTreeSet;

use common::*;
use eniroute_lab::bench::scale::{mac, tree, ScaleWorld};
use serde_json::json;

const ENIS: usize = 15;
/// The ENI whose changes the kernel refuses: in the middle of the batch.
const BAD: usize = 7;

/// ENI `i`'s n-th IPv4 address (the first is its primary).
fn v4(i: usize, n: usize) -> String {
    format!("10.0.{}.{}", i + 1, 10 + n)
}

/// ENI `i`'s n-th IPv6 address, as `ip` and the agent print it.
fn v6(i: usize, n: usize) -> String {
    format!("2001:db8:{:x}::{:x}", i + 1, 0x10 + n)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    errors: Vec<String>,
    all: String,
}

fn apply_run(w: &ScaleWorld) -> Run {
    let o = eniroute(&w.ns, &w.endpoint, &["-v", "apply"]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        errors: stderr
            .lines()
            .filter_map(|l| l.strip_prefix("error: "))
            .map(str::to_string)
            .collect(),
        all: text(&o),
    }
}

/// The addresses `ip` shows on `dev` (without prefix length).
fn addresses(w: &ScaleWorld, family: &str, dev: &str) -> BTreeSet<String> {
    w.ns.ip([family, "-o", "addr", "show", "dev", dev, "scope", "global"])
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            Some(words.next()?.split('/').next()?.to_string())
        })
        .collect()
}

/// The `from` selectors of the rules that look up `table`.
fn rule_sources(w: &ScaleWorld, family: &str, table: u32) -> BTreeSet<String> {
    w.ns.ip([family, "rule", "show", "table", &table.to_string()])
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "from")?;
            Some(words.next()?.to_string())
        })
        .collect()
}

fn expected_v4_sources(i: usize) -> BTreeSet<String> {
    (0..50)
        .map(|n| v4(i, n))
        .chain((0..4).map(|k| format!("10.0.{}.{}/28", i + 1, 128 + 16 * k)))
        .collect()
}

/// The address an error names in `RTM_NEWADDR for address ADDR/LEN dev …`.
fn address_named(error: &str) -> Option<String> {
    let rest = error.split("RTM_NEWADDR for address ").nth(1)?;
    Some(rest.split('/').next()?.to_string())
}

/// IPv6 is disabled on one ENI in the middle: the kernel refuses each of
/// its 50 IPv6 addresses and its IPv6 routes, a run of failures inside one
/// window of pipelined requests, followed at once by other ENIs' changes.
#[test]
fn refusals_mid_batch_are_each_reported_against_their_own_object() {
    if !need_root("refusals_mid_batch_are_each_reported_against_their_own_object") {
        return;
    }
    let w = ScaleWorld::build(ENIS).unwrap();
    w.sim.set_tree(tree(ENIS, 50, 4, 50).unwrap());
    let bad = format!("eth{BAD}");
    w.ns.sysctl(&format!("net.ipv6.conf.{bad}.disable_ipv6"), "1")
        .unwrap();

    let r = apply_run(&w);
    assert_eq!(r.code, Some(1), "{}", r.all);
    let prefix = format!("ENI eni-0{BAD:04x}scale ({bad}): ");
    // Every error is the bad ENI's, and names one object of its IPv6.
    let strays: Vec<&String> = r
        .errors
        .iter()
        .filter(|e| !e.starts_with(&prefix))
        .collect();
    assert!(strays.is_empty(), "errors blamed elsewhere: {strays:#?}");
    let refused: Vec<String> = r.errors.iter().filter_map(|e| address_named(e)).collect();
    let want: BTreeSet<String> = (0..50).map(|n| v6(BAD, n)).collect();
    assert_eq!(
        refused.iter().cloned().collect::<BTreeSet<_>>(),
        want,
        "{}",
        r.all
    );
    assert_eq!(
        refused.len(),
        50,
        "each address reported once: {refused:#?}"
    );
    let routes: Vec<&String> = r
        .errors
        .iter()
        .filter(|e| e.contains("RTM_NEWROUTE"))
        .collect();
    assert!(!routes.is_empty(), "{}", r.all);
    for e in &routes {
        assert!(
            e.contains(&format!("table 1000{BAD}"))
                && e.contains(&format!("dev {bad}"))
                && (e.contains("route default via fe80") || e.contains("route 2001:db8:")),
            "{e}"
        );
    }
    // Its IPv6 rules would send traffic to a table without its IPv6
    // routes: held back, each named.
    let held: BTreeSet<String> = sources_in(
        &r.errors,
        "not done: a route of its table failed",
        "+ rule -6 from ",
    );
    assert_eq!(held, want, "{}", r.all);
    assert_eq!(
        r.errors.len(),
        refused.len() + routes.len() + held.len(),
        "nothing else failed: {:#?}",
        r.errors
    );
    // What it printed as done is what the kernel has.
    assert!(
        !r.stdout.contains(&format!("2001:db8:{:x}::", BAD + 1)),
        "a refused change printed as done:\n{}",
        r.stdout
    );

    // Every other ENI, before and after the bad one in the batch, is
    // whole; the bad one has all of its IPv4.
    for i in 0..ENIS {
        let dev = format!("eth{i}");
        let table = 10000 + i as u32;
        let v4s: BTreeSet<String> = (0..50).map(|n| v4(i, n)).collect();
        assert_eq!(addresses(&w, "-4", &dev), v4s, "{dev}\n{}", r.all);
        assert_eq!(
            rule_sources(&w, "-4", table),
            expected_v4_sources(i),
            "{dev}"
        );
        let routes4 =
            w.ns.ip(["route", "show", "table", &table.to_string()])
                .unwrap();
        assert!(
            routes4.contains(&format!("default via 10.0.{}.1 dev {dev}", i + 1)),
            "{dev}: {routes4}"
        );
        if i == BAD {
            assert!(addresses(&w, "-6", &dev).is_empty(), "{dev}");
            assert!(rule_sources(&w, "-6", table).is_empty(), "{dev}");
        } else {
            let v6s: BTreeSet<String> = (0..50).map(|n| v6(i, n)).collect();
            assert_eq!(addresses(&w, "-6", &dev), v6s, "{dev}");
            let sources: BTreeSet<String> = rule_sources(&w, "-6", table);
            assert_eq!(sources, v6s, "{dev}");
        }
        // A reply from the ENI's address leaves through the ENI.
        assert_eq!(dev_for(&w.ns, "10.99.0.1", Some(&v4(i, 20))), dev);
    }

    // With IPv6 back, the next apply adds exactly what was refused.
    w.ns.sysctl(&format!("net.ipv6.conf.{bad}.disable_ipv6"), "0")
        .unwrap();
    let r = apply_run(&w);
    assert_eq!(r.code, Some(0), "{}", r.all);
    let added: BTreeSet<String> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("+ address "))
        .filter_map(|a| a.split('/').next().map(str::to_string))
        .collect();
    assert_eq!(added, want, "{}", r.stdout);
    for line in r.stdout.lines().filter(|l| l.starts_with(['+', '-', '~'])) {
        assert!(
            line.contains(&format!("2001:db8:{:x}:", BAD + 1))
                || line.contains(&format!("dev {bad} table 1000{BAD}")),
            "a change for another ENI: {line}\n{}",
            r.stdout
        );
    }
    assert_eq!(addresses(&w, "-6", &bad), want);
}

/// One ENI moves to another table (its device number changed) while a
/// stray route there makes its gateway invalid: the kernel refuses its
/// default route in the new table. Its sources keep looking up the old
/// table, which stays whole, so its traffic keeps flowing; every other
/// ENI's changes in the same batch go in; and once the stray route is
/// gone the move completes.
#[test]
fn an_eni_whose_new_table_is_refused_keeps_routing_through_its_old_one() {
    if !need_root("an_eni_whose_new_table_is_refused_keeps_routing_through_its_old_one") {
        return;
    }
    let w = ScaleWorld::build(ENIS).unwrap();
    w.sim.set_tree(tree(ENIS, 50, 4, 0).unwrap());
    let first = apply_run(&w);
    assert_eq!(first.code, Some(0), "{}", first.all);

    let bad = format!("eth{BAD}");
    let (old, new) = (10000 + BAD as u32, 10020u32);
    let gateway = format!("10.0.{}.1", BAD + 1);
    // The move, and after it in the batch a new secondary address on each
    // later ENI.
    w.sim.update(|t| {
        let macs = &mut t["network"]["interfaces"]["macs"];
        macs[mac(BAD).to_string()]["device-number"] = json!("20");
        for i in BAD + 1..ENIS {
            let m = &mut macs[mac(i).to_string()]["local-ipv4s"];
            let mut list: Vec<String> = (0..50).map(|n| v4(i, n)).collect();
            list.push(v4(i, 50));
            *m = json!(list);
        }
    });
    // Someone's stray route in the table the ENI moves to: a broadcast
    // route for its gateway makes the gateway invalid there.
    w.ns.ip([
        "route",
        "add",
        "broadcast",
        gateway.as_str(),
        "dev",
        bad.as_str(),
        "table",
        &new.to_string(),
    ])
    .unwrap();

    let r = apply_run(&w);
    assert_eq!(r.code, Some(1), "{}", r.all);
    let prefix = format!("ENI eni-0{BAD:04x}scale ({bad}): ");
    let strays: Vec<&String> = r
        .errors
        .iter()
        .filter(|e| !e.starts_with(&prefix))
        .collect();
    assert!(strays.is_empty(), "errors blamed elsewhere: {strays:#?}");
    let route_errors: Vec<&String> = r.errors.iter().filter(|e| e.contains("RTM_NEW")).collect();
    assert_eq!(route_errors.len(), 1, "{:#?}", r.errors);
    assert!(
        route_errors[0].contains(&format!(
            "RTM_NEWROUTE for route default via {gateway} dev {bad} table {new}"
        )),
        "{:#?}",
        r.errors
    );
    // Each source rule of the ENI: the move held back, the old rule kept,
    // both said.
    let sources = expected_v4_sources(BAD);
    let held: BTreeSet<String> = sources_in(
        &r.errors,
        "not done: a route of its table failed",
        "+ rule from ",
    );
    assert_eq!(held, sources, "{:#?}", r.errors);
    let kept: BTreeSet<String> = sources_in(&r.errors, "not done, kept in place", "- rule from ");
    assert_eq!(kept, sources, "{:#?}", r.errors);

    // The kernel: the ENI's sources still look up the old table, which
    // still has its routes; nothing looks up the new one.
    assert_eq!(rule_sources(&w, "-4", old), sources);
    assert!(rule_sources(&w, "-4", new).is_empty());
    let table =
        w.ns.ip(["route", "show", "table", &old.to_string()])
            .unwrap();
    assert!(
        table.contains(&format!("default via {gateway} dev {bad}")),
        "{table}"
    );
    let from = v4(BAD, 20);
    let got =
        eniroute_lab::route_get(&w.ns, "10.99.0.1".parse().unwrap(), from.parse().ok()).unwrap();
    assert!(
        got.dev == bad && got.raw.contains(&format!("via {gateway}")),
        "{}",
        got.raw
    );
    // The changes after it in the batch all went in.
    for i in BAD + 1..ENIS {
        let dev = format!("eth{i}");
        assert!(addresses(&w, "-4", &dev).contains(&v4(i, 50)), "{dev}");
        assert!(
            rule_sources(&w, "-4", 10000 + i as u32).contains(&v4(i, 50)),
            "{dev}"
        );
        assert!(r
            .stdout
            .contains(&format!("+ address {}/32 dev {dev}", v4(i, 50))));
    }

    // The stray route gone, the move completes.
    w.ns.ip([
        "route",
        "del",
        "broadcast",
        gateway.as_str(),
        "dev",
        bad.as_str(),
        "table",
        &new.to_string(),
    ])
    .unwrap();
    let r = apply_run(&w);
    assert_eq!(r.code, Some(0), "{}", r.all);
    assert_eq!(rule_sources(&w, "-4", new), sources);
    assert!(rule_sources(&w, "-4", old).is_empty());
    let table =
        w.ns.ip(["route", "show", "table", &old.to_string(), "proto", "233"])
            .unwrap();
    assert!(table.trim().is_empty(), "{table}");
    let got =
        eniroute_lab::route_get(&w.ns, "10.99.0.1".parse().unwrap(), from.parse().ok()).unwrap();
    assert!(
        got.dev == bad && got.raw.contains(&format!("via {gateway}")),
        "{}",
        got.raw
    );
}

/// The source addresses of the rules named in the errors that say `why`,
/// each written after `head` (`"+ rule from "`).
fn sources_in(errors: &[String], why: &str, head: &str) -> BTreeSet<String> {
    errors
        .iter()
        .filter(|e| e.contains(why))
        .filter_map(|e| e.split(head).nth(1)?.split(' ').next().map(str::to_string))
        .collect()
}
