//! Proxy variables in the environment must not affect the metadata client.
//! A test binary of its own: it changes the process environment, which would
//! race with tests running beside it.

use std::net::TcpListener;
use std::time::Duration;

use eniroute::imds::client::{ImdsClient, ImdsOptions};
use eniroute_lab::sim::Simulator;
use serde_json::json;

#[tokio::test]
async fn environment_proxies_are_ignored() {
    let sim = Simulator::bind(
        "127.0.0.1:0".parse().unwrap(),
        json!({"mac": "0a:00:00:00:00:01"}),
    )
    .unwrap();
    // A proxy that refuses every connection.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = format!("http://{closed}");
    for var in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        std::env::set_var(var, &proxy);
    }
    for var in ["no_proxy", "NO_PROXY"] {
        std::env::remove_var(var);
    }

    // Control: a client that honours the environment goes to the dead proxy,
    // so the variables are in effect.
    let honouring = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = honouring
        .put(format!("{}/latest/api/token", sim.endpoint()))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(sim.requests(), 0);

    let client = ImdsClient::new(ImdsOptions {
        endpoint: sim.endpoint(),
        ..ImdsOptions::default()
    })
    .unwrap();
    assert_eq!(
        client.get("mac").await.unwrap().as_deref(),
        Some("0a:00:00:00:00:01")
    );
    assert_eq!(sim.requests(), 2);
}
