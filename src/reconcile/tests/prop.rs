//! Property: for any plausible topology (ENI count, cards and device
//! numbers, subnets, secondary addresses, delegated prefixes, IPv6, links up
//! or down, with or without a DHCP address, a foreign link), one reconcile
//! on the in-memory host leaves nothing to do: plan → apply → read back →
//! plan is empty, and a second reconcile writes nothing.
//!
//! The topologies come from a small seeded generator rather than a
//! property-testing crate: what is generated is a metadata tree, which
//! needs coordinated values (addresses inside their subnet, unique device
//! numbers), and a failure prints its seed and tree for replay with
//! `PROP_SEED=<seed> PROP_CASES=1`.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{json, Map, Value};

use super::*;

/// xorshift64*: deterministic, and enough for choosing topologies.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// In `lo..=hi`.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }
    fn chance(&mut self, percent: u32) -> bool {
        self.range(1, 100) <= percent
    }
}

/// One generated instance: its metadata tree and the host's links.
struct Topology {
    tree: Value,
    links: Vec<Link>,
}

fn topology(rng: &mut Rng) -> Topology {
    let count = rng.range(1, 6);
    let mut used_keys = BTreeSet::new();
    let mut macs = Map::new();
    let mut links = Vec::new();
    for i in 0..count {
        let mac = format!("0a:00:00:00:00:{:02x}", i + 1);
        // The primary ENI is card 0, device 0; the others anywhere else.
        let (card, device) = if i == 0 {
            (0, 0)
        } else {
            loop {
                let key = (if rng.chance(20) { 1 } else { 0 }, rng.range(0, 15));
                if key != (0, 0) && used_keys.insert(key) {
                    break key;
                }
            }
        };
        used_keys.insert((card, device));
        // A subnet of its own: 10.<i+1>.0.0 with a /20 to /27 prefix.
        let prefix = rng.range(20, 27);
        let size = 1u32 << (32 - prefix);
        let base = u32::from(Ipv4Addr::new(10, i as u8 + 1, 0, 0));
        let subnet = format!("{}/{prefix}", Ipv4Addr::from(base));
        // EC2 keeps the first four and the last address of a subnet.
        let mut hosts = BTreeSet::new();
        let wanted = 1 + rng.range(0, 4);
        while hosts.len() < wanted as usize {
            hosts.insert(base + rng.range(4, size - 2));
        }
        let mut ipv4s: Vec<String> = hosts
            .iter()
            .map(|h| Ipv4Addr::from(*h).to_string())
            .collect();
        // The primary first, the rest in metadata's (arbitrary) order.
        let primary = ipv4s.remove(rng.range(0, ipv4s.len() as u32 - 1) as usize);
        ipv4s.insert(0, primary.clone());
        let mut eni = json!({
            "device-number": device.to_string(),
            "interface-id": format!("eni-{i:04}aa"),
            "subnet-id": format!("subnet-{i}"),
            "local-ipv4s": ipv4s,
            "subnet-ipv4-cidr-block": subnet,
        });
        if card > 0 || rng.chance(30) {
            eni["network-card"] = json!(card.to_string());
        }
        if i > 0 && rng.chance(25) {
            // An ENI of a second VPC, whose CIDR does not overlap.
            eni["vpc-id"] = json!(format!("vpc-{i}"));
            eni["vpc-ipv4-cidr-blocks"] = json!([subnet, format!("172.{}.0.0/16", 16 + i)]);
        } else {
            eni["vpc-id"] = json!("vpc-1");
            eni["vpc-ipv4-cidr-blocks"] = json!(["10.0.0.0/8"]);
        }
        // Delegated /28 prefixes: aligned blocks that hold none of the
        // addresses.
        if size >= 64 && rng.chance(30) {
            let mut prefixes = Vec::new();
            for _ in 0..rng.range(1, 2) {
                let block = base + 16 * rng.range(1, size / 16 - 2);
                let clash = hosts.iter().any(|h| (block..block + 16).contains(h));
                let p = format!("{}/28", Ipv4Addr::from(block));
                if !clash && !prefixes.contains(&p) {
                    prefixes.push(p);
                }
            }
            if !prefixes.is_empty() {
                eni["ipv4-prefix"] = json!(prefixes);
            }
        }
        let mut v6 = Vec::new();
        if rng.chance(40) {
            let net = Ipv6Addr::new(0x2600, 0x1f18, 0xaaaa, i as u16 + 1, 0, 0, 0, 0);
            eni["subnet-ipv6-cidr-blocks"] = json!([format!("{net}/64")]);
            eni["vpc-ipv6-cidr-blocks"] = json!(["2600:1f18:aaaa::/56"]);
            let mut addrs = BTreeSet::new();
            for _ in 0..rng.range(1, 3) {
                let mut seg = net.segments();
                seg[7] = rng.range(0x10, 0xfff0) as u16;
                addrs.insert(Ipv6Addr::from(seg).to_string());
            }
            v6 = addrs.into_iter().collect();
            eni["ipv6s"] = json!(v6);
            if rng.chance(30) {
                let mut seg = net.segments();
                seg[4] = 1;
                eni["ipv6-prefix"] = json!([format!("{}/80", Ipv6Addr::from(seg))]);
            }
        }
        macs.insert(mac.clone(), eni);

        // The link: the primary as DHCP leaves it; others bare, or with
        // their primary from DHCP; some still down, as a hot-plugged NIC.
        let mut addresses = Vec::new();
        if i == 0 || rng.chance(30) {
            addresses.push(LinkAddress {
                addr: format!("{primary}/{prefix}").parse().unwrap(),
                owned: false,
                // A DHCP lease.
                valid_lft: Some(3600),
                proto: None,
            });
        }
        if !v6.is_empty() && rng.chance(30) {
            addresses.push(LinkAddress {
                addr: format!("{}/128", v6[0]).parse().unwrap(),
                owned: false,
                valid_lft: Some(3600),
                proto: None,
            });
        }
        links.push(Link {
            index: 2 + i,
            name: format!("eth{i}"),
            mac: Some(mac.parse().unwrap()),
            up: i == 0 || rng.chance(70),
            group: 0,
            mtu: 9001,
            addresses,
        });
    }
    if rng.chance(30) {
        // A bridge that is nobody's ENI.
        links.push(Link {
            index: 50,
            name: "docker0".into(),
            mac: Some("02:42:00:00:00:01".parse().unwrap()),
            up: true,
            group: 0,
            mtu: 1500,
            addresses: vec![LinkAddress {
                addr: "172.17.0.1/16".parse().unwrap(),
                owned: false,
                valid_lft: None,
                proto: None,
            }],
        });
    }
    let tree = json!({
        "mac": "0a:00:00:00:00:01",
        "instance-id": "i-0prop",
        "network": {"interfaces": {"macs": macs}},
    });
    Topology { tree, links }
}

fn records_in(dir: &std::path::Path) -> crate::state::AddressRecords {
    let _ = std::fs::remove_dir_all(dir);
    crate::state::AddressRecords::load(dir)
}

#[test]
fn any_topology_converges_in_one_reconcile() {
    let cases: u64 = std::env::var("PROP_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let first: u64 = std::env::var("PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let dir = std::env::temp_dir().join(format!("eniroute-prop-{}", std::process::id()));
    let cfg = Config::default();
    let (mut enis, mut ops) = (0, 0);
    for seed in first..first + cases {
        let t = topology(&mut Rng::new(seed));
        let why = |what: &str| {
            format!(
                "seed {seed}: {what}\n{}",
                serde_json::to_string_pretty(&t.tree).unwrap()
            )
        };
        let inst = parse::instance_from(|p| tree::lookup(&t.tree, p)).unwrap();
        let k = FakeKernel::default();
        *k.links.borrow_mut() = t.links.clone();
        let mut rec = records_in(&dir);

        let out = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert!(
            out.applied.errors.is_empty(),
            "{}",
            why(&format!("{:?}", out.applied.errors))
        );
        // Every ENI was plausible and had a link: all of it was planned.
        for e in &out.plan.enis {
            assert_eq!(e.status, EniStatus::Managed, "{}", why(&format!("{e:?}")));
        }
        enis += out.plan.enis.len();
        ops += out.applied.ops.len();

        let again = planned(&k, &inst, &cfg, &rec);
        assert!(
            again.changes.is_empty(),
            "{}",
            why(&format!("left to do: {:#?}", again.changes))
        );
        assert_eq!(
            again.plan,
            out.plan,
            "{}",
            why("the plan changed after applying it")
        );
        let second = block_on(reconcile(&k, &inst, &cfg, &mut rec)).unwrap();
        assert_eq!(
            second.applied.writes,
            0,
            "{}",
            why(&format!("{:?}", second.applied.ops))
        );
        // What the plan says is what the host has.
        let rules = k.rules.borrow();
        for r in &out.plan.rules {
            assert!(
                rules.iter().any(|k| &k.rule == r && k.protocol == PROTO),
                "{}",
                why(&r.to_string())
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{cases} topologies from seed {first}: {enis} ENIs, {ops} changes applied, each converged in one reconcile");
}
