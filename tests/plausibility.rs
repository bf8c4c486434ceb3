//! Issue 11, deliverable 1: metadata that cannot be true, or that would strip
//! an ENI bare on one read, is not applied. The ENI keeps what it has, one
//! warning names it, the key and the value, and `status` (the plan's ENI
//! summaries) says why.

use std::path::PathBuf;

use eniroute::config::Config;
use eniroute::imds::model::{EniState, Instance};
use eniroute::imds::{parse, tree};
use eniroute::plan::{plan, EniStatus, Plan};
use eniroute::reconcile::{diff, Current, Op, Ownership};
use eniroute::values::{KernelRoute, KernelRule, Link, LinkAddress};
use serde_json::Value;

const ETH1_MAC: &str = "0a:00:00:00:00:02";

fn fixture(name: &str) -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/imds/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn good_tree() -> Value {
    fixture("management-network")
}

/// Sets (or, with `Value::Null`, removes) one key of eth1's ENI.
fn with_eth1(key: &str, value: Value) -> Value {
    with_eth1_of(good_tree(), key, value)
}

fn with_eth1_of(mut t: Value, key: &str, value: Value) -> Value {
    let eni = &mut t["network"]["interfaces"]["macs"][ETH1_MAC];
    match value {
        Value::Null => {
            eni.as_object_mut().unwrap().remove(key);
        }
        v => eni[key] = v,
    }
    t
}

fn instance(t: &Value) -> Instance {
    parse::instance_from(|p| tree::lookup(t, p)).unwrap()
}

fn links() -> Vec<Link> {
    links_with(&[("10.0.2.20/24", true), ("10.0.2.21/32", true)])
}

/// eth0 with its DHCP address, eth1 (ifindex 3) with `eth1`.
fn links_with(eth1: &[(&str, bool)]) -> Vec<Link> {
    let link = |index, name: &str, mac: &str, addrs: &[(&str, bool)]| Link {
        index,
        name: name.into(),
        mac: Some(mac.parse().unwrap()),
        up: true,
        group: 0,
        mtu: 9001,
        addresses: addrs
            .iter()
            .map(|(a, owned)| LinkAddress {
                addr: a.parse().unwrap(),
                owned: *owned,
                valid_lft: None,
                proto: None,
            })
            .collect(),
    };
    vec![
        link(2, "eth0", "0a:00:00:00:00:01", &[("10.0.1.10/24", false)]),
        link(3, "eth1", ETH1_MAC, eth1),
    ]
}

/// The host as a reconcile of the good metadata leaves it.
fn converged() -> Current {
    converged_from(&good_tree(), links())
}

fn converged_from(good: &Value, links: Vec<Link>) -> Current {
    let cfg = Config::default();
    let good = plan(&instance(good), &links, &cfg);
    let own = Ownership::from(&cfg);
    Current {
        links,
        rules: good
            .rules
            .iter()
            .map(|r| KernelRule {
                rule: r.clone(),
                protocol: own.protocol,
                has_other_selectors: false,
                not_lookup: false,
            })
            .collect(),
        routes: good
            .routes
            .iter()
            .map(|r| KernelRoute {
                route: r.clone(),
                protocol: own.protocol,
                metric: 0,
            })
            .collect(),
        ..Current::default()
    }
}

/// What one reconcile from `p` would remove on eth1 (ifindex 3, table 10001).
fn removals_on_eth1(p: &Plan) -> Vec<Op> {
    removals_on_eth1_of(p, &converged())
}

fn removals_on_eth1_of(p: &Plan, current: &Current) -> Vec<Op> {
    let cfg = Config::default();
    diff(p, current, Ownership::from(&cfg))
        .into_iter()
        .filter(|op| match op {
            Op::DelAddress(a) => a.index == 3,
            Op::DelRoute(r) => r.oif == 3,
            Op::DelRule(r) => r.table == 10001,
            _ => false,
        })
        .collect()
}

fn eth1_status(p: &Plan) -> EniStatus {
    p.enis
        .iter()
        .find(|e| e.mac.to_string() == ETH1_MAC)
        .unwrap()
        .status
        .clone()
}

/// Asserts eth1's ENI is refused from this read with one warning naming the
/// ENI, the key and the value, nothing of it applied and nothing removed.
fn refused(t: &Value, key: &str, value: &str) {
    refused_on(t, &links(), &converged(), key, value)
}

fn refused_on(t: &Value, links: &[Link], current: &Current, key: &str, value: &str) {
    let p = plan(&instance(t), links, &Config::default());
    match eth1_status(&p) {
        EniStatus::Invalid(why) => assert!(
            why.contains("eni-0010aa") && why.contains(key) && why.contains(value),
            "{why}"
        ),
        other => panic!("{key}={value}: expected invalid metadata, got {other:?}"),
    }
    let named: Vec<String> = p
        .warnings
        .iter()
        .map(|w| w.to_string())
        .filter(|w| w.contains("eni-0010aa"))
        .collect();
    assert_eq!(named.len(), 1, "{:?}", p.warnings);
    assert!(named[0].contains(ETH1_MAC) && named[0].contains(value));
    assert!(
        p.addresses.iter().all(|a| a.index != 3),
        "{key}={value}: {:?}",
        p.addresses
    );
    assert!(p.routes.iter().all(|r| r.oif != 3), "{:?}", p.routes);
    assert_eq!(removals_on_eth1_of(&p, current), []);
}

#[test]
fn b_metadata_address_as_a_secondary_ip_is_refused() {
    let t = with_eth1(
        "local-ipv4s",
        serde_json::json!(["10.0.2.20", "169.254.169.254"]),
    );
    refused(&t, "local-ipv4s", "169.254.169.254");
}

#[test]
fn addresses_no_eni_can_have_are_refused() {
    for bad in [
        "127.0.0.1",
        "224.0.0.5",
        "255.255.255.255",
        "0.0.0.0",
        "10.0.2.255",
    ] {
        let t = with_eth1("local-ipv4s", serde_json::json!(["10.0.2.20", bad]));
        refused(&t, "local-ipv4s", bad);
    }
    let t = with_eth1("local-ipv4s", serde_json::json!(["169.254.1.1"]));
    refused(&t, "local-ipv4s", "169.254.1.1");
}

#[test]
fn c_implausible_subnets_are_refused() {
    for bad in ["10.0.2.5/24", "10.0.2.20/32", "0.0.0.0/0", "10.0.2.20/31"] {
        let t = with_eth1("subnet-ipv4-cidr-block", Value::String(bad.into()));
        refused(&t, "subnet-ipv4-cidr-block", bad);
    }
    // A subnet that does not hold the primary address.
    let t = with_eth1(
        "subnet-ipv4-cidr-block",
        Value::String("10.0.3.0/24".into()),
    );
    refused(&t, "local-ipv4s", "10.0.3.0/24");
}

#[test]
fn an_eni_address_equal_to_its_gateway_is_refused() {
    let t = with_eth1("local-ipv4s", serde_json::json!(["10.0.2.20", "10.0.2.1"]));
    refused(&t, "local-ipv4s", "10.0.2.1");
}

#[test]
fn k_a_prefix_of_everything_is_refused() {
    let t = with_eth1("ipv4-prefix", serde_json::json!(["0.0.0.0/0"]));
    refused(&t, "ipv4-prefix", "0.0.0.0/0");
    let t = with_eth1("ipv4-prefix", serde_json::json!(["10.0.2.36/28"]));
    refused(&t, "ipv4-prefix", "10.0.2.36/28");
    let t = with_eth1("ipv6-prefix", serde_json::json!(["::/0"]));
    refused(&t, "ipv6-prefix", "::/0");
}

#[test]
fn k_an_address_listed_on_two_enis_applies_to_neither() {
    let mut t = good_tree();
    t["network"]["interfaces"]["macs"]["0a:00:00:00:00:01"]["local-ipv4s"] =
        serde_json::json!(["10.0.1.10", "10.0.2.21"]);
    let inst = instance(&t);
    let p = plan(&inst, &links(), &Config::default());
    for e in &p.enis {
        match &e.status {
            EniStatus::Invalid(why) => assert!(
                why.contains("local-ipv4s") && why.contains("10.0.2.21") && why.contains("also"),
                "{why}"
            ),
            other => panic!("{}: expected invalid metadata, got {other:?}", e.mac),
        }
    }
    assert!(p.addresses.is_empty(), "{:?}", p.addresses);
    assert!(p.rules.is_empty(), "{:?}", p.rules);
    assert_eq!(removals_on_eth1(&p), []);
    // The same address as a prefix member counts too.
    let mut t = good_tree();
    t["network"]["interfaces"]["macs"]["0a:00:00:00:00:01"]["ipv4-prefix"] =
        serde_json::json!(["10.0.2.16/28"]);
    let inst = instance(&t);
    assert!(inst
        .enis
        .iter()
        .all(|e| matches!(e, EniState::Invalid { .. })));
}

#[test]
fn a_one_read_empty_or_absent_address_list_is_held_until_a_second_read_confirms() {
    for bare in [serde_json::json!([]), Value::Null] {
        let t = with_eth1("local-ipv4s", bare);
        let first = instance(&t);
        let p = plan(&first, &links(), &Config::default());
        match eth1_status(&p) {
            EniStatus::NotReady(why) => assert!(
                why.contains("eni-0010aa") && why.contains("local-ipv4s") && why.contains("empty"),
                "{why}"
            ),
            other => panic!("expected held, got {other:?}"),
        }
        assert!(p
            .warnings
            .iter()
            .any(|w| w.to_string().contains("eni-0010aa")));
        assert_eq!(removals_on_eth1(&p), [], "one bare read removes nothing");

        // A good read in between: nothing to confirm.
        let mut again = instance(&t);
        again.confirm_bare(Some(&instance(&good_tree())));
        assert!(again.confirmed_bare.is_empty());
        let p = plan(&again, &links(), &Config::default());
        assert_eq!(removals_on_eth1(&p), []);

        // Two reads in a row agree: the removal is genuine and applied.
        let mut second = instance(&t);
        second.confirm_bare(Some(&first));
        let p = plan(&second, &links(), &Config::default());
        assert_eq!(eth1_status(&p), EniStatus::Managed);
        let removed = removals_on_eth1(&p);
        assert!(
            removed.iter().any(|op| matches!(op, Op::DelAddress(_))),
            "{removed:?}"
        );
    }
}

#[test]
fn a_bare_eni_on_a_link_that_is_down_or_empty_is_not_held() {
    let t = with_eth1("local-ipv4s", serde_json::json!([]));
    let mut l = links();
    l[1].addresses.clear();
    let p = plan(&instance(&t), &l, &Config::default());
    assert_eq!(eth1_status(&p), EniStatus::Managed);
    let mut l = links();
    l[1].up = false;
    let p = plan(&instance(&t), &l, &Config::default());
    assert_eq!(eth1_status(&p), EniStatus::Managed);
}

#[test]
fn consistent_metadata_is_applied_as_before() {
    let p = plan(&instance(&good_tree()), &links(), &Config::default());
    assert!(p.enis.iter().all(|e| e.status == EniStatus::Managed));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

// IPv6: the same rules. eth1 of `ipv6-only` has 2600:1f18:aaaa:bb02::20
// (which eniroute added), a delegated /80 and the subnet 2600:…:bb02::/64.

fn v6_links() -> Vec<Link> {
    links_with(&[("2600:1f18:aaaa:bb02::20/128", true), ("fe80::1/64", false)])
}

fn v6_refused(key: &str, value: Value, shown: &str) {
    let t = with_eth1_of(fixture("ipv6-only"), key, value);
    let current = converged_from(&fixture("ipv6-only"), v6_links());
    refused_on(&t, &v6_links(), &current, key, shown);
}

#[test]
fn ipv6_addresses_no_eni_can_have_are_refused() {
    for bad in [
        "fe80::20",
        "febf::1",
        "::1",
        "::",
        "ff02::1",
        "::ffff:10.0.2.20",
        "fd00:ec2::254",
        "fd00:ec2::253",
    ] {
        v6_refused("ipv6s", serde_json::json!([bad]), bad);
    }
    // An address from outside the ENI's subnet.
    v6_refused(
        "ipv6s",
        serde_json::json!(["2600:1f18:aaaa:bb02::20", "2600:1f18:aaaa:bb09::20"]),
        "2600:1f18:aaaa:bb09::20",
    );
}

#[test]
fn implausible_ipv6_subnets_and_prefixes_are_refused() {
    for bad in [
        "2600:1f18:aaaa:bb02::5/64",
        "::/0",
        "fe80::/64",
        "2600:1f18:aaaa:bb02::20/128",
    ] {
        v6_refused("subnet-ipv6-cidr-blocks", serde_json::json!([bad]), bad);
    }
    // A subnet that does not hold the ENI's address.
    v6_refused(
        "subnet-ipv6-cidr-blocks",
        serde_json::json!(["2600:1f18:aaaa:bb09::/64"]),
        "2600:1f18:aaaa:bb02::20",
    );
    for bad in [
        "::/0",
        "2600:1f18:aaaa:bb02:1::5/80",
        "ff00::/80",
        "2600:1f18:aaaa:bb09:1::/80",
    ] {
        v6_refused("ipv6-prefix", serde_json::json!([bad]), bad);
    }
}

#[test]
fn an_ipv6_address_listed_on_two_enis_applies_to_neither() {
    let mut t = fixture("ipv6-only");
    let eth0 = &mut t["network"]["interfaces"]["macs"]["0a:00:00:00:00:01"];
    eth0["ipv6s"] = serde_json::json!(["2600:1f18:aaaa:bb02::20"]);
    eth0["subnet-ipv6-cidr-blocks"] = serde_json::json!(["2600:1f18:aaaa:bb02::/64"]);
    let p = plan(&instance(&t), &v6_links(), &Config::default());
    for e in &p.enis {
        match &e.status {
            EniStatus::Invalid(why) => assert!(
                why.contains("ipv6s")
                    && why.contains("2600:1f18:aaaa:bb02::20")
                    && why.contains("also"),
                "{why}"
            ),
            other => panic!("{}: expected invalid metadata, got {other:?}", e.mac),
        }
    }
    let current = converged_from(&fixture("ipv6-only"), v6_links());
    assert_eq!(removals_on_eth1_of(&p, &current), []);
}

#[test]
fn a_one_read_empty_or_absent_ipv6_list_is_held_until_a_second_read_confirms() {
    let good = fixture("ipv6-only");
    let current = converged_from(&good, v6_links());
    for bare in [serde_json::json!([]), Value::Null] {
        let t = with_eth1_of(good.clone(), "ipv6s", bare);
        let first = instance(&t);
        let p = plan(&first, &v6_links(), &Config::default());
        match eth1_status(&p) {
            EniStatus::NotReady(why) => assert!(
                why.contains("eni-0010aa") && why.contains("key ipv6s") && why.contains("empty"),
                "{why}"
            ),
            other => panic!("expected held, got {other:?}"),
        }
        let named: Vec<String> = p
            .warnings
            .iter()
            .map(|w| w.to_string())
            .filter(|w| w.contains("eni-0010aa"))
            .collect();
        assert_eq!(named.len(), 1, "{:?}", p.warnings);
        assert_eq!(
            removals_on_eth1_of(&p, &current),
            [],
            "one bare read removes nothing"
        );

        // A good read in between: nothing to confirm.
        let mut again = instance(&t);
        again.confirm_bare(Some(&instance(&good)));
        assert!(again.confirmed_bare_v6.is_empty());
        let p = plan(&again, &v6_links(), &Config::default());
        assert_eq!(removals_on_eth1_of(&p, &current), []);

        // Two reads agree: the IPv6 address and its rule and routes go.
        let mut second = instance(&t);
        second.confirm_bare(Some(&first));
        let p = plan(&second, &v6_links(), &Config::default());
        assert_eq!(eth1_status(&p), EniStatus::Managed);
        let removed = removals_on_eth1_of(&p, &current);
        assert!(
            removed.iter().any(|op| matches!(op, Op::DelAddress(_)))
                && removed.iter().any(|op| matches!(op, Op::DelRule(_))),
            "{removed:?}"
        );
    }
}

#[test]
fn an_eni_with_only_link_local_ipv6_is_not_held() {
    // A dual-stack subnet, an ENI with no IPv6 address: nothing to strip.
    let t = with_eth1_of(fixture("ipv6-only"), "ipv6s", serde_json::json!([]));
    let l = links_with(&[("fe80::1/64", false)]);
    let p = plan(&instance(&t), &l, &Config::default());
    assert_eq!(eth1_status(&p), EniStatus::Managed);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn consistent_ipv6_metadata_is_applied_as_before() {
    let p = plan(
        &instance(&fixture("ipv6-only")),
        &v6_links(),
        &Config::default(),
    );
    assert!(p.enis.iter().all(|e| e.status == EniStatus::Managed));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}
