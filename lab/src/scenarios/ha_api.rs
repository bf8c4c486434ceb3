//! The ha-failover scenario's API-driven variants: EC2's control plane is
//! moto's EC2 server behind the lab's EC2 front (see `ec2_api`), metadata
//! follows the emulator's state after EC2's lag (1 s), and the standby runs
//! `eniroute takeover` for a secondary IP and then for an ENI while a client
//! sends a request every 10 ms. The outage counts from the command's start.
//! In the same run, the same moves (back to the primary) are done the usual
//! way for comparison: the AWS CLI, then waiting for metadata, then
//! `eniroute refresh`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ha_failover::{baseline, Outage, Prober, Sample, CONFIG, SERVICE_PORT};
use super::runner::{human, net4, sock};
use super::Session;
use crate::agent::wait_for;
use crate::ec2_api::{self, Ec2Lab, Host, REGION};
use crate::{Client, Instance};

/// The targets: the first answered request after EC2's answer.
const IP_TARGET: Duration = Duration::from_millis(100);
const ENI_TARGET: Duration = Duration::from_millis(300);
const FLOATING_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 100);
const SERVICE_ENI_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 50);

/// A service that answers each connection with the name of its instance,
/// so the client can tell who answered.
struct Named {
    stop: Arc<AtomicBool>,
    port: u16,
    ns: Instance,
}

impl Named {
    fn start(ns: &Instance, name: &'static str) -> io::Result<Named> {
        let listener =
            ns.run_in(|| TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], SERVICE_PORT))))??;
        let stop = Arc::new(AtomicBool::new(false));
        let halt = Arc::clone(&stop);
        std::thread::Builder::new()
            .name(format!("service-{name}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if halt.load(Ordering::Acquire) {
                        return;
                    }
                    if let Ok(mut c) = conn {
                        let _ = writeln!(c, "{name}");
                    }
                }
            })?;
        Ok(Named {
            stop,
            port: SERVICE_PORT,
            ns: ns.clone(),
        })
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let wake = SocketAddr::from(([127, 0, 0, 1], self.port));
        let _ = self
            .ns
            .run_in(move || TcpStream::connect_timeout(&wake, Duration::from_millis(200)));
    }
}

/// Who answers at `ip` from the client (within 300 ms), if anyone.
fn who(client: &Client, ip: Ipv4Addr) -> Option<String> {
    let dst = sock(ip, SERVICE_PORT);
    client
        .run_in(move || {
            let mut s = TcpStream::connect_timeout(&dst, Duration::from_millis(300)).ok()?;
            s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out.trim().to_string())
        })
        .ok()
        .flatten()
}

pub(super) fn run(s: &mut Session) -> io::Result<()> {
    s.say("");
    s.say("━━ ha-failover, driven through the EC2 API (moto's EC2 server) ━━");
    if ec2_api::moto_server().is_none() {
        s.say(&format!("  API-driven variants {}", ec2_api::MOTO_MISSING));
        return Ok(());
    }
    let mut lab = Ec2Lab::start()?;
    for cidr in ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"] {
        lab.subnet(cidr, "us-east-1a")?;
    }
    let primary = lab.instance(
        "a1",
        &[
            ("eth0", "10.0.1.0/24", &["10.0.1.10"]),
            ("eth1", "10.0.2.0/24", &["10.0.2.50"]),
            ("eth2", "10.0.3.0/24", &["10.0.3.10", "10.0.3.100"]),
        ],
    )?;
    let standby = lab.instance(
        "a2",
        &[
            ("eth0", "10.0.1.0/24", &["10.0.1.20"]),
            ("eth2", "10.0.3.0/24", &["10.0.3.20"]),
        ],
    )?;
    let client = lab.vpc.client("client", net4("198.51.100.10/24")?)?;
    let service_eni = primary.eni_id("eth1")?.to_string();
    s.instance_ns("API primary", &primary.ns);
    s.instance_ns("API standby", &standby.ns);
    s.client("API client", &client);
    s.note(&format!(
        "EC2 API: moto's EC2 server behind the lab's front at {}; metadata follows it after {}",
        lab.endpoint,
        human(ec2_api::DEFAULT_LAG)
    ));
    s.note(&format!(
        "primary {} and standby {}; floating: {FLOATING_IP} (primary's eth2) and ENI {service_eni} ({SERVICE_ENI_IP})",
        primary.instance_id, standby.instance_id
    ));

    let started = Instant::now();
    s.start_agent_at("API primary", &primary.ns, &primary.endpoint, Some(CONFIG))?;
    s.start_agent_at("API standby", &standby.ns, &standby.endpoint, Some(CONFIG))?;
    let ready = wait_for(Duration::from_secs(10), || {
        routed(&primary.ns, "10.0.3.100") && routed(&standby.ns, "10.0.3.20")
    });
    s.record(
        "API lab: agents in both instances configured their ENIs",
        ready.is_some(),
        String::new(),
        started.elapsed(),
    );
    let mut primary_service = Some(Named::start(&primary.ns, "primary")?);
    let mut standby_service = Some(Named::start(&standby.ns, "standby")?);
    let agent = s.agent();
    let takeover_ip = [
        "takeover",
        "--ip",
        "10.0.3.100",
        "--ec2-endpoint",
        &lab.endpoint,
    ];

    // ---- the secondary IP, by `eniroute takeover` -----------------------
    let prober = Prober::start(&client, sock(FLOATING_IP, SERVICE_PORT))?;
    baseline(s, &prober, "primary", FLOATING_IP)?;
    drop(primary_service.take());
    let failed = Instant::now();
    let out = agent.run_at(&standby.ns, &standby.endpoint, &takeover_ip);
    let samples = prober.finish_after_recovery(failed)?;
    let ip_takeover = judge(
        s,
        "secondary IP move by `eniroute takeover`",
        &samples,
        failed,
        lab.accepted("AssignPrivateIpAddresses"),
        IP_TARGET,
        &out,
    );
    primary_service = Some(Named::start(&primary.ns, "primary")?);
    old_holder(s, &client, &primary, FLOATING_IP, "standby");

    // ---- the same move back, the usual way ---------------------------------
    let ip_cli = match ec2_api::aws_cli() {
        None => {
            s.say("  CLI baseline skipped: aws (PyPI awscli) not found");
            None
        }
        Some(aws) => {
            let prober = Prober::start(&client, sock(FLOATING_IP, SERVICE_PORT))?;
            baseline(s, &prober, "standby", FLOATING_IP)?;
            drop(standby_service.take());
            let failed = Instant::now();
            let eth2 = primary.eni_id("eth2")?.to_string();
            let cli = cli(
                &aws,
                &primary,
                &lab.endpoint,
                &[
                    "ec2",
                    "assign-private-ip-addresses",
                    "--network-interface-id",
                    &eth2,
                    "--private-ip-addresses",
                    "10.0.3.100",
                    "--allow-reassignment",
                ],
            );
            let seen = wait_for(Duration::from_secs(15), || {
                lists(&primary, "10.0.3.100", &eth2)
            });
            let refresh = agent.run_at(&primary.ns, &primary.endpoint, &["refresh"]);
            let samples = prober.finish_after_recovery(failed)?;
            standby_service = Some(Named::start(&standby.ns, "standby")?);
            let step = format!(
                "aws CLI {}, metadata after {}, refresh {}",
                cli_note(&cli),
                seen.map_or("never".into(), human),
                if matches!(&refresh, Ok(o) if o.status.success()) {
                    "ok"
                } else {
                    "failed"
                }
            );
            plain_outage(
                s,
                "secondary IP move with the AWS CLI + metadata + refresh",
                &samples,
                failed,
                &step,
            )
        }
    };
    compare(s, "secondary IP move", ip_takeover, ip_cli);

    // ---- the service ENI, by `eniroute takeover` --------------------------
    let prober = Prober::start(&client, sock(SERVICE_ENI_IP, SERVICE_PORT))?;
    baseline(s, &prober, "primary", SERVICE_ENI_IP)?;
    drop(primary_service.take());
    let failed = Instant::now();
    let out = agent.run_at(
        &standby.ns,
        &standby.endpoint,
        &[
            "takeover",
            "--eni",
            &service_eni,
            "--force-detach",
            "--ec2-endpoint",
            &lab.endpoint,
        ],
    );
    let samples = prober.finish_after_recovery(failed)?;
    let eni_takeover = judge(
        s,
        "ENI move by `eniroute takeover`",
        &samples,
        failed,
        lab.accepted("AttachNetworkInterface"),
        ENI_TARGET,
        &out,
    );
    primary_service = Some(Named::start(&primary.ns, "primary")?);
    old_holder(s, &client, &primary, SERVICE_ENI_IP, "standby");

    // ---- the ENI back, the usual way ---------------------------------------
    let eni_cli = match ec2_api::aws_cli() {
        None => None,
        Some(aws) => {
            let prober = Prober::start(&client, sock(SERVICE_ENI_IP, SERVICE_PORT))?;
            baseline(s, &prober, "standby", SERVICE_ENI_IP)?;
            drop(standby_service.take());
            let failed = Instant::now();
            let attachment = cli(
                &aws,
                &primary,
                &lab.endpoint,
                &[
                    "ec2",
                    "describe-network-interfaces",
                    "--network-interface-ids",
                    &service_eni,
                    "--query",
                    "NetworkInterfaces[0].Attachment.AttachmentId",
                    "--output",
                    "text",
                ],
            );
            let attachment_id = String::from_utf8_lossy(&attachment.stdout)
                .trim()
                .to_string();
            let detach = cli(
                &aws,
                &primary,
                &lab.endpoint,
                &[
                    "ec2",
                    "detach-network-interface",
                    "--attachment-id",
                    &attachment_id,
                    "--force",
                ],
            );
            let attach = cli(
                &aws,
                &primary,
                &lab.endpoint,
                &[
                    "ec2",
                    "attach-network-interface",
                    "--network-interface-id",
                    &service_eni,
                    "--instance-id",
                    &primary.instance_id,
                    "--device-index",
                    "1",
                ],
            );
            let seen = wait_for(Duration::from_secs(15), || {
                lists(&primary, &service_eni, &service_eni)
            });
            let refresh = agent.run_at(&primary.ns, &primary.endpoint, &["refresh"]);
            let samples = prober.finish_after_recovery(failed)?;
            let step = format!(
                "aws CLI describe {}, detach {}, attach {}, metadata after {}, refresh {}",
                cli_note(&attachment),
                cli_note(&detach),
                cli_note(&attach),
                seen.map_or("never".into(), human),
                if matches!(&refresh, Ok(o) if o.status.success()) {
                    "ok"
                } else {
                    "failed"
                }
            );
            plain_outage(
                s,
                "ENI move with the AWS CLI + metadata + refresh",
                &samples,
                failed,
                &step,
            )
        }
    };
    compare(s, "ENI move", eni_takeover, eni_cli);

    drop(primary_service);
    drop(standby_service);
    s.done((client, primary, standby, lab));
    Ok(())
}

/// Whether `ns` has a rule for `addr` (the agent configured it).
fn routed(ns: &Instance, addr: &str) -> bool {
    ns.ip(["-4", "rule"])
        .is_ok_and(|r| r.contains(&format!("from {addr} lookup")))
}

/// Whether `host`'s metadata shows `what` (an address, an ENI id) and the
/// ENI `eni` at all.
fn lists(host: &Host, what: &str, eni: &str) -> bool {
    let tree = host.sim.tree().to_string();
    tree.contains(what) && tree.contains(eni)
}

/// Runs the AWS CLI in `host` against the lab's EC2 endpoint, with the
/// lab's keys in the environment, as a failover script would.
fn cli(aws: &Path, host: &Host, endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = host.ns.command(aws);
    cmd.args(["--endpoint-url", endpoint, "--region", REGION])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIALABCLI0000000000")
        .env("AWS_SECRET_ACCESS_KEY", "lab-cli-secret")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    cmd.output().unwrap_or_else(|e| Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
        stdout: Vec::new(),
        stderr: format!("cannot run {}: {e}", aws.display()).into_bytes(),
    })
}

fn cli_note(o: &Output) -> String {
    if o.status.success() {
        "ok".into()
    } else {
        format!(
            "failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )
    }
}

/// Records the outage of a takeover and its part after EC2's answer;
/// returns the outage when the standby answered.
fn judge(
    s: &mut Session,
    what: &str,
    samples: &[Sample],
    failed: Instant,
    accepted: Option<Instant>,
    target: Duration,
    out: &io::Result<Output>,
) -> Option<Duration> {
    let step = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("EC2 "))
            .collect::<Vec<_>>()
            .join("; "),
        Ok(o) => format!(
            "takeover failed (exit {:?}): {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("takeover did not run: {e}"),
    };
    let outage = plain_outage(s, what, samples, failed, &step)?;
    let o = Outage::find(samples, failed)?;
    let Some(accepted) = accepted else {
        s.record(
            &format!("{what}: EC2 accepted the change"),
            false,
            step,
            outage,
        );
        return Some(outage);
    };
    let after = o.first_ok.saturating_duration_since(accepted);
    s.measure(&format!("{what}: EC2's answer -> first answer"), after);
    s.record(
        &format!(
            "{what}: first answered request within {} of EC2's answer",
            human(target)
        ),
        after <= target,
        format!(
            "{}; EC2 answered {} after the command started",
            human(after),
            human(accepted.saturating_duration_since(failed))
        ),
        after,
    );
    Some(outage)
}

/// Records the client-observed outage from `failed` on.
fn plain_outage(
    s: &mut Session,
    what: &str,
    samples: &[Sample],
    failed: Instant,
    step: &str,
) -> Option<Duration> {
    let Some(o) = Outage::find(samples, failed) else {
        s.record(
            &format!("{what}: the new holder answers"),
            false,
            format!("no answer after the failure; {step}"),
            failed.elapsed(),
        );
        return None;
    };
    let outage = o.first_ok.saturating_duration_since(o.last_ok);
    s.measure(&format!("{what}: client-observed outage"), outage);
    s.record(
        &format!("{what}: the new holder answers"),
        o.lost_after == 0,
        format!(
            "client-observed outage {} ({} requests unanswered) from the command's start; {step}",
            human(outage),
            o.lost
        ),
        outage,
    );
    Some(outage)
}

/// After a move, the old holder's service is back, yet the client keeps
/// reaching the new holder; once metadata caught up, the old holder's agent
/// has dropped the address (or lost the ENI).
fn old_holder(s: &mut Session, client: &Client, old: &Host, addr: Ipv4Addr, new: &str) {
    let answers: Vec<Option<String>> = (0..5).map(|_| who(client, addr)).collect();
    let from_new = answers.iter().filter(|a| a.as_deref() == Some(new)).count();
    let dropped = wait_for(ec2_api::DEFAULT_LAG * 5, || {
        old.ns
            .ip(["-4", "-o", "addr"])
            .is_ok_and(|a| !a.contains(&format!("inet {addr}/")))
    });
    s.record(
        &format!("the old holder no longer answers for {addr}"),
        from_new == answers.len() && dropped.is_some(),
        format!(
            "{from_new} of {} answers from the {new} with the old holder's service back; the old holder {}",
            answers.len(),
            match dropped {
                Some(d) => format!("dropped the address {} later", human(d)),
                None => "still holds the address".into(),
            }
        ),
        Duration::ZERO,
    );
}

fn compare(s: &mut Session, what: &str, takeover: Option<Duration>, cli: Option<Duration>) {
    let (Some(t), Some(c)) = (takeover, cli) else {
        return;
    };
    let ratio = c.as_secs_f64() / t.as_secs_f64().max(0.001);
    s.record(
        &format!("{what}: `eniroute takeover` clearly below the CLI baseline"),
        t * 2 <= c,
        format!(
            "takeover {}, AWS CLI + metadata + refresh {}: {ratio:.1}x shorter",
            human(t),
            human(c)
        ),
        t,
    );
}
