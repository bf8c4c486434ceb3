//! The IMDSv2 client against the in-repo simulator (and, where the simulator
//! cannot misbehave in the needed way, against a raw socket), on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use eniroute::imds::client::{ErrorKind, ImdsClient, ImdsOptions, MAX_BODY};
use eniroute::imds::fetch::{fetch_instance, Depth, MetadataCache, Scope};
use eniroute::imds::model::EniState;
use eniroute::values::{EniKey, Mac};
use eniroute_lab::sim::{Fault, Simulator};
use serde_json::{json, Value};

const MAC1: &str = "0a:00:00:00:00:01";
const MAC2: &str = "0a:00:00:00:00:02";
const MACS: &str = "latest/meta-data/network/interfaces/macs/";

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

/// A primary ENI with two IPv4s and an IPv6, and a secondary with a
/// delegated prefix and a second VPC CIDR.
fn two_enis() -> Value {
    json!({
        "mac": MAC1,
        "instance-id": "i-0123456789abcdef0",
        "network": {"interfaces": {"macs": {
            MAC1: {
                "device-number": "0",
                "interface-id": "eni-0001",
                "local-ipv4s": ["10.0.1.10", "10.0.1.11"],
                "ipv6s": "2600:1f18::10",
                "subnet-id": "subnet-1",
                "subnet-ipv4-cidr-block": "10.0.1.0/24",
                "subnet-ipv6-cidr-blocks": "2600:1f18::/64",
                "vpc-id": "vpc-1",
                "vpc-ipv4-cidr-blocks": "10.0.0.0/16",
            },
            MAC2: {
                "device-number": "1",
                "network-card": "0",
                "interface-id": "eni-0002",
                "local-ipv4s": "10.0.2.20",
                "ipv4-prefix": "10.0.2.128/28",
                "subnet-id": "subnet-2",
                "subnet-ipv4-cidr-block": "10.0.2.0/24",
                "vpc-id": "vpc-1",
                "vpc-ipv4-cidr-blocks": ["10.0.0.0/16", "100.64.0.0/16"],
            },
        }}},
    })
}

fn sim(tree: Value) -> Simulator {
    Simulator::bind("127.0.0.1:0".parse().unwrap(), tree).unwrap()
}

/// Options scaled down so that failure tests finish quickly.
fn fast(endpoint: String) -> ImdsOptions {
    ImdsOptions {
        endpoint,
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(200),
        max_attempts: 4,
        backoff_base: Duration::from_millis(20),
        retry_budget: Duration::from_secs(3),
        ..ImdsOptions::default()
    }
}

fn client(sim: &Simulator) -> ImdsClient {
    ImdsClient::new(fast(sim.endpoint())).unwrap()
}

/// Clears the fault at `prefix` once the simulator has seen `n` requests,
/// i.e. while the client is backing off after a failed attempt.
fn clear_after(sim: &Simulator, prefix: &'static str, n: u64) -> thread::JoinHandle<()> {
    let sim = sim.clone();
    thread::spawn(move || {
        let start = Instant::now();
        while sim.requests() < n && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(1));
        }
        sim.set_fault(Some(prefix), None);
    })
}

/// One request on a fresh connection: (status, head, body).
fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    parse_response(&out)
}

fn parse_response(text: &str) -> (u16, String, String) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn put_token(addr: SocketAddr, extra: &str) -> (u16, String, String) {
    raw(
        addr,
        &format!("PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"),
    )
}

// --- tokens -----------------------------------------------------------------

#[tokio::test]
async fn token_is_fetched_once_and_reused() {
    let sim = sim(two_enis());
    let c = client(&sim);
    assert_eq!(c.get("mac").await.unwrap().as_deref(), Some(MAC1));
    assert_eq!(
        c.get("instance-id").await.unwrap().as_deref(),
        Some("i-0123456789abcdef0")
    );
    assert_eq!(c.get("mac").await.unwrap().as_deref(), Some(MAC1));
    assert_eq!(sim.token_requests(), 1);
    assert_eq!(sim.requests(), 4);
}

#[tokio::test]
async fn concurrent_gets_share_one_token() {
    let sim = sim(two_enis());
    let c = client(&sim);
    let gets = (0..8).map(|_| c.get("mac"));
    for r in futures::future::join_all(gets).await {
        assert_eq!(r.unwrap().as_deref(), Some(MAC1));
    }
    assert_eq!(sim.token_requests(), 1);
}

#[tokio::test]
async fn token_is_renewed_at_80_percent_of_its_granted_lifetime() {
    let sim = sim(two_enis());
    // The client asks for 6 hours; the endpoint grants 1 s and says so.
    sim.set_token_ttl_cap(Some(1));
    let c = client(&sim);
    c.get("mac").await.unwrap();
    c.get("mac").await.unwrap();
    assert_eq!(sim.token_requests(), 1);
    tokio::time::sleep(Duration::from_millis(850)).await;
    c.get("mac").await.unwrap();
    assert_eq!(
        sim.token_requests(),
        2,
        "renewed before expiry, not after a 401"
    );
    assert_eq!(sim.requests(), 5);
}

#[tokio::test]
async fn revoked_token_is_renewed_once_and_the_request_retried() {
    let sim = sim(two_enis());
    let c = client(&sim);
    c.get("mac").await.unwrap();
    sim.revoke_tokens();
    assert_eq!(c.get("mac").await.unwrap().as_deref(), Some(MAC1));
    // PUT, GET, GET (401), PUT, GET.
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(sim.requests(), 5);
}

#[tokio::test]
async fn persistent_401_fails_after_one_renewal() {
    let sim = sim(two_enis());
    sim.set_fault(Some("mac"), Some(Fault::Status(401)));
    let c = client(&sim);
    let e = c.get("mac").await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Status(401));
    assert_eq!(sim.token_requests(), 2);
    assert_eq!(sim.requests(), 4);
}

#[tokio::test]
async fn refused_token_is_an_error_naming_the_token_request() {
    let sim = sim(two_enis());
    sim.set_fault(Some("latest/api/token"), Some(Fault::Status(403)));
    let c = client(&sim);
    let e = c.get("mac").await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Token { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("GET latest/meta-data/mac") && msg.contains("PUT latest/api/token: HTTP 403"),
        "{msg}"
    );
    assert_eq!(sim.requests(), 1, "a 403 is not retried");
}

#[tokio::test]
async fn dropped_token_request_is_retried() {
    let sim = sim(two_enis());
    sim.set_fault(Some("latest/api/token"), Some(Fault::Drop));
    let clear = clear_after(&sim, "latest/api/token", 1);
    let c = ImdsClient::new(ImdsOptions {
        backoff_base: Duration::from_millis(200),
        ..fast(sim.endpoint())
    })
    .unwrap();
    assert_eq!(c.get("mac").await.unwrap().as_deref(), Some(MAC1));
    clear.join().unwrap();
    assert_eq!(sim.token_requests(), 2);
}

// --- the simulator's IMDSv2 rules, seen from a raw socket --------------------

#[test]
fn token_endpoint_enforces_ttl_and_forwarding_rules() {
    let sim = sim(two_enis());
    let addr = sim.addr();
    assert_eq!(put_token(addr, "").0, 400, "missing TTL");
    for bad in ["0", "21601", "abc", "-1", ""] {
        let h = format!("X-aws-ec2-metadata-token-ttl-seconds: {bad}\r\n");
        assert_eq!(put_token(addr, &h).0, 400, "TTL {bad:?}");
    }
    let ttl = "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n";
    let forwarded = format!("{ttl}X-Forwarded-For: 10.0.0.9\r\n");
    assert_eq!(put_token(addr, &forwarded).0, 403);
    let (status, head, token) = put_token(addr, ttl);
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("x-aws-ec2-metadata-token-ttl-seconds: 21600"),
        "{head}"
    );
    assert!(!token.is_empty() && !token.contains(char::is_whitespace));

    let get = |path: &str, token: Option<&str>| {
        let auth = token
            .map(|t| format!("X-aws-ec2-metadata-token: {t}\r\n"))
            .unwrap_or_default();
        raw(addr, &format!("GET /latest/meta-data/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"))
    };
    assert_eq!(get("mac", None).0, 401, "IMDSv1 is refused");
    assert_eq!(get("mac", Some("not-a-token")).0, 401);
    let (status, _, body) = get("mac", Some(&token));
    assert_eq!((status, body.as_str()), (200, MAC1));
    assert_eq!(get("no/such/key", Some(&token)).0, 404);
    assert_eq!(sim.token_requests(), 8);
}

#[test]
fn expired_token_is_refused() {
    let sim = sim(two_enis());
    sim.set_token_ttl_cap(Some(1));
    let (_, head, token) = put_token(sim.addr(), "X-aws-ec2-metadata-token-ttl-seconds: 300\r\n");
    assert!(
        head.to_ascii_lowercase()
            .lines()
            .any(|l| l == "x-aws-ec2-metadata-token-ttl-seconds: 1"),
        "{head}"
    );
    let get = || {
        raw(
            sim.addr(),
            &format!("GET /latest/meta-data/mac HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n"),
        )
        .0
    };
    assert_eq!(get(), 200);
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(), 401);
}

#[test]
fn connection_is_kept_alive_across_requests() {
    let sim = sim(two_enis());
    let mut s = TcpStream::connect(sim.addr()).unwrap();
    s.write_all(b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let token = read_one(&mut s).2;
    s.write_all(
        format!("GET /latest/meta-data/mac HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let (status, _, body) = read_one(&mut s);
    assert_eq!((status, body.as_str()), (200, MAC1));
    assert_eq!(sim.requests(), 2);
}

/// Reads exactly one Content-Length response from a kept-alive stream.
fn read_one(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    let (status, head, _) = parse_response(&head);
    (status, head, String::from_utf8(body).unwrap())
}

// --- absent versus unknown ----------------------------------------------------

#[tokio::test]
async fn missing_key_is_none() {
    let sim = sim(two_enis());
    let c = client(&sim);
    let base = format!("network/interfaces/macs/{MAC2}/");
    assert_eq!(c.get(&format!("{base}ipv6s")).await.unwrap(), None);
    assert_eq!(
        c.get(&format!("{base}device-number"))
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(c.get("no/such/path").await.unwrap(), None);
}

#[tokio::test]
async fn server_error_fails_after_all_attempts_with_a_one_line_message() {
    let sim = sim(two_enis());
    sim.set_fault(Some("network/interfaces/macs/"), Some(Fault::Status(500)));
    let c = client(&sim);
    let e = c.get("network/interfaces/macs/").await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Status(500));
    assert_eq!(e.attempts(), 4);
    assert_eq!(
        e.to_string(),
        format!(
            "metadata {} GET {MACS}: HTTP 500 after 4 attempts",
            sim.endpoint()
        )
    );
    assert_eq!(sim.requests(), 5, "one token, four attempts");
    // The same outage through the instance walk is an error, not an empty list.
    let e = fetch_instance(&c, &Scope::All).await.unwrap_err();
    assert_eq!(e.path(), MACS);
}

#[tokio::test]
async fn server_error_that_clears_mid_retry_succeeds() {
    let sim = sim(two_enis());
    sim.set_fault(Some("mac"), Some(Fault::Status(503)));
    // Token PUT, then the failing GET; cleared while the client backs off.
    let clear = clear_after(&sim, "mac", 2);
    let c = ImdsClient::new(ImdsOptions {
        backoff_base: Duration::from_millis(200),
        ..fast(sim.endpoint())
    })
    .unwrap();
    assert_eq!(c.get("mac").await.unwrap().as_deref(), Some(MAC1));
    clear.join().unwrap();
    assert_eq!(sim.requests(), 3);
}

#[tokio::test]
async fn throttling_is_retried() {
    let sim = sim(two_enis());
    sim.set_fault(Some("mac"), Some(Fault::Status(429)));
    let c = client(&sim);
    let e = c.get("mac").await.unwrap_err();
    assert_eq!((e.kind(), e.attempts()), (&ErrorKind::Status(429), 4));

    sim.set_fault(Some("mac"), Some(Fault::Status(429)));
    let clear = clear_after(&sim, "mac", sim.requests() + 1);
    let c = ImdsClient::new(ImdsOptions {
        backoff_base: Duration::from_millis(200),
        ..fast(sim.endpoint())
    })
    .unwrap();
    assert_eq!(c.get("mac").await.unwrap().as_deref(), Some(MAC1));
    clear.join().unwrap();
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let sim = sim(two_enis());
    sim.set_fault(Some("mac"), Some(Fault::Status(403)));
    let c = client(&sim);
    let e = c.get("mac").await.unwrap_err();
    assert_eq!((e.kind(), e.attempts()), (&ErrorKind::Status(403), 1));
    assert_eq!(sim.requests(), 2);
}

#[tokio::test]
async fn delay_beyond_the_timeout_fails_in_bounded_time() {
    let sim = sim(two_enis());
    let c = ImdsClient::new(ImdsOptions {
        request_timeout: Duration::from_millis(300),
        max_attempts: 2,
        ..fast(sim.endpoint())
    })
    .unwrap();
    // A short delay is only slowness.
    sim.set_fault(Some("mac"), Some(Fault::Delay(Duration::from_millis(50))));
    assert_eq!(c.get("mac").await.unwrap().as_deref(), Some(MAC1));

    sim.set_fault(Some("mac"), Some(Fault::Delay(Duration::from_secs(30))));
    let start = Instant::now();
    let e = c.get("mac").await.unwrap_err();
    assert_eq!((e.kind(), e.attempts()), (&ErrorKind::Timeout, 2), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn garbage_mac_listing_is_an_error_naming_the_path() {
    let sim = sim(two_enis());
    sim.set_fault(Some("network/interfaces/macs/"), Some(Fault::Garbage));
    let c = client(&sim);
    // The body itself is text; it is the listing that cannot be garbage.
    assert!(c.get("network/interfaces/macs/").await.unwrap().is_some());
    let e = fetch_instance(&c, &Scope::All).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Malformed(_)), "{e}");
    assert!(e.to_string().contains(&format!("GET {MACS}: ")), "{e}");
    assert_eq!(e.path(), MACS);
}

#[tokio::test]
async fn missing_or_empty_mac_listing_is_an_error() {
    let sim = sim(json!({"mac": MAC1, "network": {"interfaces": {"macs": {}}}}));
    let c = client(&sim);
    let e = fetch_instance(&c, &Scope::All).await.unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    sim.set_tree(json!({"mac": MAC1}));
    let e = fetch_instance(&c, &Scope::All).await.unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
    sim.set_tree(json!({}));
    let e = fetch_instance(&c, &Scope::All).await.unwrap_err();
    assert_eq!(e.path(), "latest/meta-data/mac");
}

#[tokio::test]
async fn oversized_body_is_an_error() {
    let sim = sim(two_enis());
    sim.set_fault(Some("mac"), Some(Fault::Oversized));
    let c = client(&sim);
    let e = c.get("mac").await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::BodyTooLarge { limit: MAX_BODY });
    assert_eq!(e.attempts(), 1);
    // The client is still usable afterwards.
    sim.set_fault(Some("mac"), None);
    assert_eq!(c.get("mac").await.unwrap().as_deref(), Some(MAC1));
}

#[tokio::test]
async fn dropped_connection_is_an_error_after_retries() {
    let sim = sim(two_enis());
    sim.set_fault(Some("mac"), Some(Fault::Drop));
    let c = client(&sim);
    let e = c.get("mac").await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Transport(_)), "{e}");
    assert_eq!(e.attempts(), 4);
}

#[tokio::test]
async fn full_outage_fails_well_within_ten_seconds() {
    // Accepts connections and never answers: the slowest way to be down.
    let sim = sim(two_enis());
    sim.set_fault(None, Some(Fault::Delay(Duration::from_secs(60))));
    let c = ImdsClient::new(ImdsOptions {
        endpoint: sim.endpoint(),
        ..ImdsOptions::default()
    })
    .unwrap();
    let start = Instant::now();
    let e = fetch_instance(&c, &Scope::All).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(7),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(e.kind(), ErrorKind::Token { .. }), "{e}");

    // Nothing listening at all.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = ImdsClient::new(ImdsOptions {
        endpoint: format!("http://127.0.0.1:{port}"),
        ..ImdsOptions::default()
    })
    .unwrap();
    let start = Instant::now();
    let e = fetch_instance(&c, &Scope::All).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains("connect"), "{e}");
}

// --- reading the instance -----------------------------------------------------

#[tokio::test]
async fn fetch_instance_reads_both_enis() {
    let sim = sim(two_enis());
    let c = client(&sim);
    let inst = fetch_instance(&c, &Scope::All).await.unwrap();
    assert_eq!(inst.primary_mac, mac(MAC1));
    assert_eq!(inst.ready().count(), 2, "{inst:?}");
    let Some(EniState::Ready(primary)) = inst.get(mac(MAC1)) else {
        panic!("{inst:?}")
    };
    assert_eq!(primary.key, EniKey { card: 0, device: 0 });
    assert_eq!(primary.interface_id.as_deref(), Some("eni-0001"));
    assert_eq!(
        primary.ipv4s,
        [
            "10.0.1.10".parse::<std::net::Ipv4Addr>().unwrap(),
            "10.0.1.11".parse().unwrap()
        ]
    );
    assert_eq!(
        primary.ipv6s,
        ["2600:1f18::10".parse::<std::net::Ipv6Addr>().unwrap()]
    );
    assert_eq!(primary.subnet_v4, Some("10.0.1.0/24".parse().unwrap()));
    assert_eq!(primary.subnet_v6, ["2600:1f18::/64".parse().unwrap()]);
    let Some(EniState::Ready(second)) = inst.get(mac(MAC2)) else {
        panic!("{inst:?}")
    };
    assert_eq!(second.key, EniKey { card: 0, device: 1 });
    assert_eq!(second.subnet_id.as_deref(), Some("subnet-2"));
    assert_eq!(second.ipv4_prefixes, ["10.0.2.128/28".parse().unwrap()]);
    // In the primary's VPC: its VPC's blocks are the primary's, not read.
    assert!(second.vpc_v4.is_empty(), "{second:?}");
    assert_eq!(primary.vpc_v4, ["10.0.0.0/16".parse().unwrap()]);
    assert!(second.ipv6s.is_empty());
    // Same answer as the parser reading the tree directly.
    let direct =
        eniroute::imds::parse::instance_from(|p| eniroute::imds::tree::lookup(&two_enis(), p))
            .unwrap();
    assert_eq!(inst, direct);

    // In another VPC, its blocks are what the cross-VPC routes are made
    // of: read.
    sim.update(|t| t["network"]["interfaces"]["macs"][MAC2]["vpc-id"] = json!("vpc-2"));
    let inst = fetch_instance(&c, &Scope::All).await.unwrap();
    let Some(EniState::Ready(second)) = inst.get(mac(MAC2)) else {
        panic!("{inst:?}")
    };
    assert_eq!(
        second.vpc_v4,
        [
            "10.0.0.0/16".parse().unwrap(),
            "100.64.0.0/16".parse().unwrap()
        ]
    );
}

#[tokio::test]
async fn lagging_mac_is_absent_then_present() {
    let sim = sim(two_enis());
    let c = client(&sim);
    let lag = Duration::from_secs(1);
    sim.set_lag(mac(MAC2), lag);
    let start = Instant::now();
    let inst = fetch_instance(&c, &Scope::All).await.unwrap();
    assert_eq!(inst.enis.len(), 1);
    assert!(inst.get(mac(MAC2)).is_none());
    let direct = c
        .get(&format!("network/interfaces/macs/{MAC2}/device-number"))
        .await
        .unwrap();
    assert_eq!(direct, None, "a lagging MAC's keys 404 too");
    assert!(
        start.elapsed() < lag,
        "checks above ran too late to mean anything"
    );
    tokio::time::sleep(lag.saturating_sub(start.elapsed()) + Duration::from_millis(50)).await;
    let inst = fetch_instance(&c, &Scope::All).await.unwrap();
    assert!(
        matches!(inst.get(mac(MAC2)), Some(EniState::Ready(_))),
        "{inst:?}"
    );
}

// --- the daemon's cache -------------------------------------------------------

#[tokio::test]
async fn cache_rereads_only_volatile_keys_of_ready_enis() {
    let sim = sim(two_enis());
    let c = client(&sim);
    let mut cache = MetadataCache::new();
    let first = cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    // Token, mac, listing; 14 keys of the primary (it names no
    // network-card, so network-card-index too; its VPC's blocks), 11 of
    // the secondary (in the primary's VPC: not its VPC's blocks).
    assert_eq!(sim.requests(), 28);
    assert_eq!(
        first,
        fetch_instance(&client(&sim), &Scope::All).await.unwrap()
    );

    let before = sim.requests();
    sim.update(|t| {
        t["network"]["interfaces"]["macs"][MAC2]["local-ipv4s"] = json!(["10.0.2.20", "10.0.2.21"])
    });
    let second = cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    // The MAC listing; for each MAC its directory listing and the two
    // volatile keys it had (an IPv4 list, and IPv6s or a prefix).
    assert_eq!(
        sim.requests() - before,
        1 + 2 * 3,
        "listing, and per MAC its directory and the volatile keys it has"
    );
    let Some(EniState::Ready(eni)) = second.get(mac(MAC2)) else {
        panic!("{second:?}")
    };
    assert_eq!(eni.ipv4s.len(), 2, "volatile change seen at once");

    // Static keys are re-read once older than the limit.
    let before = sim.requests();
    cache
        .refresh(&c, Duration::ZERO, Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    // The primary's vpc-id is the cached one (it cannot change).
    assert_eq!(sim.requests() - before, 1 + 13 + 11);

    // And on request, for one MAC.
    let before = sim.requests();
    cache.invalidate(mac(MAC1));
    cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    assert_eq!(sim.requests() - before, 1 + 14 + 3);
}

/// A poll reads the volatile keys an ENI has, and learns from the MAC's
/// directory which absent ones appeared: an appearing or vanishing key is
/// seen in the same poll, as when every key was read.
#[tokio::test]
async fn poll_sees_volatile_keys_appear_and_vanish_at_once() {
    let sim = sim(two_enis());
    let c = client(&sim);
    let mut cache = MetadataCache::new();
    let age = Duration::from_secs(300);
    cache
        .refresh(&c, age, Depth::Volatile, &Scope::All)
        .await
        .unwrap();

    // MAC2 gains IPv6 addresses and a second prefix; MAC1 loses its IPv6.
    sim.update(|t| {
        let m = &mut t["network"]["interfaces"]["macs"];
        m[MAC2]["ipv6s"] = json!(["2600:1f18::20", "2600:1f18::21"]);
        m[MAC2]["subnet-ipv6-cidr-blocks"] = json!("2600:1f18::/64");
        m[MAC2]["ipv4-prefix"] = json!(["10.0.2.128/28", "10.0.2.144/28"]);
        m[MAC1].as_object_mut().unwrap().remove("ipv6s");
    });
    let before = sim.requests();
    let polled = cache
        .refresh(&c, age, Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    // Listing; MAC1: directory, local-ipv4s, ipv6s (had a value: read, now
    // 404); MAC2: directory, local-ipv4s, ipv4-prefix, then ipv6s (listed
    // now).
    assert_eq!(sim.requests() - before, 1 + 3 + 4);
    let Some(EniState::Ready(e1)) = polled.get(mac(MAC1)) else {
        panic!("{polled:?}")
    };
    assert!(e1.ipv6s.is_empty(), "{e1:?}");
    let Some(EniState::Ready(e2)) = polled.get(mac(MAC2)) else {
        panic!("{polled:?}")
    };
    assert_eq!(e2.ipv4_prefixes.len(), 2, "{e2:?}");
    assert_eq!(e2.ipv6s.len(), 2, "{e2:?}");

    // Once the static keys are read again, the poll and a fresh read of
    // everything agree.
    let full = cache
        .refresh(&c, Duration::ZERO, Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    assert_eq!(
        full,
        fetch_instance(&client(&sim), &Scope::All).await.unwrap()
    );
    let again = cache
        .refresh(&c, age, Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    assert_eq!(again, full);
}

#[tokio::test]
async fn a_read_of_what_is_new_asks_only_the_listing_until_a_mac_appears() {
    let sim = sim(two_enis());
    let mac2 = sim.tree()["network"]["interfaces"]["macs"][MAC2].clone();
    sim.update(|t| {
        t["network"]["interfaces"]["macs"]
            .as_object_mut()
            .unwrap()
            .remove(MAC2);
    });
    let c = client(&sim);
    let mut cache = MetadataCache::new();
    let first = cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    assert_eq!(first.enis.len(), 1);

    // A link waits for its ENI: nothing new listed, one request.
    let before = sim.requests();
    let again = cache
        .refresh(&c, Duration::from_secs(300), Depth::New, &Scope::All)
        .await
        .unwrap();
    assert_eq!(sim.requests() - before, 1, "the listing alone");
    assert_eq!(again, first);

    // It is listed now: the listing and its 11 keys (the primary's VPC is
    // known), nothing of the other.
    sim.update(|t| t["network"]["interfaces"]["macs"][MAC2] = mac2);
    let before = sim.requests();
    let inst = cache
        .refresh(&c, Duration::from_secs(300), Depth::New, &Scope::All)
        .await
        .unwrap();
    assert_eq!(sim.requests() - before, 1 + 11);
    assert!(
        matches!(inst.get(mac(MAC2)), Some(EniState::Ready(_))),
        "{inst:?}"
    );
    assert_eq!(
        inst,
        fetch_instance(&client(&sim), &Scope::All).await.unwrap()
    );
}

#[tokio::test]
async fn cache_rereads_static_keys_of_an_eni_not_ready() {
    let sim = sim(two_enis());
    // A fresh attachment: listed, but device-number still reads 0.
    sim.update(|t| t["network"]["interfaces"]["macs"][MAC2]["device-number"] = json!("0"));
    let c = client(&sim);
    let mut cache = MetadataCache::new();
    let inst = cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    assert!(
        matches!(inst.get(mac(MAC2)), Some(EniState::NotReady { .. })),
        "{inst:?}"
    );

    sim.update(|t| t["network"]["interfaces"]["macs"][MAC2]["device-number"] = json!("1"));
    let before = sim.requests();
    let inst = cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    let Some(EniState::Ready(eni)) = inst.get(mac(MAC2)) else {
        panic!("{inst:?}")
    };
    assert_eq!(eni.key.device, 1);
    assert_eq!(
        sim.requests() - before,
        1 + 3 + 11,
        "ready ENI: volatile only; the other: all it uses"
    );
}

#[tokio::test]
async fn cache_drops_detached_enis_and_survives_errors() {
    let sim = sim(two_enis());
    let c = client(&sim);
    let mut cache = MetadataCache::new();
    let full = cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .unwrap();

    // An outage is an error, and the cache still holds the last good read.
    sim.set_fault(Some("network/"), Some(Fault::Status(500)));
    assert!(cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .is_err());
    sim.set_fault(Some("network/"), None);
    let before = sim.requests();
    assert_eq!(
        cache
            .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
            .await
            .unwrap(),
        full
    );
    assert_eq!(sim.requests() - before, 1 + 2 * 3);

    // Detach: gone from the result and from the cache.
    sim.update(|t| {
        t["network"]["interfaces"]["macs"]
            .as_object_mut()
            .unwrap()
            .remove(MAC2);
    });
    let inst = cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    assert_eq!(inst.enis.len(), 1);
    sim.set_tree(two_enis());
    let before = sim.requests();
    cache
        .refresh(&c, Duration::from_secs(300), Depth::Volatile, &Scope::All)
        .await
        .unwrap();
    assert_eq!(
        sim.requests() - before,
        1 + 3 + 11,
        "re-attached ENI is read in full"
    );
}

// --- what the client sends, seen by a raw server --------------------------------

/// A one-request-per-connection server: answers token PUTs with a token and
/// every GET with `get_reply`; records each request head.
fn raw_server(get_reply: impl Into<Vec<u8>>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let get_reply = get_reply.into();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read_exact(&mut byte).is_err() {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let reply: &[u8] = if head.starts_with("PUT ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nTOKEN"
            } else {
                &get_reply
            };
            log.lock().unwrap().push(head);
            let _ = s.write_all(reply);
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn sends_imdsv2_headers_and_user_agent() {
    let (addr, seen) =
        raw_server("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
    let c = ImdsClient::new(fast(format!("http://{addr}"))).unwrap();
    assert_eq!(c.get("mac").await.unwrap().as_deref(), Some("abc"));
    let seen = seen
        .lock()
        .unwrap()
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect::<Vec<_>>();
    assert_eq!(seen.len(), 2);
    let ua = format!("user-agent: eniroute/{}\r\n", env!("CARGO_PKG_VERSION"));
    assert!(
        seen[0].starts_with("put /latest/api/token http/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].contains("x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n"),
        "{}",
        seen[0]
    );
    assert!(
        seen[1].starts_with("get /latest/meta-data/mac http/1.1\r\n"),
        "{}",
        seen[1]
    );
    assert!(
        seen[1].contains("x-aws-ec2-metadata-token: token\r\n"),
        "{}",
        seen[1]
    );
    for head in &seen {
        assert!(head.contains(&ua), "{head}");
        assert!(!head.contains("x-forwarded-for"), "{head}");
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = sim(two_enis());
    let (addr, _) = raw_server(format!(
        "HTTP/1.1 302 Found\r\nLocation: {}/latest/meta-data/mac\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        target.endpoint()
    ));
    let c = ImdsClient::new(fast(format!("http://{addr}"))).unwrap();
    let e = c.get("mac").await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Status(302));
    assert_eq!(target.requests(), 0, "the token must not follow a redirect");
}

#[tokio::test]
async fn declared_oversized_body_is_refused_unread() {
    let (addr, _) = raw_server(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        MAX_BODY + 1
    ));
    let c = ImdsClient::new(fast(format!("http://{addr}"))).unwrap();
    let e = c.get("mac").await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::BodyTooLarge { limit: MAX_BODY });
}

#[tokio::test]
async fn non_text_body_is_an_error() {
    let (addr, _) = raw_server(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n\xff\xfe\x01"[..],
    );
    let c = ImdsClient::new(fast(format!("http://{addr}"))).unwrap();
    let e = c.get("mac").await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NotText);
}

// --- the IPv6 endpoint --------------------------------------------------------

#[tokio::test]
async fn use_ipv6_selects_the_ipv6_endpoint() {
    // EC2's IPv6 endpoint is [fd00:ec2::254]; the simulator on [::1] stands
    // in for it. The IPv4 endpoint points at a closed port, so a success
    // proves the IPv6 one was used.
    let Ok(sim) = Simulator::bind("[::1]:0".parse().unwrap(), two_enis()) else {
        let _ = writeln!(std::io::stderr(), "skipped: no IPv6 loopback here");
        return;
    };
    let cfg = eniroute::config::MetadataConfig {
        endpoint: Some("http://127.0.0.1:9".into()),
        ipv6_endpoint: sim.endpoint(),
        use_ipv6: true,
        ..Default::default()
    };
    assert!(
        sim.endpoint().starts_with("http://[::1]:"),
        "{}",
        sim.endpoint()
    );
    let c = ImdsClient::new(ImdsOptions::from(&cfg)).unwrap();
    assert_eq!(c.endpoint(), sim.endpoint());
    let inst = fetch_instance(&c, &Scope::All).await.unwrap();
    assert_eq!(inst.enis.len(), 2);
}

// --- no endpoint configured: IPv4 first, the IPv6 one where that fails --------

/// A port that accepts connections and never answers: an endpoint that is
/// there but times out. Counts the connections it gets; stops when dropped.
struct Silent {
    addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, quit) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !quit.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        held.push(s);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Silent {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The first endpoint and its fallback, as the client gets them when the
/// configuration names none.
fn automatic(first: String, fallback: String) -> ImdsOptions {
    ImdsOptions {
        fallback: Some(fallback),
        ..fast(first)
    }
}

#[test]
fn only_an_unset_endpoint_gets_the_ipv6_fallback() {
    use eniroute::config::MetadataConfig;
    let auto = ImdsOptions::from(&MetadataConfig::default());
    assert_eq!(auto.endpoint, "http://169.254.169.254");
    assert_eq!(auto.fallback.as_deref(), Some("http://[fd00:ec2::254]"));
    for explicit in [
        MetadataConfig {
            endpoint: Some("http://169.254.169.254".into()),
            ..Default::default()
        },
        MetadataConfig {
            use_ipv6: true,
            ..Default::default()
        },
    ] {
        assert_eq!(ImdsOptions::from(&explicit).fallback, None, "{explicit:?}");
    }
}

#[tokio::test]
async fn a_refused_first_endpoint_falls_back_and_says_so() {
    let sim = sim(two_enis());
    // Nothing listens on port 9 of loopback: connection refused.
    let c = ImdsClient::new(automatic("http://127.0.0.1:9".into(), sim.endpoint())).unwrap();
    let inst = fetch_instance(&c, &Scope::All).await.unwrap();
    assert_eq!(inst.enis.len(), 2);
    assert_eq!(c.endpoint(), sim.endpoint());
    let said = c.endpoint_in_use().to_string();
    assert!(
        said.contains(&sim.endpoint()) && said.contains("127.0.0.1:9 did not answer"),
        "{said}"
    );
}

#[tokio::test]
async fn a_silent_first_endpoint_falls_back_and_is_not_asked_again() {
    let silent = Silent::start();
    let sim = sim(two_enis());
    let c = ImdsClient::new(automatic(format!("http://{}", silent.addr), sim.endpoint())).unwrap();
    fetch_instance(&c, &Scope::All).await.unwrap();
    assert_eq!(
        silent.accepted(),
        1,
        "one timed-out attempt, then the fallback"
    );
    assert_eq!(c.endpoint(), sim.endpoint());
    // A new token is needed (IMDS restarted): the endpoint that answered
    // is asked first.
    sim.revoke_tokens();
    fetch_instance(&c, &Scope::All).await.unwrap();
    assert_eq!(silent.accepted(), 1);
}

#[tokio::test]
async fn when_both_endpoints_answer_the_first_is_used() {
    let v4 = sim(two_enis());
    let v6 = sim(two_enis());
    let c = ImdsClient::new(automatic(v4.endpoint(), v6.endpoint())).unwrap();
    fetch_instance(&c, &Scope::All).await.unwrap();
    assert!(v4.requests() > 0);
    assert_eq!(v6.requests(), 0);
    assert_eq!(c.endpoint(), v4.endpoint());
    assert!(
        c.endpoint_in_use()
            .to_string()
            .contains("chosen automatically"),
        "{}",
        c.endpoint_in_use()
    );
}

#[tokio::test]
async fn a_configured_endpoint_is_never_second_guessed() {
    let v6 = sim(two_enis());
    let cfg = eniroute::config::MetadataConfig {
        endpoint: Some("http://127.0.0.1:9".into()),
        ipv6_endpoint: v6.endpoint(),
        ..Default::default()
    };
    let c = ImdsClient::new(ImdsOptions {
        retry_budget: Duration::from_millis(600),
        ..ImdsOptions::from(&cfg)
    })
    .unwrap();
    let e = fetch_instance(&c, &Scope::All).await.unwrap_err();
    assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
    assert_eq!(v6.requests(), 0);
    assert_eq!(
        c.endpoint_in_use().to_string(),
        "http://127.0.0.1:9 (configured)"
    );
}

#[tokio::test]
async fn when_neither_answers_the_error_names_both() {
    let c = ImdsClient::new(automatic(
        "http://127.0.0.1:9".into(),
        "http://127.0.0.1:7".into(),
    ))
    .unwrap();
    let e = fetch_instance(&c, &Scope::All).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("http://127.0.0.1:9 or http://127.0.0.1:7"),
        "{text}"
    );
}

/// What the daemon's metrics report: every HTTP request (token and
/// retries included, as the simulator counts them), failed ones by class,
/// a 404 as an answer; a client made later adds to the same counts.
#[tokio::test]
async fn request_counts_match_the_endpoint_and_class_failures() {
    use eniroute::imds::client::RequestCounts;
    let s = sim(two_enis());
    let counts = RequestCounts::default();
    let c = client(&s).with_counts(counts.clone());
    assert!(c.get("mac").await.unwrap().is_some());
    assert_eq!(c.get("no-such-key").await.unwrap(), None);
    s.set_fault(Some("instance-id"), Some(Fault::Status(500)));
    assert!(c.get("instance-id").await.is_err());
    s.set_fault(Some("instance-id"), Some(Fault::Oversized));
    assert!(c.get("instance-id").await.is_err());
    s.set_fault(Some("instance-id"), None);
    assert_eq!(counts.requests(), s.requests());
    let errors: std::collections::BTreeMap<_, _> = counts.errors().into_iter().collect();
    // Four attempts at a 500; one at a body too large (not worth a retry).
    assert_eq!(errors["http_5xx"], 4, "{errors:?}");
    assert_eq!(errors["http_4xx"], 0, "{errors:?}");
    assert_eq!(errors["body"], 1, "{errors:?}");

    let again = client(&s).with_counts(counts.clone());
    assert!(again.get("mac").await.unwrap().is_some());
    assert_eq!(counts.requests(), s.requests());
}
