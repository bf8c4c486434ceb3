//! The convergence property on the real kernel: a handful of random
//! instances (two to four ENIs, random device numbers, subnets and
//! secondary addresses, sometimes a delegated prefix) in network namespaces.
//! After one `eniroute apply`, `plan` has nothing left to do, a second
//! `apply` changes nothing, and the admin host reaches every address
//! through its own ENI. The same property over hundreds of topologies, on
//! the in-memory host, is `reconcile::tests::prop`.

mod common;

use common::*;
use eniroute_lab::world::{self, EniPlan};
use eniroute_lab::Vpc;

/// xorshift64*, seeded: each topology is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        lo + (r % u64::from(hi - lo + 1)) as u32
    }
}

fn topology(seed: u64) -> Vec<EniPlan> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut plans = vec![EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"]).unwrap()];
    let mut devices = vec![0];
    for i in 1..=rng.range(1, 3) {
        let device = loop {
            let d = rng.range(1, 9);
            if !devices.contains(&d) {
                devices.push(d);
                break d;
            }
        };
        let mut hosts: Vec<u32> = Vec::new();
        while hosts.len() < rng.range(1, 4) as usize {
            let h = rng.range(4, 250);
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        let ips: Vec<String> = hosts
            .iter()
            .map(|h| format!("10.0.{}.{h}", 10 + i))
            .collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let subnet = format!("10.0.{}.0/24", 10 + i);
        plans.push(EniPlan::new(&format!("eth{i}"), device, &subnet, &ips).unwrap());
    }
    plans
}

#[test]
fn random_topologies_converge_in_one_apply() {
    if !need_root("random_topologies_converge_in_one_apply") {
        return;
    }
    for seed in 1..=4u64 {
        let plans = topology(seed);
        let vpc = Vpc::new().unwrap();
        let inst = world::instance(&vpc, 1, &plans).unwrap();
        let admin = vpc.client("admin", "10.9.0.5/24".parse().unwrap()).unwrap();
        let mut delegated = None;
        if seed % 2 == 0 {
            // A delegated prefix on the last ENI, in a block none of its
            // addresses use (and not the first, which holds the subnet's
            // reserved addresses).
            let (eni, meta) = inst.enis.last().unwrap();
            let free = (1..15u8).find(|b| {
                meta.ipv4s
                    .iter()
                    .all(|a| !(b * 16..b * 16 + 16).contains(&a.octets()[3]))
            });
            let mac = meta.mac.to_string();
            if let Some(block) = free {
                let net = eni.subnet().addr().octets()[2];
                let prefix = format!("10.0.{net}.{}/28", block * 16);
                inst.sim.update(|t| {
                    t["network"]["interfaces"]["macs"][&mac]["ipv4-prefix"] =
                        serde_json::json!([prefix]);
                });
                delegated = Some(format!("from {prefix} lookup {}", world::table_of(meta)));
            }
        }
        let ns = &inst.ns;
        let _ssh = server(ns, 22);
        let shown: Vec<String> = plans
            .iter()
            .map(|p| format!("{} device {} {:?}", p.name, p.device, p.ipv4s))
            .collect();
        let ctx = || {
            let status = eniroute(ns, &inst.endpoint, &["status"]);
            format!("seed {seed}: {shown:?}\n{}\n{}", text(&status), dumps(ns))
        };

        apply(ns, &inst.endpoint);
        let o = eniroute(ns, &inst.endpoint, &["plan"]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("\nno changes"),
            "{}\n{}",
            text(&o),
            ctx()
        );
        if let Some(rule) = &delegated {
            let rules = ns.ip(["rule"]).unwrap();
            assert!(rules.contains(rule.as_str()), "{rule}\n{}", ctx());
        }
        let again = apply(ns, &inst.endpoint);
        assert!(again.contains("nothing to change"), "{again}\n{}", ctx());
        for p in &plans {
            for ip in &p.ipv4s {
                let ip = ip.to_string();
                let seen = reaches(&admin, &ip, 22, LONG)
                    .unwrap_or_else(|e| panic!("admin -> {ip}: {e}\n{}", ctx()));
                assert!(seen.starts_with("10.9.0.5:"), "{seen}");
                assert_eq!(dev_for(ns, "10.9.0.5", Some(&ip)), p.name, "{}", ctx());
            }
        }
        eprintln!("seed {seed}: {shown:?} {delegated:?}: converged in one apply");
    }
}
