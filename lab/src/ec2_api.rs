//! The EC2 control plane for the lab: moto's EC2 server (PyPI
//! `moto[server]`) holds the state (VPC, subnets, instances, ENIs,
//! addresses, attachments); a front in the VPC router namespace is the
//! endpoint instances call (`http://169.254.169.250`). The front passes each
//! request to moto, adds the refusals of real EC2 that moto 5 does not make,
//! and after every accepted change makes the lab's data plane follow
//! (router routes for moved addresses, ENI links moved between instance
//! namespaces) before it answers; each instance's metadata simulator is then
//! fed a tree derived from moto's state after a propagation lag (1 s by
//! default), as EC2's metadata lags its API. It also serves each instance
//! its role credentials. Faults (errors, throttling, dropped connections)
//! can be injected per action.
//!
//! Where moto 5.2 falls short of EC2, the front makes up the difference:
//! a reassigned private IPv4 leaves its old ENI; an IPv6 address another
//! ENI holds, or one outside the subnet's IPv6 block, is refused
//! (`InvalidIPAddress.InUse`, `InvalidParameterValue`); and
//! DescribeNetworkInterfaces' filter `ipv6-addresses.ipv6-address`, on
//! which moto fails, is applied by the front. IPv6 follows moto's state
//! like IPv4: a subnet given a block ([`Ec2Lab::subnet_ipv6`]) has its
//! ENIs' addresses routed to them by the router (which answers as
//! `fe80:ec2::1` on their ports) and listed in metadata (`ipv6s`,
//! `subnet-ipv6-cidr-blocks`, `vpc-ipv6-cidr-blocks`).
//!
//! moto runs as a child process on a port of its own, killed by pid when
//! the lab is dropped.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{json, Value};

use eniroute::ec2::api::NetworkInterface;
use eniroute::ec2::{Credentials, Ec2Client, Ec2Error, Ec2Options};
use eniroute::values::Mac;

use crate::imds_tree::{instance_tree, EniMeta};
use crate::sim::Simulator;
use crate::vpc::{self, EniSpec, Instance, Vpc};
use crate::world;

/// The region every lab instance is in.
pub const REGION: &str = "us-east-1";
/// The instance profile role each instance's metadata serves.
pub const ROLE: &str = "lab-ha-role";
/// Where instances reach the EC2 API (the front, in the router).
pub const API_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 250);
/// The metadata propagation lag EC2 shows after an API change.
pub const DEFAULT_LAG: Duration = Duration::from_secs(1);

const MOTO_START: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn other(m: impl std::fmt::Display) -> io::Error {
    io::Error::other(m.to_string())
}

/// A program from `$VAR`, the workspace's `target/ha-venv/bin` (where
/// `.ci/run` installs the PyPI packages when the system Python refuses
/// them), or `PATH`.
fn find_program(var: &str, name: &str) -> Option<PathBuf> {
    // Set, it is the only place looked at (a path that does not exist
    // stands for "not installed").
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ha-venv/bin")
        .join(name);
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `moto_server` (`$MOTO_SERVER` overrides), if installed.
pub fn moto_server() -> Option<PathBuf> {
    find_program("MOTO_SERVER", "moto_server")
}

/// The AWS CLI (`$AWS_CLI` overrides), if installed.
pub fn aws_cli() -> Option<PathBuf> {
    find_program("AWS_CLI", "aws")
}

/// What a lab check prints when moto is missing.
pub const MOTO_MISSING: &str =
    "skipped: moto_server not found (install PyPI moto[server], as .ci/run does)";

/// A running moto EC2 server on 127.0.0.1.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

impl Moto {
    pub fn start() -> io::Result<Moto> {
        let bin = moto_server().ok_or_else(|| other(MOTO_MISSING))?;
        // A free port: bind 0, note it, release it for moto.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log =
            std::env::temp_dir().join(format!("eniroute-moto-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| other(format!("start {}: {e}", bin.display())))?;
        let mut moto = Moto {
            child: Some(child),
            port,
            log,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = moto.child.as_mut().map(Child::try_wait) {
                return Err(other(format!(
                    "moto_server exited ({status}): {}",
                    std::fs::read_to_string(&moto.log).unwrap_or_default()
                )));
            }
            if start.elapsed() > MOTO_START {
                return Err(other("moto_server did not listen within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(moto)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // By pid: the child is moto itself (pyenv's shim execs Python).
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A misbehaviour of the EC2 API to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFault {
    /// Answer with EC2's error document.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Close the connection without answering.
    Drop,
    /// Wait, then go on as usual.
    Delay(Duration),
}

impl ApiFault {
    pub fn error(status: u16, code: &str, message: &str) -> ApiFault {
        ApiFault::Error {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// How an instance's role credentials look in its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsState {
    Valid,
    Expired,
}

/// One simulated instance of the EC2-backed lab.
#[derive(Clone)]
pub struct Host {
    pub name: String,
    pub instance_id: String,
    pub ns: Instance,
    pub sim: Simulator,
    /// The metadata endpoint, for `--imds-endpoint`.
    pub endpoint: String,
    pub az: String,
    /// Interface name → ENI id, in attach order.
    pub enis: Vec<(String, String)>,
}

impl Host {
    pub fn eni_id(&self, name: &str) -> io::Result<&str> {
        self.enis
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.as_str())
            .ok_or_else(|| other(format!("no ENI {name} on {}", self.name)))
    }
}

struct Wire {
    eni: vpc::Eni,
    /// The instance whose namespace holds the link; `None`: parked.
    at: Option<String>,
    addrs: Vec<Ipv4Addr>,
    /// IPv6 addresses the router sends to this ENI.
    addrs6: Vec<Ipv6Addr>,
    /// The router's end answers as the subnet's IPv6 router.
    v6: bool,
}

impl Wire {
    fn new(eni: vpc::Eni, at: Option<String>, addrs: Vec<Ipv4Addr>) -> Wire {
        Wire {
            eni,
            at,
            addrs,
            addrs6: Vec::new(),
            v6: false,
        }
    }
}

struct HostState {
    host: Host,
    creds: CredentialsState,
}

#[derive(Default)]
struct World {
    vpc_id: String,
    vpc_cidrs: Vec<Ipv4Net>,
    subnets: BTreeMap<String, (Ipv4Net, String)>,
    /// The VPC's IPv6 block (EC2 hands out a /56), once one was asked for.
    vpc_v6: Option<Ipv6Net>,
    /// Subnet id → its IPv6 blocks.
    subnets_v6: BTreeMap<String, Vec<Ipv6Net>>,
    hosts: BTreeMap<String, HostState>,
    enis: BTreeMap<String, Wire>,
    parked: Option<Instance>,
    generation: u64,
}

type Injected = (Option<String>, ApiFault, Option<u32>);

struct Shared {
    vpc: Arc<Vpc>,
    moto_url: String,
    world: Mutex<World>,
    /// (action or every action, fault, how many more times or for good).
    faults: Mutex<Vec<Injected>>,
    lag: Mutex<Duration>,
    /// Actions received by the front, in order.
    calls: Mutex<Vec<String>>,
    /// When the front sent its answer to each accepted change, by action.
    accepted: Mutex<BTreeMap<String, Instant>>,
    /// Per simulator: the newest generation published, so a slow
    /// publication never overwrites a newer one.
    published: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: AtomicBool,
    served: AtomicU64,
}

/// The EC2-backed lab: moto, the front, and the VPC whose data plane and
/// metadata follow moto's state.
pub struct Ec2Lab {
    shared: Arc<Shared>,
    rt: tokio::runtime::Runtime,
    api: Ec2Client,
    /// `http://169.254.169.250`, as instances reach the front.
    pub endpoint: String,
    front: Option<std::thread::JoinHandle<()>>,
    front_addr: SocketAddr,
    next_port: u16,
    // Dropped last: the namespaces go after everything that uses them.
    pub vpc: Arc<Vpc>,
    _moto: Moto,
}

fn lab_credentials() -> Credentials {
    Credentials {
        access_key_id: "AKIALAB0000000000000".into(),
        secret_access_key: "lab-secret".into(),
        session_token: None,
        expiration: None,
        source: "the lab".into(),
    }
}

fn client(url: &str) -> io::Result<Ec2Client> {
    let mut opts = Ec2Options::new(REGION);
    opts.endpoint = Some(url.to_string());
    opts.max_attempts = 1;
    // moto loads its EC2 backend on the first request, which takes seconds
    // on a busy machine.
    opts.request_timeout = Duration::from_secs(90);
    Ec2Client::new(opts, lab_credentials()).map_err(other)
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The text of the first `<name>` element (the lab reads only ids this way).
fn xml_value(text: &str, name: &str) -> io::Result<String> {
    let open = format!("<{name}>");
    let start = text
        .find(&open)
        .ok_or_else(|| other(format!("no <{name}> in the answer: {text}")))?
        + open.len();
    let end = text[start..]
        .find('<')
        .ok_or_else(|| other(format!("unterminated <{name}>")))?;
    Ok(text[start..start + end].trim().to_string())
}

fn p(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

impl Ec2Lab {
    /// Starts moto, a VPC 10.0.0.0/16 in it, the lab's VPC router and the
    /// front. Fails with [`MOTO_MISSING`] when moto is not installed.
    pub fn start() -> io::Result<Ec2Lab> {
        let moto = Moto::start()?;
        let vpc = Arc::new(Vpc::new()?);
        let rt = runtime()?;
        let api = client(&moto.url())?;
        let text = rt
            .block_on(api.call("CreateVpc", &[p("CidrBlock", "10.0.0.0/16")]))
            .map_err(other)?;
        let vpc_id = xml_value(&text, "vpcId")?;
        let parked = vpc.instance("parked")?;
        let shared = Arc::new(Shared {
            vpc: Arc::clone(&vpc),
            moto_url: moto.url(),
            world: Mutex::new(World {
                vpc_id,
                vpc_cidrs: vec!["10.0.0.0/16".parse().map_err(other)?],
                parked: Some(parked),
                ..World::default()
            }),
            faults: Mutex::new(Vec::new()),
            lag: Mutex::new(DEFAULT_LAG),
            calls: Mutex::new(Vec::new()),
            accepted: Mutex::new(BTreeMap::new()),
            published: Arc::new(Mutex::new(BTreeMap::new())),
            stop: AtomicBool::new(false),
            served: AtomicU64::new(0),
        });
        vpc.router()
            .ip(["addr", "replace", &format!("{API_ADDR}/32"), "dev", "lo"])?;
        let bind = SocketAddr::new(IpAddr::V4(API_ADDR), 80);
        let listener = vpc.router().run_in(|| TcpListener::bind(bind))??;
        nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::TcpNoDelay, &true)
            .map_err(other)?;
        let front_addr = listener.local_addr()?;
        let front = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("ec2-front".into())
                .spawn(move || accept_loop(listener, shared))?
        };
        Ok(Ec2Lab {
            shared,
            rt,
            api,
            endpoint: format!("http://{API_ADDR}"),
            front: Some(front),
            front_addr,
            next_port: 0,
            vpc,
            _moto: moto,
        })
    }

    /// The lab's own client to moto (not through the front).
    pub fn api(&self) -> &Ec2Client {
        &self.api
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Sets the metadata propagation lag for changes made from now on.
    pub fn set_lag(&self, lag: Duration) {
        *lock(&self.shared.lag) = lag;
    }

    /// Creates a subnet in zone `az` (e.g. `us-east-1a`).
    pub fn subnet(&self, cidr: &str, az: &str) -> io::Result<String> {
        let net: Ipv4Net = cidr.parse().map_err(other)?;
        let vpc_id = lock(&self.shared.world).vpc_id.clone();
        let text = self
            .rt
            .block_on(self.api.call(
                "CreateSubnet",
                &[
                    p("VpcId", &vpc_id),
                    p("CidrBlock", cidr),
                    p("AvailabilityZone", az),
                ],
            ))
            .map_err(other)?;
        let id = xml_value(&text, "subnetId")?;
        lock(&self.shared.world)
            .subnets
            .insert(id.clone(), (net, az.to_string()));
        Ok(id)
    }

    fn subnet_of(&self, cidr: &str) -> io::Result<(String, Ipv4Net, String)> {
        let net: Ipv4Net = cidr.parse().map_err(other)?;
        lock(&self.shared.world)
            .subnets
            .iter()
            .find(|(_, (n, _))| *n == net)
            .map(|(id, (n, az))| (id.clone(), *n, az.clone()))
            .ok_or_else(|| other(format!("no subnet {cidr}: create it first")))
    }

    /// Creates an ENI in moto (not attached) with `ips` (primary first) and
    /// its link, parked until EC2 attaches it somewhere.
    pub fn create_eni(&self, name: &str, subnet: &str, ips: &[&str]) -> io::Result<String> {
        let (subnet_id, net, _) = self.subnet_of(subnet)?;
        let primary = ips
            .first()
            .ok_or_else(|| other("an ENI needs an address"))?;
        let text = self
            .rt
            .block_on(self.api.call(
                "CreateNetworkInterface",
                &[p("SubnetId", &subnet_id), p("PrivateIpAddress", primary)],
            ))
            .map_err(other)?;
        let id = xml_value(&text, "networkInterfaceId")?;
        if ips.len() > 1 {
            let mut params = vec![p("NetworkInterfaceId", &id)];
            for (i, a) in ips[1..].iter().enumerate() {
                params.push(p(&format!("PrivateIpAddress.{}", i + 1), a));
            }
            self.rt
                .block_on(self.api.call("AssignPrivateIpAddresses", &params))
                .map_err(other)?;
        }
        let eni = self.describe(&id)?;
        let addrs: Vec<Ipv4Addr> = eni.ipv4s.clone();
        let mut w = lock(&self.shared.world);
        let parked = w
            .parked
            .clone()
            .ok_or_else(|| other("no parking namespace"))?;
        let wire = self.vpc.attach_eni(
            &parked,
            EniSpec {
                name: name.to_string(),
                mac: eni.mac,
                subnet: net,
                addresses: addrs.clone(),
            },
        )?;
        w.enis.insert(id.clone(), Wire::new(wire, None, addrs));
        Ok(id)
    }

    /// Launches an instance whose primary ENI (`enis[0]`, as DHCP leaves it)
    /// is in that subnet, attaches the others (devices 1, 2, …), builds its
    /// namespace and metadata, and returns it.
    pub fn instance(&mut self, name: &str, enis: &[(&str, &str, &[&str])]) -> io::Result<Host> {
        let (first_name, first_subnet, first_ips) = *enis
            .first()
            .ok_or_else(|| other("an instance needs an ENI"))?;
        let (subnet_id, net, az) = self.subnet_of(first_subnet)?;
        let text = self
            .rt
            .block_on(self.api.call(
                "RunInstances",
                &[
                    p("ImageId", "ami-12c6146b"),
                    p("MinCount", 1),
                    p("MaxCount", 1),
                    p("InstanceType", "t3.micro"),
                    p("SubnetId", &subnet_id),
                    p("PrivateIpAddress", first_ips[0]),
                ],
            ))
            .map_err(other)?;
        let instance_id = xml_value(&text, "instanceId")?;
        let primary_id = xml_value(&text, "networkInterfaceId")?;
        if first_ips.len() > 1 {
            let mut params = vec![p("NetworkInterfaceId", &primary_id)];
            for (i, a) in first_ips[1..].iter().enumerate() {
                params.push(p(&format!("PrivateIpAddress.{}", i + 1), a));
            }
            self.rt
                .block_on(self.api.call("AssignPrivateIpAddresses", &params))
                .map_err(other)?;
        }
        let ns = self.vpc.instance(name)?;
        let port = if self.next_port == 0 {
            80
        } else {
            8000 + self.next_port
        };
        self.next_port += 1;
        let (sim, endpoint) = world::metadata_endpoint(&self.vpc, port)?;
        let primary = self.describe(&primary_id)?;
        let eth0 = self.vpc.attach_eni(
            &ns,
            EniSpec {
                name: first_name.to_string(),
                mac: primary.mac,
                subnet: net,
                addresses: primary.ipv4s.clone(),
            },
        )?;
        self.vpc.dhcp_configure(&eth0)?;
        let mut host = Host {
            name: name.to_string(),
            instance_id: instance_id.clone(),
            ns,
            sim,
            endpoint,
            az,
            enis: vec![(first_name.to_string(), primary_id.clone())],
        };
        {
            let mut w = lock(&self.shared.world);
            w.enis.insert(
                primary_id,
                Wire::new(eth0, Some(instance_id.clone()), primary.ipv4s),
            );
            w.hosts.insert(
                instance_id.clone(),
                HostState {
                    host: host.clone(),
                    creds: CredentialsState::Valid,
                },
            );
        }
        for (device, (eni_name, subnet, ips)) in enis.iter().enumerate().skip(1) {
            let id = self.create_eni(eni_name, subnet, ips)?;
            self.rt
                .block_on(self.api.call(
                    "AttachNetworkInterface",
                    &[
                        p("NetworkInterfaceId", &id),
                        p("InstanceId", &instance_id),
                        p("DeviceIndex", device),
                    ],
                ))
                .map_err(other)?;
            host.enis.push((eni_name.to_string(), id));
        }
        if let Some(h) = lock(&self.shared.world).hosts.get_mut(&instance_id) {
            h.host = host.clone();
        }
        self.sync(false)?;
        Ok(host)
    }

    /// One ENI as moto has it.
    pub fn describe(&self, id: &str) -> io::Result<NetworkInterface> {
        self.rt
            .block_on(self.api.describe_network_interfaces(&[id.to_string()]))
            .map_err(other)?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| other(format!("moto knows no ENI {id}")))
    }

    /// Gives the subnet `cidr` an IPv6 block: a /64 of the VPC's /56, which
    /// EC2 (moto) picks when the first subnet asks for one. Returns the /64.
    pub fn subnet_ipv6(&self, cidr: &str) -> io::Result<Ipv6Net> {
        let (subnet_id, _, _) = self.subnet_of(cidr)?;
        let (vpc_id, vpc_v6, taken) = {
            let w = lock(&self.shared.world);
            (w.vpc_id.clone(), w.vpc_v6, w.subnets_v6.len())
        };
        let vpc_v6 = match vpc_v6 {
            Some(n) => n,
            None => {
                let text = self
                    .rt
                    .block_on(self.api.call(
                        "AssociateVpcCidrBlock",
                        &[
                            p("VpcId", &vpc_id),
                            p("AmazonProvidedIpv6CidrBlock", "true"),
                        ],
                    ))
                    .map_err(other)?;
                let n: Ipv6Net = xml_value(&text, "ipv6CidrBlock")?.parse().map_err(other)?;
                lock(&self.shared.world).vpc_v6 = Some(n);
                n
            }
        };
        let net = vpc_v6
            .subnets(64)
            .map_err(other)?
            .nth(taken + 1)
            .ok_or_else(|| other(format!("no /64 left in {vpc_v6}")))?;
        self.rt
            .block_on(self.api.call(
                "AssociateSubnetCidrBlock",
                &[p("SubnetId", &subnet_id), p("Ipv6CidrBlock", net)],
            ))
            .map_err(other)?;
        lock(&self.shared.world)
            .subnets_v6
            .insert(subnet_id, vec![net]);
        Ok(net)
    }

    /// Assigns IPv6 addresses to an ENI (set-up: straight to moto, not
    /// through the front), and makes the data plane and metadata follow.
    pub fn assign_ipv6(&self, eni_id: &str, addrs: &[Ipv6Addr]) -> io::Result<()> {
        let mut params = vec![p("NetworkInterfaceId", eni_id)];
        for (i, a) in addrs.iter().enumerate() {
            params.push(p(&format!("Ipv6Addresses.{}", i + 1), a));
        }
        self.rt
            .block_on(self.api.call("AssignIpv6Addresses", &params))
            .map_err(other)?;
        self.sync(false)
    }

    /// Makes the data plane and every instance's metadata follow moto now;
    /// with `lagged`, metadata only after the lag.
    pub fn sync(&self, lagged: bool) -> io::Result<()> {
        self.shared.sync(&self.api, &self.rt, lagged)
    }

    /// Injects `fault` for the next `times` requests of `action` (every
    /// action when `None`; for good when `times` is `None`).
    pub fn inject(&self, action: Option<&str>, fault: ApiFault, times: Option<u32>) {
        lock(&self.shared.faults).push((action.map(str::to_string), fault, times));
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// When the front last answered an accepted `action` (the moment the
    /// caller's API call returns, give or take the socket).
    pub fn accepted(&self, action: &str) -> Option<Instant> {
        lock(&self.shared.accepted).get(action).copied()
    }

    /// The actions the front received so far.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.shared.calls).clone()
    }

    /// Makes `host`'s metadata serve expired (or valid) role credentials.
    pub fn set_credentials(&self, host: &Host, state: CredentialsState) -> io::Result<()> {
        if let Some(h) = lock(&self.shared.world).hosts.get_mut(&host.instance_id) {
            h.creds = state;
        }
        self.sync(false)
    }

    /// The front's address inside the router, for diagnostics.
    pub fn front_addr(&self) -> SocketAddr {
        self.front_addr
    }
}

impl Drop for Ec2Lab {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the accept loop with a connection from inside the router.
        let addr = self.front_addr;
        let _ = self
            .vpc
            .router()
            .run_in(move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)));
        if let Some(t) = self.front.take() {
            let _ = t.join();
        }
    }
}

/// Actions whose success changes what the data plane and metadata show.
fn mutating(action: &str) -> bool {
    matches!(
        action,
        "AssignPrivateIpAddresses"
            | "UnassignPrivateIpAddresses"
            | "AssignIpv6Addresses"
            | "UnassignIpv6Addresses"
            | "AttachNetworkInterface"
            | "DetachNetworkInterface"
    )
}

fn error_body(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>lab-front</RequestID></Response>"
    )
}

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn error(status: u16, code: &str, message: &str) -> Answer {
        Answer {
            status,
            body: error_body(code, message),
        }
    }
}

impl Shared {
    fn take_fault(&self, action: &str) -> Option<ApiFault> {
        let mut faults = lock(&self.faults);
        let i = faults
            .iter()
            .position(|(a, _, _)| a.as_deref().is_none_or(|a| a == action))?;
        let fault = faults[i].1.clone();
        match &mut faults[i].2 {
            Some(1) => {
                faults.remove(i);
            }
            Some(n) => *n -= 1,
            None => {}
        }
        Some(fault)
    }

    /// Real EC2's refusals that moto 5 does not make.
    fn refusal(
        &self,
        api: &Ec2Client,
        rt: &tokio::runtime::Runtime,
        action: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Option<Answer>, Ec2Error> {
        match action {
            "AssignPrivateIpAddresses" => {
                let Some(eni_id) = params.get("NetworkInterfaceId") else {
                    return Ok(None);
                };
                let all = rt.block_on(api.describe_network_interfaces(&[]))?;
                let Some(eni) = all.iter().find(|e| &e.id == eni_id) else {
                    return Ok(None);
                };
                let subnet = lock(&self.world).subnets.get(&eni.subnet_id).map(|s| s.0);
                let reassign = params.get("AllowReassignment").map(String::as_str) == Some("true");
                for (k, v) in params {
                    if !k.starts_with("PrivateIpAddress.") {
                        continue;
                    }
                    let Ok(addr) = v.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    if subnet.is_some_and(|n| !n.contains(&addr)) {
                        return Ok(Some(Answer::error(
                            400,
                            "InvalidParameterValue",
                            &format!(
                                "Address {addr} does not fall within the subnet's address range"
                            ),
                        )));
                    }
                    let holder = all
                        .iter()
                        .find(|e| e.id != eni.id && e.ipv4s.contains(&addr));
                    if let (Some(h), false) = (holder, reassign) {
                        return Ok(Some(Answer::error(
                            400,
                            "PrivateIpAddressInUse",
                            &format!("Address {addr} is in use by {}", h.id),
                        )));
                    }
                }
                Ok(None)
            }
            // moto 5.2 assigns an IPv6 address that another ENI holds (to
            // both) and one outside the subnet's block; EC2 refuses both
            // (and has no reassignment for IPv6: the holder must unassign
            // it first).
            "AssignIpv6Addresses" => {
                let Some(eni_id) = params.get("NetworkInterfaceId") else {
                    return Ok(None);
                };
                let all = rt.block_on(api.describe_network_interfaces(&[]))?;
                let Some(eni) = all.iter().find(|e| &e.id == eni_id) else {
                    return Ok(None);
                };
                let blocks = lock(&self.world)
                    .subnets_v6
                    .get(&eni.subnet_id)
                    .cloned()
                    .unwrap_or_default();
                for (k, v) in params {
                    if !k.starts_with("Ipv6Addresses.") {
                        continue;
                    }
                    let Ok(addr) = v.parse::<Ipv6Addr>() else {
                        continue;
                    };
                    if !blocks.iter().any(|n| n.contains(&addr)) {
                        return Ok(Some(Answer::error(
                            400,
                            "InvalidParameterValue",
                            &format!(
                                "Address {addr} does not fall within the subnet's IPv6 address range"
                            ),
                        )));
                    }
                    if let Some(h) = all
                        .iter()
                        .find(|e| e.id != eni.id && e.ipv6s.contains(&addr))
                    {
                        return Ok(Some(Answer::error(
                            400,
                            "InvalidIPAddress.InUse",
                            &format!("Address {addr} is in use by {}", h.id),
                        )));
                    }
                }
                Ok(None)
            }
            "AttachNetworkInterface" => {
                let (Some(eni_id), Some(instance)) =
                    (params.get("NetworkInterfaceId"), params.get("InstanceId"))
                else {
                    return Ok(None);
                };
                let found =
                    rt.block_on(api.describe_network_interfaces(std::slice::from_ref(eni_id)))?;
                let Some(eni) = found.first() else {
                    return Ok(None);
                };
                if eni
                    .attachment
                    .as_ref()
                    .is_some_and(|a| a.status == "attached" || a.status == "attaching")
                {
                    return Ok(Some(Answer::error(
                        400,
                        "InvalidNetworkInterface.InUse",
                        &format!("Interface: [{eni_id}] in use."),
                    )));
                }
                let az = lock(&self.world)
                    .hosts
                    .get(instance)
                    .map(|h| h.host.az.clone());
                if az.is_some_and(|az| az != eni.availability_zone) {
                    return Ok(Some(Answer::error(
                        400,
                        "InvalidParameterCombination",
                        "You may not attach a network interface to an instance if they are not in the same availability zone",
                    )));
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// moto 5.2 leaves a reassigned private IP on its old ENI as well,
    /// where real EC2 moves it: after moto accepted an assignment with
    /// reassignment, the lab unassigns the address from every other ENI
    /// through moto's own API, so that its state (and everything derived
    /// from it: routes, metadata) is what EC2's would be.
    fn after(
        &self,
        api: &Ec2Client,
        rt: &tokio::runtime::Runtime,
        action: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<(), Ec2Error> {
        if action != "AssignPrivateIpAddresses"
            || params.get("AllowReassignment").map(String::as_str) != Some("true")
        {
            return Ok(());
        }
        let Some(eni_id) = params.get("NetworkInterfaceId") else {
            return Ok(());
        };
        let all = rt.block_on(api.describe_network_interfaces(&[]))?;
        for (k, v) in params {
            let Some(addr) = k
                .starts_with("PrivateIpAddress.")
                .then(|| v.parse::<Ipv4Addr>().ok())
                .flatten()
            else {
                continue;
            };
            for old in all
                .iter()
                .filter(|e| &e.id != eni_id && e.ipv4s.contains(&addr))
            {
                rt.block_on(api.call(
                    "UnassignPrivateIpAddresses",
                    &[
                        p("NetworkInterfaceId", &old.id),
                        p("PrivateIpAddress.1", addr),
                    ],
                ))?;
            }
        }
        Ok(())
    }

    /// The router sends each of `addrs` to this ENI (the VPC's IPv6 side:
    /// the router answers as `fe80:ec2::1` on the ENI's port).
    fn route_ipv6(&self, wire: &mut Wire, addrs: &[Ipv6Addr]) -> io::Result<()> {
        if addrs.is_empty() {
            return Ok(());
        }
        if !wire.v6 {
            self.vpc.eni_ipv6(&wire.eni, &[])?;
            wire.v6 = true;
        }
        let port = wire.eni.port().to_string();
        let new: Vec<Ipv6Addr> = addrs
            .iter()
            .filter(|a| !wire.addrs6.contains(a))
            .copied()
            .collect();
        for a in new {
            // One replace: a moved address has no moment without a route.
            self.vpc
                .router()
                .ip(["-6", "route", "replace", &format!("{a}/128"), "dev", &port])?;
            // Known, as the VPC knows every address's ENI: no neighbour
            // discovery on the first packet after a move.
            self.vpc.router().ip([
                "-6",
                "neigh",
                "replace",
                &a.to_string(),
                "lladdr",
                &wire.eni.mac().to_string(),
                "dev",
                &port,
                "nud",
                "permanent",
            ])?;
            wire.addrs6.push(a);
        }
        Ok(())
    }

    fn sync(&self, api: &Ec2Client, rt: &tokio::runtime::Runtime, lagged: bool) -> io::Result<()> {
        let all = rt
            .block_on(api.describe_network_interfaces(&[]))
            .map_err(other)?;
        let mut w = lock(&self.world);
        // The data plane: links where EC2 attached them, addresses where EC2
        // put them.
        for e in &all {
            let at = e
                .attachment
                .as_ref()
                .filter(|a| a.status == "attached" || a.status == "attaching")
                .and_then(|a| a.instance_id.clone());
            let Some(wire) = w.enis.get(&e.id) else {
                continue;
            };
            if wire.at != at {
                let to = match &at {
                    Some(i) => w.hosts.get(i).map(|h| h.host.ns.clone()),
                    None => w.parked.clone(),
                };
                let to = to.ok_or_else(|| other(format!("no namespace for {at:?}")))?;
                let link = wire.eni.clone();
                self.vpc.move_eni(&link, &to)?;
                if let Some(wire) = w.enis.get_mut(&e.id) {
                    wire.at = at;
                }
            }
            for addr in &e.ipv4s {
                let has = w.enis.get(&e.id).is_some_and(|x| x.addrs.contains(addr));
                if has {
                    continue;
                }
                let from = w
                    .enis
                    .iter()
                    .find(|(id, x)| *id != &e.id && x.addrs.contains(addr))
                    .map(|(id, x)| (id.clone(), x.eni.clone()));
                let to = w.enis.get(&e.id).map(|x| x.eni.clone());
                let Some(to) = to else { continue };
                match from {
                    Some((from_id, from_eni)) => {
                        self.vpc.move_address(&from_eni, &to, *addr)?;
                        if let Some(x) = w.enis.get_mut(&from_id) {
                            x.addrs.retain(|a| a != addr);
                        }
                    }
                    None => self.vpc.assign_address(&to, *addr)?,
                }
                if let Some(x) = w.enis.get_mut(&e.id) {
                    x.addrs.push(*addr);
                }
            }
            if let Some(wire) = w.enis.get_mut(&e.id) {
                self.route_ipv6(wire, &e.ipv6s)?;
            }
        }
        // An IPv6 address gone from its ENI: its route goes too, unless
        // another ENI holds it now (then the route was replaced above).
        let held: Vec<Ipv6Addr> = all.iter().flat_map(|e| e.ipv6s.clone()).collect();
        for (id, wire) in w.enis.iter_mut() {
            let now: Vec<Ipv6Addr> = all
                .iter()
                .find(|e| &e.id == id)
                .map(|e| e.ipv6s.clone())
                .unwrap_or_default();
            for gone in wire.addrs6.clone().iter().filter(|a| !now.contains(a)) {
                if !held.contains(gone) {
                    let host = format!("{gone}/128");
                    let _ = self.vpc.router().ip(["-6", "route", "del", &host]);
                }
                wire.addrs6.retain(|a| a != gone);
            }
        }
        // Metadata, derived from the same state.
        w.generation += 1;
        let generation = w.generation;
        let mut trees = Vec::new();
        for (id, h) in &w.hosts {
            let mut metas: Vec<EniMeta> = Vec::new();
            // What `EniMeta` does not carry: (MAC, IPv6s, subnet blocks).
            let mut v6: Vec<(Mac, Vec<Ipv6Addr>, Vec<Ipv6Net>)> = Vec::new();
            for e in &all {
                let Some(a) = e.attachment.as_ref().filter(|a| {
                    a.instance_id.as_deref() == Some(id.as_str()) && a.status == "attached"
                }) else {
                    continue;
                };
                let Some((subnet, _)) = w.subnets.get(&e.subnet_id) else {
                    continue;
                };
                if let Some(blocks) = w.subnets_v6.get(&e.subnet_id) {
                    v6.push((e.mac, e.ipv6s.clone(), blocks.clone()));
                }
                metas.push(EniMeta {
                    mac: e.mac,
                    eni_id: e.id.clone(),
                    card: a.network_card,
                    device: a.device_index,
                    subnet: *subnet,
                    subnet_id: e.subnet_id.clone(),
                    vpc_id: e.vpc_id.clone(),
                    vpc_cidrs: w.vpc_cidrs.clone(),
                    ipv4s: e.ipv4s.clone(),
                });
            }
            let primary = metas
                .iter()
                .find(|m| m.device == 0)
                .map(|m| m.mac)
                .unwrap_or(Mac::new([0; 6]));
            let mut tree = instance_tree(id, primary, &metas);
            for (mac, addrs, blocks) in v6 {
                let Some(eni) = tree
                    .pointer_mut(&format!("/network/interfaces/macs/{mac}"))
                    .and_then(Value::as_object_mut)
                else {
                    continue;
                };
                let text = |v: Vec<String>| json!(v);
                eni.insert(
                    "subnet-ipv6-cidr-blocks".into(),
                    text(blocks.iter().map(ToString::to_string).collect()),
                );
                if let Some(vpc) = w.vpc_v6 {
                    eni.insert("vpc-ipv6-cidr-blocks".into(), text(vec![vpc.to_string()]));
                }
                if !addrs.is_empty() {
                    eni.insert(
                        "ipv6s".into(),
                        text(addrs.iter().map(ToString::to_string).collect()),
                    );
                }
            }
            if let Some(obj) = tree.as_object_mut() {
                obj.insert(
                    "placement".into(),
                    json!({"region": REGION, "availability-zone": h.host.az}),
                );
                obj.insert(
                    "iam".into(),
                    json!({"security-credentials": {ROLE: role_document(h.creds)}}),
                );
            }
            trees.push((id.clone(), h.host.sim.clone(), tree));
        }
        drop(w);
        let lag = if lagged {
            *lock(&self.lag)
        } else {
            Duration::ZERO
        };
        for (id, sim, tree) in trees {
            if lag.is_zero() {
                publish(&self.published, &id, &sim, tree, generation);
            } else {
                let published = Arc::clone(&self.published);
                std::thread::spawn(move || {
                    // Gives up as soon as something newer was published (an
                    // explicit sync), so no thread holds the simulator long.
                    let due = Instant::now() + lag;
                    while Instant::now() < due {
                        if lock(&published).get(&id).is_some_and(|g| *g >= generation) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    publish(&published, &id, &sim, tree, generation);
                });
            }
        }
        Ok(())
    }
}

/// Serves `tree` unless a newer generation was published already.
fn publish(
    published: &Mutex<BTreeMap<String, u64>>,
    id: &str,
    sim: &Simulator,
    tree: Value,
    generation: u64,
) {
    let mut map = lock(published);
    let last = map.entry(id.to_string()).or_insert(0);
    if *last < generation {
        *last = generation;
        sim.set_tree(tree);
    }
}

/// The JSON metadata serves for the role.
fn role_document(state: CredentialsState) -> String {
    let now = SystemTime::now();
    let expiration = match state {
        CredentialsState::Valid => now + Duration::from_secs(6 * 3600),
        CredentialsState::Expired => now - Duration::from_secs(3600),
    };
    json!({
        "Code": "Success",
        "LastUpdated": eniroute::ec2::credentials::format_utc(now),
        "Type": "AWS-HMAC",
        "AccessKeyId": "ASIALABROLE000000000",
        "SecretAccessKey": "lab-role-secret",
        "Token": "lab-role-session-token",
        "Expiration": eniroute::ec2::credentials::format_utc(expiration),
    })
    .to_string()
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("ec2-front-conn".into())
            .spawn(move || {
                let _ = serve(stream, &shared);
            });
    }
}

struct HttpRequest {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(rd: &mut BufReader<TcpStream>) -> io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    if rd.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h)? == 0 {
            return Err(other("truncated headers"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    rd.read_exact(&mut body)?;
    Ok(Some(HttpRequest { headers, body }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut wr = stream.try_clone()?;
    let mut rd = BufReader::new(stream);
    let rt = runtime()?;
    let api = client(&shared.moto_url)?;
    let http = reqwest::Client::new();
    while let Some(req) = read_request(&mut rd)? {
        shared.served.fetch_add(1, Ordering::Relaxed);
        let params: BTreeMap<String, String> = url::form_urlencoded::parse(&req.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let action = params.get("Action").cloned().unwrap_or_default();
        lock(&shared.calls).push(action.clone());
        let answer = match shared.take_fault(&action) {
            Some(ApiFault::Drop) => return Ok(()),
            Some(ApiFault::Error {
                status,
                code,
                message,
            }) => Answer::error(status, &code, &message),
            fault => {
                if let Some(ApiFault::Delay(d)) = fault {
                    std::thread::sleep(d);
                }
                handle(shared, &api, &rt, &http, &action, &params, &req)
            }
        };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nServer: AmazonEC2\r\n\r\n",
            answer.status,
            reason(answer.status),
            answer.body.len()
        );
        wr.write_all(format!("{head}{}", answer.body).as_bytes())?;
        wr.flush()?;
        if answer.status == 200 && mutating(&action) {
            lock(&shared.accepted).insert(action, Instant::now());
        }
    }
    Ok(())
}

/// DescribeNetworkInterfaces' answer when no ENI matches.
const NO_ENIS: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeNetworkInterfacesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>lab-front</requestId><networkInterfaceSet/></DescribeNetworkInterfacesResponse>";

/// For DescribeNetworkInterfaces with the filter
/// `ipv6-addresses.ipv6-address`: its values, and the other parameters.
fn ipv6_filter(
    params: &BTreeMap<String, String>,
) -> Option<(Vec<Ipv6Addr>, BTreeMap<String, String>)> {
    if params.get("Action").map(String::as_str) != Some("DescribeNetworkInterfaces") {
        return None;
    }
    let (name_key, _) = params.iter().find(|(k, v)| {
        k.starts_with("Filter.") && k.ends_with(".Name") && *v == "ipv6-addresses.ipv6-address"
    })?;
    let prefix = name_key.trim_end_matches("Name").to_string();
    let wanted = params
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{prefix}Value.")))
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    let rest = params
        .iter()
        .filter(|(k, _)| !k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some((wanted, rest))
}

fn handle(
    shared: &Shared,
    api: &Ec2Client,
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    action: &str,
    params: &BTreeMap<String, String>,
    req: &HttpRequest,
) -> Answer {
    let internal = |e: String| Answer::error(500, "InternalError", &format!("lab front: {e}"));
    match shared.refusal(api, rt, action, params) {
        Ok(Some(refused)) => return refused,
        Ok(None) => {}
        Err(e) => return internal(e.to_string()),
    }
    let body = match ipv6_filter(params) {
        None => req.body.clone(),
        Some((wanted, mut rest)) => {
            // moto 5.2 fails (500) on DescribeNetworkInterfaces' filter
            // `ipv6-addresses.ipv6-address`: the front applies it, asking
            // moto for the ENIs that match by id instead.
            let all = match rt.block_on(api.describe_network_interfaces(&[])) {
                Ok(all) => all,
                Err(e) => return internal(e.to_string()),
            };
            let named: Vec<&String> = rest
                .iter()
                .filter(|(k, _)| k.starts_with("NetworkInterfaceId."))
                .map(|(_, v)| v)
                .collect();
            let matching: Vec<String> = all
                .iter()
                .filter(|e| e.ipv6s.iter().any(|a| wanted.contains(a)))
                .filter(|e| named.is_empty() || named.contains(&&e.id))
                .map(|e| e.id.clone())
                .collect();
            if matching.is_empty() {
                return Answer {
                    status: 200,
                    body: NO_ENIS.to_string(),
                };
            }
            rest.retain(|k, _| !k.starts_with("NetworkInterfaceId."));
            for (i, id) in matching.iter().enumerate() {
                rest.insert(format!("NetworkInterfaceId.{}", i + 1), id.clone());
            }
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&rest)
                .finish()
                .into_bytes()
        }
    };
    let mut post = http.post(&shared.moto_url).body(body);
    for (k, v) in &req.headers {
        if matches!(
            k.as_str(),
            "content-type" | "authorization" | "x-amz-date" | "x-amz-security-token" | "user-agent"
        ) {
            post = post.header(k.as_str(), v.as_str());
        }
    }
    let (status, body) = match rt.block_on(async {
        let resp = post.send().await?;
        let status = resp.status().as_u16();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    }) {
        Ok(x) => x,
        Err(e) => return internal(e.to_string()),
    };
    if status == 200 && mutating(action) {
        if let Err(e) = shared.after(api, rt, action, params) {
            return internal(e.to_string());
        }
        if let Err(e) = shared.sync(api, rt, true) {
            return internal(e.to_string());
        }
    }
    Answer { status, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_ipv6_address_filter_is_taken_out_of_the_request() {
        let (wanted, rest) = ipv6_filter(&params(&[
            ("Action", "DescribeNetworkInterfaces"),
            ("Filter.1.Name", "subnet-id"),
            ("Filter.1.Value.1", "subnet-1"),
            ("Filter.2.Name", "ipv6-addresses.ipv6-address"),
            ("Filter.2.Value.1", "2001:db8::100"),
            ("Filter.2.Value.2", "2001:db8::101"),
        ]))
        .unwrap();
        assert_eq!(
            wanted,
            vec![
                "2001:db8::100".parse::<Ipv6Addr>().unwrap(),
                "2001:db8::101".parse().unwrap()
            ]
        );
        assert_eq!(
            rest,
            params(&[
                ("Action", "DescribeNetworkInterfaces"),
                ("Filter.1.Name", "subnet-id"),
                ("Filter.1.Value.1", "subnet-1"),
            ])
        );
        // Other filters and actions go to moto as they are.
        assert!(ipv6_filter(&params(&[
            ("Action", "DescribeNetworkInterfaces"),
            ("Filter.1.Name", "private-ip-address"),
            ("Filter.1.Value.1", "10.0.3.100"),
        ]))
        .is_none());
        assert!(ipv6_filter(&params(&[
            ("Action", "DescribeSubnets"),
            ("Filter.1.Name", "ipv6-addresses.ipv6-address"),
        ]))
        .is_none());
    }
}
