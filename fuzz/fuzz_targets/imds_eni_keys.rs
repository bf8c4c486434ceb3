//! One ENI's metadata keys, as the client hands them to the parser, beside
//! a well-formed primary ENI, through the parser and the plan; and the MAC
//! listing parser.
//!
//! Input: sections `#KEY\nVALUE` (a section `#KEY!` is a 404 for KEY; a
//! section `#macs` is a MAC listing body). The seeds under
//! `corpus/imds_eni_keys` are real ENIs written this way.
#![no_main]

use eniroute::config::Config;
use eniroute::imds::model::Instance;
use eniroute::imds::parse::{self, EniKeys};
use eniroute::plan::plan;
use eniroute::values::{Link, LinkAddress, Mac};
use libfuzzer_sys::fuzz_target;

const PRIMARY: [u8; 6] = [0x0a, 0, 0, 0, 0, 1];
const FUZZED: [u8; 6] = [0x0a, 0, 0, 0, 0, 2];

fn primary_keys() -> EniKeys {
    [
        ("device-number", "0"),
        ("interface-id", "eni-0000aa"),
        ("local-ipv4s", "10.0.1.10"),
        ("subnet-ipv4-cidr-block", "10.0.1.0/24"),
        ("vpc-ipv4-cidr-blocks", "10.0.0.0/16"),
        ("vpc-id", "vpc-1"),
        ("subnet-id", "subnet-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
    .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut keys = EniKeys::new();
    for section in text.split("\n#") {
        let section = section.strip_prefix('#').unwrap_or(section);
        let (key, value) = section.split_once('\n').unwrap_or((section, ""));
        if key == "macs" {
            if let Ok(macs) = parse::mac_listing(value) {
                assert!(macs.windows(2).all(|w| w[0] < w[1]), "{macs:?}");
            }
        } else if let Some(key) = key.strip_suffix('!') {
            keys.insert(key.to_string(), None);
        } else {
            keys.insert(key.to_string(), Some(value.to_string()));
        }
    }
    let primary = Mac::new(PRIMARY);
    let fuzzed = Mac::new(FUZZED);
    let enis = vec![
        parse::eni(primary, true, &primary_keys()),
        parse::eni(fuzzed, false, &keys),
    ];
    let instance = Instance::new(primary, enis);
    let link = |index, mac, addr: Option<&str>| Link {
        index,
        name: format!("eth{}", index - 2),
        mac: Some(mac),
        up: true,
        group: 0,
        mtu: 9001,
        addresses: addr
            .and_then(|a| a.parse().ok())
            .map(|addr| LinkAddress {
                addr,
                owned: false,
                valid_lft: Some(3600),
                proto: None,
            })
            .into_iter()
            .collect(),
    };
    let links = [
        link(2, primary, Some("10.0.1.10/24")),
        link(3, fuzzed, None),
    ];
    let p = plan(&instance, &links, &Config::default());
    for w in &p.warnings {
        let _ = w.to_string();
    }
});
