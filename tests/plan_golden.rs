//! Golden tests for the pure plan: metadata trees in, desired state out.
//! Set `UPDATE_GOLDEN=1` to rewrite the expected files after a deliberate
//! change, then review the diff.

use std::path::PathBuf;

use eniroute::config::Config;
use eniroute::imds::{parse, tree};
use eniroute::plan::plan;
use eniroute::values::{Link, LinkAddress};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The links such an instance would have: one per MAC, named eth0.. in
/// listing order, with the primary ENI's address as DHCP leaves it.
fn links_for(tree: &serde_json::Value) -> Vec<Link> {
    let instance = parse::instance_from(|p| tree::lookup(tree, p)).unwrap();
    instance
        .enis
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut addresses = Vec::new();
            if let eniroute::imds::model::EniState::Ready(eni) = e {
                if eni.mac == instance.primary_mac {
                    let net = format!(
                        "{}/{}",
                        eni.primary_ipv4().unwrap(),
                        eni.subnet_v4.unwrap().prefix_len()
                    );
                    addresses.push(LinkAddress {
                        addr: net.parse().unwrap(),
                        owned: false,
                        valid_lft: None,
                        proto: None,
                    });
                }
            }
            Link {
                index: i as u32 + 2,
                name: format!("eth{i}"),
                mac: Some(e.mac()),
                up: i == 0,
                group: 0,
                mtu: 9001,
                addresses,
            }
        })
        .collect()
}

fn golden(name: &str) {
    let text = std::fs::read_to_string(fixtures().join(format!("imds/{name}.json"))).unwrap();
    let tree: serde_json::Value = serde_json::from_str(&text).unwrap();
    let instance = parse::instance_from(|p| tree::lookup(&tree, p)).unwrap();
    let links = links_for(&tree);
    let out = plan(&instance, &links, &Config::default()).to_string();
    let path = fixtures().join(format!("plan/{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(out, want, "plan for {name} differs from {}", path.display());
    // Deterministic: the same input gives byte-identical output.
    assert_eq!(out, plan(&instance, &links, &Config::default()).to_string());
}

macro_rules! golden_tests {
    ($($fn:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $fn() { golden($name); })*
    };
}

golden_tests! {
    single_eni => "single-eni",
    management_network => "management-network",
    three_enis => "three-enis",
    cross_vpc => "cross-vpc",
    two_cards => "two-cards",
    many_addresses => "many-addresses",
    ipv6_only => "ipv6-only",
    efa_only => "efa-only",
    garbage_value => "garbage-value",
}
