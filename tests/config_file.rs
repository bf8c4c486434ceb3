//! The configuration file as an operator meets it: every key's valid and
//! invalid values, the line each message points at, the reference in
//! docs/CONFIG.md, and the example shipped in packaging/config.toml.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use eniroute::config::{
    check, load, load_checked, parse, render_effective, restart_required, table_collisions, Config,
    ConfigError, EniMatch, EniOverride, LogConfig, MetadataConfig, MetricsConfig, Numbering,
    Selection, UserRoute, DEFAULT_PATH,
};
use eniroute::values::{Mac, RpFilter};

const FILE: &str = "/etc/eniroute/config.toml";

fn errors(text: &str) -> Vec<ConfigError> {
    match check(text, Path::new(FILE)) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    }
}

fn manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(manifest(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// What a case expects: accepted, or exactly one error on `line` whose
/// message contains every fragment.
enum Expect {
    Ok,
    Err(usize, &'static [&'static str]),
}
use Expect::{Err as Bad, Ok as Good};

fn run_cases(cases: &[(&str, Expect)]) {
    let mut failures = Vec::new();
    for (text, expect) in cases {
        let errs = errors(text);
        match expect {
            Good if !errs.is_empty() => {
                failures.push(format!("{text:?}: expected valid, got {errs:?}"));
            }
            Good => {}
            Bad(line, fragments) => {
                if errs.len() != 1 {
                    failures.push(format!("{text:?}: expected one error, got {errs:?}"));
                    continue;
                }
                let e = &errs[0];
                if e.line != Some(*line) {
                    failures.push(format!("{text:?}: expected line {line}, got {e}"));
                }
                for f in *fragments {
                    if !e.message.contains(f) {
                        failures.push(format!("{text:?}: message lacks {f:?}: {e}"));
                    }
                }
                let shown = e.to_string();
                if shown.contains('\n') {
                    failures.push(format!("{text:?}: message is not one line: {shown}"));
                }
                if !shown.starts_with(&format!("{FILE}:{line}: ")) {
                    failures.push(format!("{text:?}: not FILE:LINE: message: {shown}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn metadata_keys() {
    run_cases(&[
        ("[metadata]\nendpoint = \"http://169.254.169.254\"\n", Good),
        ("[metadata]\nendpoint = \"http://127.0.0.1:1338\"\n", Good),
        ("[metadata]\nendpoint = \"http://[::1]:1338\"\n", Good),
        (
            "[metadata]\nendpoint = \"https://169.254.169.254\"\n",
            Bad(2, &["metadata.endpoint", "https", "plain HTTP", "http://"]),
        ),
        (
            "[metadata]\nendpoint = \"169.254.169.254\"\n",
            Bad(2, &["metadata.endpoint", "not an http:// URL"]),
        ),
        (
            "[metadata]\nendpoint = \"http://169.254.169.254/latest\"\n",
            Bad(2, &["metadata.endpoint", "path"]),
        ),
        (
            "[metadata]\nendpoint = \"http://host:99999\"\n",
            Bad(2, &["metadata.endpoint", "port"]),
        ),
        (
            "[metadata]\nipv6_endpoint = \"http://[fd00:ec2::254]\"\n",
            Good,
        ),
        (
            "\n[metadata]\nipv6_endpoint = \"http://fd00:ec2::254\"\n",
            Bad(3, &["metadata.ipv6_endpoint", "[ ]"]),
        ),
        (
            "[metadata]\nipv6_endpoint = \"https://[fd00:ec2::254]\"\n",
            Bad(2, &["metadata.ipv6_endpoint", "https"]),
        ),
        ("[metadata]\nuse_ipv6 = true\n", Good),
        (
            "[metadata]\nuse_ipv6 = \"yes\"\n",
            Bad(2, &["metadata.use_ipv6", "bool"]),
        ),
        ("[metadata]\ntoken_ttl_secs = 1\n", Good),
        ("[metadata]\ntoken_ttl_secs = 21600\n", Good),
        (
            "[metadata]\ntoken_ttl_secs = 0\n",
            Bad(2, &["metadata.token_ttl_secs = 0", "1 to 21600"]),
        ),
        (
            "[metadata]\ntoken_ttl_secs = 21601\n",
            Bad(2, &["metadata.token_ttl_secs = 21601", "1 to 21600"]),
        ),
        (
            "[metadata]\ntoken_ttl_secs = -5\n",
            Bad(2, &["metadata.token_ttl_secs", "-5", "whole number"]),
        ),
        ("[metadata]\nrequest_timeout_ms = 100\n", Good),
        ("[metadata]\nrequest_timeout_ms = 10000\n", Good),
        (
            "[metadata]\nrequest_timeout_ms = 99\n",
            Bad(2, &["metadata.request_timeout_ms = 99", "100 to 10000"]),
        ),
        (
            "[metadata]\nrequest_timeout_ms = 10001\n",
            Bad(2, &["metadata.request_timeout_ms = 10001", "100 to 10000"]),
        ),
        ("[metadata]\nvolatile_refresh_secs = 1\n", Good),
        (
            "[metadata]\nvolatile_refresh_secs = 0\n",
            Bad(2, &["metadata.volatile_refresh_secs = 0", "1 or more"]),
        ),
        ("[metadata]\nstatic_refresh_secs = 3600\n", Good),
        (
            "[metadata]\nstatic_refresh_secs = 0\n",
            Bad(2, &["metadata.static_refresh_secs = 0", "1 or more"]),
        ),
        (
            "[metadata]\nendpont = \"http://x\"\n",
            Bad(2, &["unknown field `endpont`", "`endpoint`", "spelling"]),
        ),
    ]);
}

#[test]
fn numbering_keys() {
    run_cases(&[
        ("[numbering]\ntable_base = 256\n", Good),
        ("[numbering]\ntable_base = 26366\n", Good),
        (
            "[numbering]\ntable_base = 100\n",
            Bad(
                2,
                &["numbering.table_base = 100", "254 main", "256 to 26366"],
            ),
        ),
        (
            "[numbering]\ntable_base = 253\n",
            Bad(2, &["numbering.table_base = 253", "256 to 26366"]),
        ),
        (
            "[numbering]\ntable_base = 26367\n",
            Bad(
                2,
                &["numbering.table_base = 26367", "32766", "256 to 26366"],
            ),
        ),
        (
            "[numbering]\ntable_base = 4294967295\n",
            Bad(2, &["numbering.table_base = 4294967295", "256 to 26366"]),
        ),
        (
            "[numbering]\ntable_base = 4294967296\n",
            Bad(2, &["numbering.table_base", "0 to 4294967295"]),
        ),
        ("[numbering]\nifgroup = 1\n", Good),
        (
            "[numbering]\nifgroup = 0\n",
            Bad(2, &["numbering.ifgroup = 0", "any other number"]),
        ),
        ("[numbering]\nprotocol = 233\n", Good),
        ("[numbering]\nprotocol = 5\n", Good),
        ("[numbering]\nprotocol = 254\n", Good),
        (
            "[numbering]\nprotocol = 4\n",
            Bad(2, &["numbering.protocol = 4", "\"static\"", "233"]),
        ),
        (
            "[numbering]\nprotocol = 0\n",
            Bad(2, &["numbering.protocol = 0", "233"]),
        ),
        (
            "[numbering]\nprotocol = 255\n",
            Bad(2, &["numbering.protocol = 255", "233"]),
        ),
        (
            "[numbering]\nprotocol = 16\n",
            Bad(
                2,
                &["numbering.protocol = 16", "\"dhcp\"", "would remove theirs"],
            ),
        ),
        (
            "[numbering]\nprotocol = 256\n",
            Bad(2, &["numbering.protocol", "0 to 255"]),
        ),
    ]);
}

#[test]
fn selection_keys() {
    run_cases(&[
        ("[selection]\nprimary_rules = false\n", Good),
        ("[selection]\ncoexist_with_ec2_net_utils = true\n", Good),
        ("[selection]\nexclude = [{ name = \"eth[1-9]*\" }]\n", Good),
        ("[selection]\nexclude = [{ device = 1, card = 0 }]\n", Good),
        (
            "[selection]\nexclude = [{ mac = \"0A:1b:2c:3d:4e:5f\" }]\n",
            Good,
        ),
        ("[selection]\nexclude = [{ eni_id = \"eni-0abc\" }]\n", Good),
        ("[selection]\nexclude = [{ subnet_id = \"subnet-0abc\" }]\n", Good),
        (
            "[selection]\nexclude = [\n  { device = 1 },\n  {},\n]\n",
            Bad(4, &["selection.exclude[2]", "every ENI"]),
        ),
        (
            "[selection]\nexclude = [{ mac = \"0a:1b:2c:3d:4e\" }]\n",
            Bad(2, &["selection.exclude[1].mac", "\"0a:1b:2c:3d:4e\"", "six hex octets"]),
        ),
        (
            "[selection]\nexclude = [{ eni_id = \"0abc\" }]\n",
            Bad(2, &["selection.exclude[1].eni_id = \"0abc\"", "eni-"]),
        ),
        (
            "[selection]\nexclude = [{ subnet_id = \"sub-1\" }]\n",
            Bad(2, &["selection.exclude[1].subnet_id = \"sub-1\"", "subnet-"]),
        ),
        (
            "[selection]\nexclude = [{ name = \"\" }]\n",
            Bad(2, &["selection.exclude[1].name", "empty"]),
        ),
        (
            "[selection]\nexclude = [{ name = \"a-very-long-interface\" }]\n",
            Bad(2, &["selection.exclude[1].name", "15 characters"]),
        ),
        (
            "[selection]\nexclude = [{ device = 100 }]\n",
            Bad(2, &["selection.exclude[1].device = 100", "0 to 99"]),
        ),
        (
            "[selection]\nexclude = [{ card = 64 }]\n",
            Bad(2, &["selection.exclude[1].card = 64", "0 to 63"]),
        ),
        (
            "[selection]\nexclude = [{ nmae = \"eth1\" }]\n",
            Bad(2, &["unknown field `nmae`", "`name`"]),
        ),
        (
            "[selection]\n\n[[selection.exclude]]\ndevice = 2\n\n[[selection.exclude]]\neni_id = \"x\"\n",
            Bad(7, &["selection.exclude[2].eni_id = \"x\""]),
        ),
    ]);
}

#[test]
fn eni_keys() {
    run_cases(&[
        ("[[eni]]\nmatch = { device = 1 }\nforwarding = true\n", Good),
        (
            "[[eni]]\nmatch = { name = \"*\" }\nforwarding = true\n",
            Good,
        ),
        (
            "[[eni]]\nforwarding = true\n",
            Bad(1, &["eni[1]", "empty `match`", "name = \"*\""]),
        ),
        (
            "[[eni]]\nmatch = {}\nforwarding = true\n",
            Bad(2, &["eni[1]", "empty `match`", "name = \"*\""]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\n\n[[eni]]\nmtu = 9001\n",
            Bad(4, &["eni[2]", "empty `match`"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1, colour = \"red\" }\n",
            Bad(2, &["unknown field `colour`"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nrp_filter = \"loose\"\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nrp_filter = \"strict\"\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nrp_filter = \"off\"\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nrp_filter = \"medium\"\n",
            Bad(3, &["eni[1].rp_filter", "`medium`", "`loose`"]),
        ),
        ("[[eni]]\nmatch = { device = 1 }\nmtu = 576\n", Good),
        ("[[eni]]\nmatch = { device = 1 }\nmtu = 9216\n", Good),
        (
            "[[eni]]\nmatch = { device = 1 }\nmtu = 575\n",
            Bad(3, &["eni[1].mtu = 575", "576 to 9216"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmtu = 9217\n",
            Bad(3, &["eni[1].mtu = 9217", "576 to 9216"]),
        ),
        ("[[eni]]\nmatch = { device = 1 }\ncross_vpc = false\n", Good),
        (
            "[[eni]]\nmatch = { device = 1 }\ncross_vpc = 0\n",
            Bad(3, &["eni[1].cross_vpc", "bool"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nassign_addresses = false\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nassign_prefix_addresses = true\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nassign_prefix_adresses = true\n",
            Bad(3, &["unknown field `assign_prefix_adresses`"]),
        ),
        (
            "[[eni]]\n[eni.match]\neni_id = \"eni-0123\"\nsubnet_id = \"subnet\"\n",
            Bad(4, &["eni[1].match.subnet_id = \"subnet\"", "subnet-"]),
        ),
    ]);
}

#[test]
fn route_keys() {
    run_cases(&[
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.0/16\" }]\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.0/16\", via = \"10.0.2.10\" }]\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"2001:db8::/56\", via = \"fe80::1\" }]\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.300/16\" }]\n",
            Bad(3, &["eni[1].main_routes[1].dst", "\"10.8.0.300/16\"", "not a CIDR block", "10.20.0.0/16"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.0/33\" }]\n",
            Bad(3, &["eni[1].main_routes[1].dst", "not a CIDR block"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.1\" }]\n",
            Bad(3, &["eni[1].main_routes[1].dst", "an address", "10.8.0.1/32"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.1/16\" }]\n",
            Bad(3, &["eni[1].main_routes[1].dst = 10.8.0.1/16", "host bits", "10.8.0.0/16"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ via = \"10.0.0.1\" }]\n",
            Bad(3, &["missing field `dst`", "add it"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.0/16\", via = \"10.0.0.1/24\" }]\n",
            Bad(3, &["eni[1].main_routes[1].via", "prefix length", "single address"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.0/16\", via = \"gateway\" }]\n",
            Bad(3, &["eni[1].main_routes[1].via", "\"gateway\"", "not an IP address"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [\n  { dst = \"10.8.0.0/16\" },\n  { dst = \"10.9.0.0/16\", via = \"2001:db8::1\" },\n]\n",
            Bad(5, &["eni[1].main_routes[2].via = 2001:db8::1", "IPv6", "10.9.0.0/16 is IPv4", "same family"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\ntable_routes = [{ dst = \"2001:db8::/56\", via = \"10.0.0.1\" }]\n",
            Bad(3, &["eni[1].table_routes[1].via = 10.0.0.1", "IPv4", "IPv6"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.0/16\", via = \"0.0.0.0\" }]\n",
            Bad(3, &["eni[1].main_routes[1].via = 0.0.0.0", "cannot be a gateway"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\ntable_routes = [{ dst = \"0.0.0.0/0\" }]\n",
            Bad(3, &["eni[1].table_routes[1].dst = 0.0.0.0/0", "default route"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\ntable_routes = [{ dst = \"::/0\" }]\n",
            Bad(3, &["eni[1].table_routes[1].dst = ::/0", "default route"]),
        ),
        // Main-table routes overlap across entries …
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.0/16\" }]\n\n[[eni]]\nmatch = { device = 2 }\nmain_routes = [{ dst = \"10.8.4.0/24\" }]\n",
            Bad(7, &["eni[2].main_routes[1].dst = 10.8.4.0/24", "overlaps 10.8.0.0/16", "eni[1].main_routes[1]", "one ENI"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.0/16\" }]\n[[eni]]\nmatch = { device = 2 }\nmain_routes = [{ dst = \"10.8.0.0/16\" }]\n",
            Bad(6, &["eni[2].main_routes[1].dst = 10.8.0.0/16", "overlaps 10.8.0.0/16"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\nmain_routes = [{ dst = \"10.8.0.0/16\" }]\n[[eni]]\nmatch = { device = 2 }\nmain_routes = [{ dst = \"10.9.0.0/16\" }, { dst = \"2001:db8::/32\" }]\n",
            Good,
        ),
        // … table routes only within one entry (each ENI has its own table).
        (
            "[[eni]]\nmatch = { device = 1 }\ntable_routes = [\n  { dst = \"192.168.0.0/16\" },\n  { dst = \"192.168.1.0/24\" },\n]\n",
            Bad(5, &["eni[1].table_routes[2].dst = 192.168.1.0/24", "overlaps 192.168.0.0/16"]),
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\ntable_routes = [{ dst = \"192.168.0.0/16\" }]\n[[eni]]\nmatch = { device = 2 }\ntable_routes = [{ dst = \"192.168.0.0/16\" }]\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { name = \"eth*\" }\nmain_routes = [{ dst = \"10.8.0.0/16\" }]\n",
            Bad(3, &["eni[1].main_routes", "several ENIs", "mac, eni_id, device"]),
        ),
        (
            "[[eni]]\nmatch = { subnet_id = \"subnet-1\" }\nmain_routes = [{ dst = \"10.8.0.0/16\" }]\n",
            Bad(3, &["eni[1].main_routes", "several ENIs"]),
        ),
        (
            "[[eni]]\nmatch = { name = \"eth1\" }\nmain_routes = [{ dst = \"10.8.0.0/16\" }]\n",
            Good,
        ),
        (
            "[[eni]]\nmatch = { device = 1 }\n\n[[eni.main_routes]]\ndst = \"10.8.0.0/16\"\n\n[[eni.main_routes]]\ndst = \"10.0.0.0/8\"\n",
            Bad(8, &["eni[1].main_routes[2].dst = 10.0.0.0/8", "overlaps 10.8.0.0/16"]),
        ),
    ]);
}

#[test]
fn log_keys() {
    run_cases(&[
        ("[log]\nlevel = \"error\"\n", Good),
        ("[log]\nlevel = \"warn\"\n", Good),
        ("[log]\nlevel = \"info\"\n", Good),
        ("[log]\nlevel = \"debug\"\n", Good),
        ("[log]\nlevel = \"trace\"\n", Good),
        (
            "[log]\nlevel = \"verbose\"\n",
            Bad(
                2,
                &["log.level = \"verbose\"", "error, warn, info, debug, trace"],
            ),
        ),
        ("log.level = \"debug\"\n", Good),
        (
            "# dotted keys\nlog.level = \"loud\"\n",
            Bad(2, &["log.level = \"loud\""]),
        ),
        ("[log]\nformat = \"auto\"\n", Good),
        ("[log]\nformat = \"text\"\n", Good),
        ("[log]\nformat = \"journal\"\n", Good),
        (
            "[log]\nformat = \"json\"\n",
            Bad(2, &["log.format = \"json\"", "auto, text, journal"]),
        ),
    ]);
}

#[test]
fn metrics_keys() {
    run_cases(&[
        (
            "[metrics]
",
            Good,
        ),
        (
            "[metrics]
textfile = \"/run/eniroute/eniroute.prom\"
",
            Good,
        ),
        (
            "[metrics]
textfile = \"/var/lib/prometheus/node-exporter/eniroute.prom\"
",
            Good,
        ),
        (
            "[metrics]
\ntextfile = \"eniroute.prom\"
",
            Bad(
                3,
                &[
                    "metrics.textfile = \"eniroute.prom\"",
                    "not an absolute path",
                ],
            ),
        ),
        (
            "[metrics]
textfile = \"/var/lib/prometheus/node-exporter/\"
",
            Bad(2, &["names a directory", "name the file"]),
        ),
        (
            "[metrics]
textfile = \"/run/eniroute/eniroute.txt\"
",
            Bad(2, &["does not end in .prom", "textfile collector"]),
        ),
        (
            "[metrics]
textfile = \"/run/eniroute/.prom\"
",
            Bad(2, &["does not end in .prom"]),
        ),
        (
            "[metrics]
textfile = 1
",
            Bad(2, &["metrics.textfile"]),
        ),
        (
            "[metrics]
listen = \"0.0.0.0:9100\"
",
            Bad(2, &["unknown field `listen`", "textfile"]),
        ),
    ]);
}

#[test]
fn file_level_errors() {
    run_cases(&[
        ("", Good),
        ("# only comments\n", Good),
        (
            "[metadata]\n[logging]\nlevel = \"info\"\n",
            Bad(
                2,
                &[
                    "unknown section `logging`",
                    "metadata, numbering, selection, eni, log",
                ],
            ),
        ),
        ("verbose = true\n", Bad(1, &["unknown section `verbose`"])),
        (
            "[metadata]\ntoken_ttl_secs = 1979-05-27\n",
            Bad(2, &["metadata.token_ttl_secs", "invalid type"]),
        ),
        (
            "[metadata]\ntoken_ttl_secs = 1.5\n",
            Bad(2, &["metadata.token_ttl_secs", "invalid type"]),
        ),
        (
            "[selection]\nexclude = [[1, 2]]\n",
            Bad(2, &["selection.exclude", "invalid type"]),
        ),
        ("\n\n[metadata\n", Bad(3, &["invalid table header"])),
        (
            "[metadata]\nendpoint = \"http://x\"\nendpoint = \"http://y\"\n",
            Bad(3, &["duplicate key"]),
        ),
    ]);
}

#[test]
fn check_reports_every_problem_in_line_order() {
    let text = "\
[metadata]
token_ttl_secs = 0
request_timeout_ms = 5

[numbering]
protocol = 2

[[eni]]
mtu = 100

[log]
format = \"xml\"
";
    let errs = errors(text);
    let lines: Vec<Option<usize>> = errs.iter().map(|e| e.line).collect();
    assert_eq!(
        lines,
        [Some(2), Some(3), Some(6), Some(8), Some(9), Some(12)],
        "{errs:#?}"
    );
    // `parse` stops at the first.
    let first = parse(text, Path::new(FILE)).unwrap_err();
    assert_eq!(first.line, Some(2));
    assert!(first.message.contains("token_ttl_secs"));
}

#[test]
fn unknown_section_is_reported_beside_errors_in_known_ones() {
    let errs = errors("[metadata]\nuse_ipv6 = 1\n\n[logs]\nlevel = \"info\"\n");
    let lines: Vec<Option<usize>> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, [Some(2), Some(4)], "{errs:#?}");
    assert!(errs[1].message.contains("unknown section `logs`"));
}

#[test]
fn type_errors_are_reported_per_section() {
    let text = "\
[metadata]
use_ipv6 = \"no\"

[[eni]]
match = { device = \"one\" }

[log]
level = 3
";
    let errs = errors(text);
    let got: Vec<(Option<usize>, bool)> = errs
        .iter()
        .map(|e| (e.line, e.message.contains("invalid type")))
        .collect();
    assert_eq!(
        got,
        [(Some(2), true), (Some(5), true), (Some(8), true)],
        "{errs:#?}"
    );
    assert!(
        errs[1].message.starts_with("eni[1].match.device:"),
        "{}",
        errs[1]
    );
}

#[test]
fn display_is_path_line_message() {
    let e = ConfigError {
        path: PathBuf::from("/x.toml"),
        line: Some(7),
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "/x.toml:7: bad");
    let e = ConfigError {
        path: PathBuf::from("/x.toml"),
        line: None,
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "/x.toml: bad");
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("eniroute-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn load_default_path_missing_means_defaults() {
    if Path::new(DEFAULT_PATH).exists() {
        // Straight to stderr: the test harness hides what eprintln! prints
        // in a passing test, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {DEFAULT_PATH} exists on this machine"
        );
        return;
    }
    assert_eq!(load(None).unwrap(), Config::default());
    assert_eq!(load_checked(None).unwrap(), Config::default());
}

#[test]
fn load_explicit_missing_path_is_an_error() {
    let path = std::env::temp_dir().join("eniroute-no-such-dir/config.toml");
    let e = load(Some(&path)).unwrap_err();
    assert_eq!(e.path, path);
    assert_eq!(e.line, None);
    assert!(e.message.contains("cannot read"), "{e}");
    assert!(e.to_string().starts_with(&path.display().to_string()));
}

#[test]
fn load_explicit_file() {
    let path = temp_file("ok.toml", "[log]\nlevel = \"debug\"\n");
    let c = load(Some(&path)).unwrap();
    assert_eq!(c.log.level, "debug");

    let path = temp_file("bad.toml", "[log]\nlevel = \"debug\"\nformat = \"xml\"\n");
    let e = load(Some(&path)).unwrap_err();
    assert_eq!(e.path, path);
    assert_eq!(e.line, Some(3));
    let all = load_checked(Some(&path)).unwrap_err();
    assert_eq!(all.len(), 1);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A configuration with every optional field set and every list non-empty.
/// Built without `..Default::default()`, so a new field fails to compile
/// here until it is added, and then the documentation test below asks for
/// its entry in docs/CONFIG.md.
fn everything_set() -> Config {
    let matcher = EniMatch {
        name: Some("eth1".into()),
        mac: Some("0a:1b:2c:3d:4e:5f".parse::<Mac>().unwrap()),
        eni_id: Some("eni-0a1b2c3d4e5f60718".into()),
        device: Some(1),
        card: Some(0),
        subnet_id: Some("subnet-0db0123456789abcd".into()),
    };
    Config {
        metadata: MetadataConfig {
            endpoint: Some("http://127.0.0.1:1338".into()),
            ipv6_endpoint: "http://[::1]:1338".into(),
            use_ipv6: true,
            token_ttl_secs: 600,
            request_timeout_ms: 500,
            volatile_refresh_secs: 1,
            static_refresh_secs: 60,
        },
        numbering: Numbering {
            table_base: 20000,
            ifgroup: 7,
            protocol: 201,
        },
        selection: Selection {
            exclude: vec![matcher.clone()],
            primary_rules: false,
            coexist_with_ec2_net_utils: true,
            primary_secondary_ips: eniroute::config::SecondaryIps::Leave,
        },
        enis: vec![EniOverride {
            matcher,
            main_routes: vec![UserRoute {
                dst: "10.8.0.0/16".parse().unwrap(),
                via: Some("10.0.2.10".parse().unwrap()),
            }],
            table_routes: vec![UserRoute {
                dst: "2001:db8::/56".parse().unwrap(),
                via: Some("fe80::1".parse().unwrap()),
            }],
            cross_vpc: Some(false),
            forwarding: Some(true),
            rp_filter: Some(RpFilter::Loose),
            mtu: Some(9001),
            assign_addresses: Some(false),
            assign_prefix_addresses: Some(true),
        }],
        log: LogConfig {
            level: "debug".into(),
            format: "journal".into(),
        },
        metrics: MetricsConfig {
            textfile: Some("/run/eniroute/eniroute.prom".into()),
        },
    }
}

#[test]
fn render_effective_round_trips() {
    for config in [Config::default(), everything_set()] {
        let text = render_effective(&config);
        let back =
            check(&text, Path::new("rendered.toml")).unwrap_or_else(|e| panic!("{text}\n{e:#?}"));
        assert_eq!(back, config, "{text}");
    }
    // Defaults are written out, not left implicit.
    let text = render_effective(&Config::default());
    for line in ["table_base = 10000", "protocol = 233", "level = \"info\""] {
        assert!(text.contains(line), "{text}");
    }
}

/// `section.key` paths of every key in a TOML document, nested tables and
/// arrays of tables included (array entries share their array's path).
fn key_paths(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.insert(path.clone());
        match v {
            toml::Value::Table(t) => key_paths(&path, t, out),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        key_paths(&path, t, out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn code_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for config in [Config::default(), everything_set()] {
        let table: toml::Table = toml::from_str(&render_effective(&config)).unwrap();
        key_paths("", &table, &mut keys);
    }
    keys
}

/// Keys documented in docs/CONFIG.md: the backquoted names in `### `
/// headings (one heading per key; matcher and route keys, shared by two
/// tables, name both paths in one heading).
fn documented_keys(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("### "))
        .flat_map(|h| h.split('`').skip(1).step_by(2))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_key_is_documented_and_every_documented_key_exists() {
    let doc = read("docs/CONFIG.md");
    let code: BTreeSet<String> = code_keys();
    let (sections, keys): (BTreeSet<String>, BTreeSet<String>) =
        code.into_iter().partition(|k| !k.contains('.'));
    let documented = documented_keys(&doc);
    let missing: Vec<&String> = keys.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "keys without a `### ` heading in docs/CONFIG.md: {missing:?}"
    );
    let unknown: Vec<&String> = documented.difference(&keys).collect();
    assert!(
        unknown.is_empty(),
        "documented keys the code does not have: {unknown:?}"
    );
    for s in sections {
        assert!(
            doc.contains(&format!("## `[{s}]`")) || doc.contains(&format!("## `[[{s}]]`")),
            "section {s} has no `## ` heading in docs/CONFIG.md"
        );
    }
}

fn toml_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```toml" => current = Some((i + 1, String::new())),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(
        current.is_none(),
        "unclosed ```toml block in docs/CONFIG.md"
    );
    blocks
}

#[test]
fn documented_examples_are_valid() {
    let doc = read("docs/CONFIG.md");
    let blocks = toml_blocks(&doc);
    assert!(blocks.len() >= 10, "only {} examples", blocks.len());
    for (line, text) in &blocks {
        let config = check(text, Path::new("docs/CONFIG.md"))
            .unwrap_or_else(|e| panic!("example at docs/CONFIG.md:{line} is invalid: {e:#?}"));
        assert_ne!(
            config,
            Config::default(),
            "example at line {line} sets nothing"
        );
        let back = check(&render_effective(&config), Path::new("rendered")).unwrap();
        assert_eq!(back, config);
    }
}

#[test]
fn every_scenario_has_an_example() {
    let doc = read("docs/CONFIG.md");
    let examples = doc
        .split("\n## Examples\n")
        .nth(1)
        .expect("an Examples section");
    for scenario in [
        "### Management network",
        "### Network appliance",
        "### Dual-homed tiers",
        "### Dual-homed across two VPCs",
        "### HA failover",
        "### Kubernetes node",
    ] {
        let body = examples
            .split(scenario)
            .nth(1)
            .unwrap_or_else(|| panic!("no {scenario:?}"));
        let body = body.split("\n### ").next().unwrap_or_default();
        assert!(body.contains("```toml"), "{scenario} has no toml example");
    }
    // The scenario-specific keys each appear in an example.
    for needle in [
        "main_routes",
        "via = ",
        "forwarding = true",
        "rp_filter = \"loose\"",
        "cross_vpc = true",
        "cross_vpc = false",
        "eni_id = ",
        "exclude = ",
        "name = \"eth[1-9]*\"",
        "device = ",
    ] {
        assert!(examples.contains(needle), "no example uses {needle:?}");
    }
}

#[test]
fn packaged_file_is_all_defaults() {
    let text = read("packaging/config.toml");
    let c = check(&text, Path::new("packaging/config.toml")).unwrap();
    assert_eq!(c, Config::default());
}

/// The commented settings (`#key = value`, `#[section]`) in the packaged
/// file show the true defaults: uncommented, they still give the defaults,
/// and they cover every default key.
#[test]
fn packaged_file_commented_settings_are_the_defaults() {
    let text = read("packaging/config.toml");
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    }) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = check(&uncommented, Path::new("uncommented"))
        .unwrap_or_else(|e| panic!("{uncommented}\n{e:#?}"));
    assert_eq!(c, Config::default());

    let mut shipped = BTreeSet::new();
    key_paths("", &toml::from_str(&uncommented).unwrap(), &mut shipped);
    let mut defaults = BTreeSet::new();
    let table: toml::Table = toml::from_str(&render_effective(&Config::default())).unwrap();
    key_paths("", &table, &mut defaults);
    // The per-ENI list is shown as commented examples instead.
    defaults.remove("eni");
    let missing: Vec<&String> = defaults.difference(&shipped).collect();
    assert!(
        missing.is_empty(),
        "packaging/config.toml lacks {missing:?}"
    );
}

#[test]
fn table_collisions_name_tables_in_range() {
    let config = Config::default();
    let found = table_collisions(&config, &[254, 9999, 10001, 10001, 16399, 16400, 100]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("table 10001 "), "{}", found[0]);
    assert!(found[0].contains("10000-16399"), "{}", found[0]);
    assert!(found[0].contains("numbering.table_base"), "{}", found[0]);
    assert!(found[1].starts_with("table 16399 "), "{}", found[1]);
    assert!(table_collisions(&config, &[]).is_empty());
}

#[test]
fn restart_required_names_numbering_and_log_format() {
    let running = Config::default();
    let mut new = running.clone();
    new.log.level = "debug".into();
    new.metadata.volatile_refresh_secs = 1;
    new.enis = everything_set().enis;
    assert!(restart_required(&running, &new).is_empty());
    new.numbering.protocol = 201;
    new.numbering.table_base = 20000;
    new.log.format = "text".into();
    assert_eq!(
        restart_required(&running, &new),
        ["numbering.table_base", "numbering.protocol", "log.format"]
    );
}

#[test]
fn options_combine_in_file_order() {
    use eniroute::values::{EniFacts, EniKey};
    let text = "\
[[eni]]
match = { name = \"eth*\" }
mtu = 1500
forwarding = true
table_routes = [{ dst = \"192.168.0.0/16\" }]

[[eni]]
match = { device = 1 }
mtu = 9001
table_routes = [{ dst = \"172.16.0.0/12\" }]
";
    let config = check(text, Path::new(FILE)).unwrap();
    let eni = |link_name| EniFacts {
        mac: "0a:1b:2c:3d:4e:5f".parse().unwrap(),
        key: EniKey::new(0, 1).unwrap(),
        interface_id: None,
        subnet_id: None,
        link_name,
    };
    let o = config.options_for(&eni("eth1"));
    assert_eq!(o.mtu, Some(9001));
    assert_eq!(o.forwarding, Some(true));
    assert_eq!(o.table_routes.len(), 2);
    assert!(o.cross_vpc);
    assert!(o.assign_addresses);
    assert!(!o.assign_prefix_addresses);
    let o = config.options_for(&eni("ens6"));
    assert_eq!(o.mtu, Some(9001));
    assert_eq!(o.forwarding, None);
}

/// A huge value is not echoed whole: the message quotes its start and says
/// how long it was.
#[test]
fn a_huge_value_is_shown_cut_short() {
    let value = "x".repeat(200_000);
    let errs = errors(&format!("[log]\nlevel = \"{value}\"\n"));
    assert_eq!(errs.len(), 1, "{}", errs.len());
    let m = &errs[0].message;
    assert!(
        m.len() < 400,
        "{} bytes: {}",
        m.len(),
        &m[..400.min(m.len())]
    );
    assert!(
        m.contains("log.level") && m.contains("(200000 characters)"),
        "{m}"
    );
}

/// A number too large for TOML itself names its key and section.
#[test]
fn a_number_too_large_names_its_key() {
    let errs = errors("[numbering]\ntable_base = 99999999999999999999999\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, Some(2), "{errs:?}");
    assert!(errs[0].message.contains("numbering.table_base"), "{errs:?}");
}

/// Every bad key of one `[[eni]]` entry is reported, each at its line.
#[test]
fn every_problem_of_one_eni_entry_is_reported() {
    let text = "[[eni]]\nmatch = { device = 1 }\nmtu = \"big\"\nforwarding = \"yes\"\nrp_filter = \"sometimes\"\n";
    let errs = errors(text);
    let lines: Vec<Option<usize>> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, [Some(3), Some(4), Some(5)], "{errs:#?}");
    assert!(errs[0].message.contains("mtu"), "{errs:#?}");
    assert!(errs[1].message.contains("forwarding"), "{errs:#?}");
    assert!(errs[2].message.contains("rp_filter"), "{errs:#?}");
}
