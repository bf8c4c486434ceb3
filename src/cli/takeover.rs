//! `eniroute takeover`: moves a secondary IP (`--ip`) or a whole ENI
//! (`--eni`) to this instance through the EC2 API, and routes it here as
//! soon as EC2 accepts, from EC2's answer, without waiting for metadata.
//!
//! Nothing local changes before EC2 has accepted; what EC2 answered becomes
//! a claim in this namespace's state directory ([`crate::claim`]), which
//! the running daemon merges into its metadata view when told to refresh
//! (SIGUSR1), or which this command applies itself through the same
//! reconcile when no daemon runs. Metadata confirms it later.
//!
//! Exit codes are for keepalived and pacemaker scripts (see README, "High
//! availability"): each failure says what was and was not changed.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{fetch, fetch_in, imds_client, kernel, load_config, runtime, Cli, Failure};
use crate::agent::Namespace;
use crate::claim::{self, Claim, Claimed};
use crate::config::Config;
use crate::ec2::client::{endpoint_from_env, Class, ErrorKind};
use crate::ec2::credentials::{self, Env};
use crate::ec2::{Ec2Client, Ec2Error, Ec2Options};
use crate::imds::client::ImdsClient;
use crate::imds::fetch::Scope;
use crate::imds::model::{Eni, Instance};
use crate::netlink::Kernel;
use crate::state;
use crate::values::{EniKey, Mac};

/// Exit codes beyond 0, 1 (runtime failure, nothing certain) and 2 (bad
/// input; nothing was changed).
pub const EXIT_METADATA: u8 = 5;
pub const EXIT_PERMISSION: u8 = 6;
pub const EXIT_IN_USE: u8 = 7;
pub const EXIT_THROTTLED: u8 = 8;
pub const EXIT_HALF_WAY: u8 = 9;

/// How long the local routing may take after EC2 accepted: an address is
/// routed in milliseconds; a moved ENI's link appears when the hypervisor
/// hot-plugs it, which on EC2 takes a few seconds.
const ADDRESS_WAIT: Duration = Duration::from_secs(10);
const ENI_WAIT: Duration = Duration::from_secs(60);
/// How long a detach may take before the ENI can be attached here.
const DETACH_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["ip", "eni"]).multiple(true)))]
pub struct Args {
    /// Move this secondary private IPv4 (or IPv6) address to an ENI of this
    /// instance, reassigning it from whichever ENI holds it
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<IpAddr>,
    /// With --ip: the ENI of this instance to give the address [default: the
    /// one whose subnet holds it]. Alone: detach this ENI from wherever it
    /// is and attach it here
    #[arg(long, value_name = "ENI_ID")]
    pub eni: Option<String>,
    /// With --eni alone: attach as this device index [default: the lowest
    /// free one]
    #[arg(long, value_name = "N", conflicts_with = "ip")]
    pub device_index: Option<u32>,
    /// With --eni alone: detach it forcibly from a failed instance
    #[arg(long, conflicts_with = "ip")]
    pub force_detach: bool,
    /// With --ip: refuse (exit 7) if another ENI holds the address, instead
    /// of reassigning it
    #[arg(long, requires = "ip")]
    pub no_reassign: bool,
    /// EC2 API endpoint [default: $AWS_ENDPOINT_URL_EC2, $AWS_ENDPOINT_URL,
    /// else https://ec2.REGION.amazonaws.com]
    #[arg(long, value_name = "URL")]
    pub ec2_endpoint: Option<String>,
}

fn fail(code: u8, message: impl std::fmt::Display) -> Failure {
    Failure {
        code,
        message: message.to_string(),
    }
}

/// EC2's refusal as a script reads it. `done` says what had already been
/// changed, for the message.
fn ec2_failure(e: &Ec2Error, done: &str) -> Failure {
    let action = e.action;
    let tail = if done.is_empty() {
        "nothing was changed".to_string()
    } else {
        done.to_string()
    };
    if unanswered_change(e) {
        // The request went out and no answer came back: EC2 may have acted
        // on it, so "nothing was changed" could be false. It is not retried
        // blindly either; the same takeover finishes whatever EC2 did.
        let done = if done.is_empty() {
            String::new()
        } else {
            format!("{done}; ")
        };
        return fail(
            1,
            format!(
                "{e}; EC2 may have made the change before the connection ended: run the same \
                 takeover again; {done}this instance's routing is unchanged"
            ),
        );
    }
    match e.class() {
        Class::PermissionDenied => fail(
            EXIT_PERMISSION,
            format!(
                "permission denied: this instance's role may not call ec2:{action} (allow \
                 ec2:{action} in its IAM policy; see packaging/ha/iam-policy.json); {tail}: {e}"
            ),
        ),
        Class::Throttled => fail(
            EXIT_THROTTLED,
            format!("EC2 throttled ec2:{action} through every retry; {tail}; try again: {e}"),
        ),
        Class::InUse => fail(
            EXIT_IN_USE,
            format!("held elsewhere and not reassigned; {tail}: {e}"),
        ),
        Class::NotFound | Class::BadRequest => fail(2, format!("EC2 refused: {e}; {tail}")),
        Class::Unavailable => fail(1, format!("{e}; {tail}")),
    }
}

pub fn run(cli: &Cli, args: &Args) -> Result<(), Failure> {
    let cfg = load_config(cli)?;
    let imds = imds_client(&cfg)?;
    runtime()?.block_on(async {
        let unread =
            |f: Failure| fail(EXIT_METADATA, format!("{}; nothing was changed", f.message));
        // Every listed ENI, linked here or not: the device number a new
        // attachment gets is the lowest one none of them uses.
        let instance = fetch_in(&imds, &Scope::All).await.map_err(unread)?;
        let ec2 = ec2_client(args, &imds).await?;
        match (args.ip, &args.eni) {
            (Some(ip), eni) => {
                take_address(
                    &cfg,
                    &imds,
                    &ec2,
                    &instance,
                    ip,
                    eni.as_deref(),
                    args.no_reassign,
                )
                .await
            }
            (None, Some(eni)) => take_eni(&cfg, &imds, &ec2, &instance, eni, args).await,
            (None, None) => Err(Failure::usage("give --ip ADDR or --eni ENI_ID")),
        }
    })
}

async fn ec2_client(args: &Args, imds: &ImdsClient) -> Result<Ec2Client, Failure> {
    let env = Env::from_process();
    let no_creds = |e: credentials::CredentialsError| {
        fail(
            EXIT_METADATA,
            format!("{}; nothing was changed", crate::error_chain(&e)),
        )
    };
    let creds = credentials::resolve(&env, imds).await.map_err(no_creds)?;
    let region = credentials::region(&env, imds).await.map_err(no_creds)?;
    let mut opts = Ec2Options::new(&region);
    opts.endpoint = args.ec2_endpoint.clone().or_else(endpoint_from_env);
    Ec2Client::new(opts, creds).map_err(Failure::usage)
}

async fn metadata_value(imds: &ImdsClient, path: &str) -> Result<String, Failure> {
    match imds.get(path).await {
        Ok(Some(v)) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Ok(_) => Err(fail(
            EXIT_METADATA,
            format!("metadata has no latest/meta-data/{path}; nothing was changed"),
        )),
        Err(e) => Err(fail(
            EXIT_METADATA,
            format!("{}; nothing was changed", super::metadata_message(&e)),
        )),
    }
}

async fn take_address(
    cfg: &Config,
    imds: &ImdsClient,
    ec2: &Ec2Client,
    instance: &Instance,
    ip: IpAddr,
    eni_id: Option<&str>,
    no_reassign: bool,
) -> Result<(), Failure> {
    let target = address_target(instance, ip, eni_id)?;
    let label = target.label();
    let eni = target.interface_id.clone().ok_or_else(|| {
        fail(
            EXIT_METADATA,
            format!("metadata gives ENI {label} no interface-id; nothing was changed"),
        )
    })?;
    let t0 = Instant::now();
    let assigned = match ip {
        IpAddr::V4(a) => ec2
            .assign_private_ip(&eni, a, !no_reassign)
            .await
            .map_err(|e| ec2_failure(&e, ""))?
            .contains(&a),
        IpAddr::V6(a) => {
            // EC2 has no reassignment for IPv6: the holder gives it up first.
            let mut unassigned: Vec<String> = Vec::new();
            if !no_reassign {
                let holders = ec2
                    .enis_holding(ip)
                    .await
                    .map_err(|e| ec2_failure(&e, ""))?;
                for h in holders.iter().filter(|h| h.id != eni) {
                    ec2.unassign_ipv6(&h.id, a).await.map_err(|e| {
                        let done = if unassigned.is_empty() {
                            String::new()
                        } else {
                            format!("{a} was unassigned from {}", unassigned.join(", "))
                        };
                        ec2_failure(&e, &done)
                    })?;
                    println!("EC2 unassigned {a} from {}", h.id);
                    unassigned.push(h.id.clone());
                }
            }
            ec2.assign_ipv6(&eni, a)
                .await
                .map_err(|e| ipv6_half_way(&e, a, &unassigned, &label))?
                .contains(&a)
        }
    };
    if !assigned {
        return Err(fail(
            1,
            format!("EC2 accepted the assignment of {ip} to {label} but its answer does not list the address; nothing was changed here"),
        ));
    }
    println!(
        "EC2 assigned {ip} to {label} in {} ms",
        t0.elapsed().as_millis()
    );
    let accepted = Instant::now();
    let subject = Subject {
        mac: target.mac,
        address: ip,
        what: format!("{ip} on {label}"),
    };
    route_here(
        cfg,
        imds,
        instance.primary_mac,
        Claimed::Address {
            mac: target.mac,
            address: ip,
        },
        &subject,
        ADDRESS_WAIT,
        accepted,
    )
    .await
}

/// A call that changes something was sent, and the connection ended without
/// an answer.
fn unanswered_change(e: &Ec2Error) -> bool {
    matches!(e.kind, ErrorKind::Timeout | ErrorKind::Transport(_))
        && matches!(
            e.action,
            "AssignPrivateIpAddresses"
                | "AssignIpv6Addresses"
                | "UnassignIpv6Addresses"
                | "DetachNetworkInterface"
                | "AttachNetworkInterface"
        )
}

/// The assignment of an IPv6 address failed. Once it was unassigned from
/// its holder, no ENI holds it: that is half way, as a detached ENI is, and
/// the same takeover finishes it.
fn ipv6_half_way(
    e: &Ec2Error,
    a: std::net::Ipv6Addr,
    unassigned: &[String],
    label: &str,
) -> Failure {
    if unassigned.is_empty() {
        return ec2_failure(e, "");
    }
    fail(
        EXIT_HALF_WAY,
        format!(
            "{a} was unassigned from {} but assigning it to {label} failed, so no ENI holds it \
             now: run the same takeover again; this instance's routing is unchanged: {e}",
            unassigned.join(", ")
        ),
    )
}

/// The ENI of this instance that is to hold `ip`: the one named, or the
/// one whose subnet holds it.
fn address_target<'a>(
    instance: &'a Instance,
    ip: IpAddr,
    eni_id: Option<&str>,
) -> Result<&'a Eni, Failure> {
    let in_subnet = |e: &Eni| match ip {
        IpAddr::V4(a) => e.subnet_v4.is_some_and(|n| n.contains(&a)),
        IpAddr::V6(a) => e.subnet_v6.iter().any(|n| n.contains(&a)),
    };
    let subnets = |e: &Eni| match ip {
        IpAddr::V4(_) => e
            .subnet_v4
            .map(|n| n.to_string())
            .unwrap_or_else(|| "no IPv4 subnet".into()),
        IpAddr::V6(_) => {
            let s: Vec<String> = e.subnet_v6.iter().map(|n| n.to_string()).collect();
            if s.is_empty() {
                "no IPv6 subnet".into()
            } else {
                s.join(", ")
            }
        }
    };
    if let Some(id) = eni_id {
        let eni = instance
            .ready()
            .find(|e| e.interface_id.as_deref() == Some(id))
            .ok_or_else(|| {
                Failure::usage(format!(
                    "ENI {id} is not attached to this instance (metadata lists {}); nothing was changed",
                    listed(instance)
                ))
            })?;
        if !in_subnet(eni) {
            return Err(Failure::usage(format!(
                "{ip} is not in the subnet of ENI {} ({}); nothing was changed",
                eni.label(),
                subnets(eni)
            )));
        }
        return Ok(eni);
    }
    let mut fitting = instance.ready().filter(|e| in_subnet(e));
    match (fitting.next(), fitting.next()) {
        (Some(e), None) => Ok(e),
        (Some(a), Some(b)) => Err(Failure::usage(format!(
            "{ip} is in the subnet of ENIs {} and {}; name one with --eni; nothing was changed",
            a.label(),
            b.label()
        ))),
        (None, _) => Err(Failure::usage(format!(
            "{ip} is in none of this instance's subnets ({}); nothing was changed",
            instance
                .ready()
                .map(|e| format!("{}: {}", e.label(), subnets(e)))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

fn listed(instance: &Instance) -> String {
    let ids: Vec<String> = instance.ready().map(Eni::label).collect();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

async fn take_eni(
    cfg: &Config,
    imds: &ImdsClient,
    ec2: &Ec2Client,
    instance: &Instance,
    eni_id: &str,
    args: &Args,
) -> Result<(), Failure> {
    let me = metadata_value(imds, "instance-id").await?;
    let az = metadata_value(imds, "placement/availability-zone").await?;
    let eni = describe(ec2, eni_id, "").await?;
    if eni.availability_zone != az {
        return Err(Failure::usage(format!(
            "ENI {eni_id} is in availability zone {}, this instance ({me}) in {az}: an ENI can only \
             be attached to an instance of its own zone; nothing was changed",
            eni.availability_zone
        )));
    }
    let subnet = ec2
        .describe_subnet(&eni.subnet_id)
        .await
        .map_err(|e| ec2_failure(&e, ""))?;
    let vpc = ec2
        .describe_vpc(&eni.vpc_id)
        .await
        .map_err(|e| ec2_failure(&e, ""))?;
    let here = eni.attachment.as_ref().filter(|a| {
        a.instance_id.as_deref() == Some(me.as_str())
            && a.status != "detaching"
            && a.status != "detached"
    });
    let device = match (here, args.device_index) {
        (Some(a), _) => a.device_index,
        (None, Some(n)) => n,
        (None, None) => lowest_free_device(instance),
    };
    let key = EniKey::new(0, device)
        .map_err(|e| Failure::usage(format!("--device-index {device}: {e}")))?;
    let t0 = Instant::now();
    if here.is_some() {
        println!("ENI {eni_id} is already attached to this instance as device {device}");
    } else {
        let mut detached_from = None;
        if let Some(a) = eni.attachment.as_ref().filter(|a| a.status != "detached") {
            let from = a
                .instance_id
                .clone()
                .unwrap_or_else(|| "another instance".into());
            ec2.detach(&a.id, args.force_detach)
                .await
                .map_err(|e| ec2_failure(&e, ""))?;
            println!(
                "EC2 detached {eni_id} from {from}{} in {} ms",
                if args.force_detach { " (forced)" } else { "" },
                t0.elapsed().as_millis()
            );
            wait_available(ec2, eni_id, &from).await?;
            detached_from = Some(from);
        }
        let attached = ec2.attach(eni_id, &me, device).await;
        if let Err(e) = attached {
            return Err(match detached_from {
                Some(from) => {
                    let f = ec2_failure(&e, "");
                    fail(
                        EXIT_HALF_WAY,
                        format!(
                            "ENI {eni_id} was detached from {from} but attaching it here as device \
                             {device} failed, so it is attached nowhere now: run the same \
                             takeover again (or attach it back to {from}); this instance's \
                             routing is unchanged: {}",
                            f.message
                        ),
                    )
                }
                None => ec2_failure(&e, ""),
            });
        }
        println!(
            "EC2 attached {eni_id} to {me} as device {device} in {} ms",
            t0.elapsed().as_millis()
        );
    }
    let accepted = Instant::now();
    let moved = Eni {
        mac: eni.mac,
        key,
        interface_id: Some(eni.id.clone()),
        subnet_id: Some(eni.subnet_id.clone()),
        vpc_id: Some(eni.vpc_id.clone()),
        ipv4s: eni.ipv4s.clone(),
        ipv4_prefixes: eni.ipv4_prefixes.clone(),
        ipv6s: eni.ipv6s.clone(),
        ipv6_prefixes: eni.ipv6_prefixes.clone(),
        subnet_v4: Some(subnet.cidr),
        subnet_v6: subnet.ipv6_cidrs.clone(),
        vpc_v4: vpc.cidrs.clone(),
        vpc_v6: vpc.ipv6_cidrs.clone(),
    };
    let Some(primary) = moved
        .primary_ipv4()
        .map(IpAddr::V4)
        .or_else(|| moved.ipv6s.first().copied().map(IpAddr::V6))
    else {
        return Err(fail(
            1,
            format!("ENI {eni_id} has no address to route; it is attached here"),
        ));
    };
    let subject = Subject {
        mac: eni.mac,
        address: primary,
        what: format!("ENI {eni_id} ({}) with {primary}", eni.mac),
    };
    route_here(
        cfg,
        imds,
        instance.primary_mac,
        Claimed::Eni { eni: moved },
        &subject,
        ENI_WAIT,
        accepted,
    )
    .await
}

async fn describe(
    ec2: &Ec2Client,
    eni_id: &str,
    done: &str,
) -> Result<crate::ec2::api::NetworkInterface, Failure> {
    let found = ec2
        .describe_network_interfaces(&[eni_id.to_string()])
        .await
        .map_err(|e| ec2_failure(&e, done))?;
    found
        .into_iter()
        .find(|e| e.id == eni_id)
        .ok_or_else(|| Failure::usage(format!("EC2 knows no ENI {eni_id}; nothing was changed")))
}

/// A detach takes EC2 a few seconds; the attach must wait for it.
async fn wait_available(ec2: &Ec2Client, eni_id: &str, from: &str) -> Result<(), Failure> {
    let start = Instant::now();
    let half_way = |why: String| {
        fail(
            EXIT_HALF_WAY,
            format!(
                "ENI {eni_id} was detached from {from} but {why}, so it was not attached here: \
                 run the same takeover again; this instance's routing is unchanged"
            ),
        )
    };
    loop {
        let eni = describe(ec2, eni_id, "")
            .await
            .map_err(|f| half_way(format!("reading its state failed ({})", f.message)))?;
        let detached = eni.status == "available"
            || eni
                .attachment
                .as_ref()
                .is_none_or(|a| a.status == "detached");
        if detached {
            return Ok(());
        }
        if start.elapsed() > DETACH_WAIT {
            return Err(half_way(format!(
                "it still reads {} after {} s",
                eni.status,
                DETACH_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lowest device index metadata does not show in use (0 is the
/// primary's).
fn lowest_free_device(instance: &Instance) -> u32 {
    let used: Vec<u32> = instance
        .ready()
        .filter(|e| e.key.card == 0)
        .map(|e| e.key.device)
        .collect();
    (1..).find(|d| !used.contains(d)).unwrap_or(1)
}

/// What must be routed here for the takeover to count as done.
struct Subject {
    mac: Mac,
    address: IpAddr,
    what: String,
}

/// Records the claim (made on the instance whose primary ENI has
/// `primary_mac`), has it applied (by the daemon, or here), and waits until
/// the kernel routes it.
async fn route_here(
    cfg: &Config,
    imds: &ImdsClient,
    primary_mac: Mac,
    claimed: Claimed,
    subject: &Subject,
    wait: Duration,
    accepted: Instant,
) -> Result<(), Failure> {
    let not_routed = |why: String| {
        fail(
            1,
            format!(
                "EC2 moved {} to this instance, but {why}; the eniroute daemon (or `eniroute \
                 apply`) configures it once metadata shows it",
                subject.what
            ),
        )
    };
    let dir = state::run_dir().map_err(|e| not_routed(format!("no state directory: {e}")))?;
    let now = SystemTime::now();
    claim::add(&dir, Claim::new(claimed, primary_mac, now), now).map_err(|e| {
        not_routed(format!(
            "its claim could not be written to {}: {e}",
            dir.display()
        ))
    })?;
    let kernel = kernel(cfg)?;
    let deadline = Instant::now() + wait;
    if let Some(pid) = state::daemon_pid(&dir) {
        kill(Pid::from_raw(pid), Signal::SIGUSR1).map_err(|e| {
            not_routed(format!(
                "the eniroute daemon (pid {pid}) could not be told: {e}"
            ))
        })?;
        println!("told the eniroute daemon (pid {pid}) to route it");
        while !routed(&kernel, subject, cfg).await {
            if Instant::now() > deadline {
                return Err(not_routed(format!(
                    "the daemon did not route it within {} s (see its log)",
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    } else {
        // No daemon: this command reconciles, as `apply` does, with the
        // claim merged, until the moved address or ENI is routed (a moved
        // ENI's link may take a moment to appear).
        let mut ns = Namespace::claim()?;
        let mut confirmed = claim::Confirmed::new();
        loop {
            let fresh = fetch(imds, &kernel, cfg)
                .await
                .map_err(|f| not_routed(f.message))?;
            let merged = claim::merge(fresh, &claim::load(&dir), SystemTime::now(), &mut confirmed);
            let outcome = crate::reconcile::reconcile(&kernel, &merged, cfg, &mut ns.records)
                .await
                .map_err(|e| not_routed(crate::error_chain(&e)))?;
            if let Some(first) = outcome.applied.errors.first() {
                return Err(not_routed(format!("a change failed: {first}")));
            }
            if routed(&kernel, subject, cfg).await {
                break;
            }
            if Instant::now() > deadline {
                return Err(not_routed(format!(
                    "its link did not appear within {} s",
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("no eniroute daemon runs here: routed it directly");
    }
    report(subject, accepted);
    Ok(())
}

fn report(subject: &Subject, accepted: Instant) {
    println!(
        "{} is routed here, {} ms after EC2 accepted",
        subject.what,
        accepted.elapsed().as_millis()
    );
}

/// Whether the subject's link holds its address and a rule of eniroute's
/// sends the address to a table.
async fn routed(kernel: &impl Kernel, subject: &Subject, cfg: &Config) -> bool {
    let (Ok(links), Ok(rules)) = (kernel.links().await, kernel.rules().await) else {
        return false;
    };
    let on_link = links.iter().any(|l| {
        l.mac == Some(subject.mac) && l.addresses.iter().any(|a| a.addr.addr() == subject.address)
    });
    let ruled = rules.iter().any(|r| {
        r.protocol == cfg.numbering.protocol
            && r.rule.from.is_some_and(|f| f.addr() == subject.address)
    });
    on_link && ruled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imds::model::EniState;

    fn eni(mac: u8, device: u32, id: &str, subnet: &str, ips: &[&str]) -> Eni {
        Eni {
            mac: Mac::new([0x0a, 0, 0, 0, 0, mac]),
            key: EniKey::new(0, device).unwrap(),
            interface_id: Some(id.into()),
            subnet_id: None,
            vpc_id: None,
            ipv4s: ips.iter().map(|a| a.parse().unwrap()).collect(),
            ipv4_prefixes: vec![],
            ipv6s: vec![],
            ipv6_prefixes: vec![],
            subnet_v4: Some(subnet.parse().unwrap()),
            subnet_v6: vec![],
            vpc_v4: vec![],
            vpc_v6: vec![],
        }
    }

    fn instance() -> Instance {
        Instance::new(
            Mac::new([0x0a, 0, 0, 0, 0, 0]),
            vec![
                EniState::Ready(eni(0, 0, "eni-0", "10.0.1.0/24", &["10.0.1.20"])),
                EniState::Ready(eni(2, 3, "eni-2", "10.0.3.0/24", &["10.0.3.20"])),
            ],
        )
    }

    #[test]
    fn the_address_goes_to_the_eni_whose_subnet_holds_it() {
        let i = instance();
        let ip: IpAddr = "10.0.3.100".parse().unwrap();
        assert_eq!(
            address_target(&i, ip, None)
                .unwrap()
                .interface_id
                .as_deref(),
            Some("eni-2")
        );
        assert_eq!(
            address_target(&i, ip, Some("eni-2"))
                .unwrap()
                .interface_id
                .as_deref(),
            Some("eni-2")
        );
        let f = address_target(&i, ip, Some("eni-0")).unwrap_err();
        assert_eq!(f.code, 2);
        assert!(f.message.contains("not in the subnet of ENI eni-0"), "{f}");
        let f = address_target(&i, "10.0.9.5".parse().unwrap(), None).unwrap_err();
        assert_eq!(f.code, 2);
        assert!(
            f.message.contains("in none of this instance's subnets")
                && f.message.contains("10.0.3.0/24"),
            "{f}"
        );
        let f = address_target(&i, ip, Some("eni-9")).unwrap_err();
        assert!(f.message.contains("eni-9 is not attached"), "{f}");
    }

    #[test]
    fn a_moved_eni_takes_the_lowest_free_device_index() {
        assert_eq!(lowest_free_device(&instance()), 1);
    }

    #[test]
    fn an_ipv6_assignment_failing_after_the_holder_let_go_is_half_way() {
        let e = Ec2Error {
            action: "AssignIpv6Addresses",
            endpoint: "https://ec2.eu-west-1.amazonaws.com".into(),
            kind: crate::ec2::client::ErrorKind::Api {
                status: 403,
                code: "UnauthorizedOperation".into(),
                message: String::new(),
            },
            attempts: 1,
        };
        let a = "2001:db8::100".parse().unwrap();
        let f = ipv6_half_way(&e, a, &[], "eni-2");
        assert_eq!(f.code, EXIT_PERMISSION);
        assert!(f.message.contains("nothing was changed"), "{f}");
        let f = ipv6_half_way(&e, a, &["eni-1".into()], "eni-2");
        assert_eq!(f.code, EXIT_HALF_WAY);
        assert!(
            f.message.contains("unassigned from eni-1")
                && f.message.contains("no ENI holds it")
                && !f.message.contains("nothing was changed"),
            "{f}"
        );
    }

    #[test]
    fn ec2_refusals_map_to_exit_codes() {
        let e = |code: &str, status| Ec2Error {
            action: "AttachNetworkInterface",
            endpoint: "https://ec2.eu-west-1.amazonaws.com".into(),
            kind: crate::ec2::client::ErrorKind::Api {
                status,
                code: code.into(),
                message: String::new(),
            },
            attempts: 1,
        };
        let f = ec2_failure(&e("UnauthorizedOperation", 403), "");
        assert_eq!(f.code, EXIT_PERMISSION);
        assert!(f.message.contains("ec2:AttachNetworkInterface"), "{f}");
        assert_eq!(
            ec2_failure(&e("RequestLimitExceeded", 503), "").code,
            EXIT_THROTTLED
        );
        assert_eq!(
            ec2_failure(&e("InvalidNetworkInterface.InUse", 400), "").code,
            EXIT_IN_USE
        );
        assert_eq!(ec2_failure(&e("InvalidParameterValue", 400), "").code, 2);
        assert_eq!(ec2_failure(&e("InternalError", 500), "").code, 1);
        // No answer to a change: EC2 may have made it.
        let mut dropped = e("", 0);
        dropped.kind = ErrorKind::Transport("connection closed before message completed".into());
        let f = ec2_failure(&dropped, "");
        assert_eq!(f.code, 1);
        assert!(
            f.message.contains("may have made the change")
                && !f.message.contains("nothing was changed"),
            "{f}"
        );
        dropped.kind = ErrorKind::Timeout;
        assert!(ec2_failure(&dropped, "")
            .message
            .contains("may have made the change"));
        // ... and none to a question: nothing was changed.
        dropped.action = "DescribeNetworkInterfaces";
        assert!(ec2_failure(&dropped, "")
            .message
            .contains("nothing was changed"));
    }
}
