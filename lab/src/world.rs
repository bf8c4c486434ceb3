//! Simulated instances with metadata: the pieces every scenario and every
//! whole-agent test starts from.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

use ipnet::Ipv4Net;

use super::imds_tree::{instance_tree, put_eni, remove_eni, EniMeta};
use super::vpc::{Client, Eni, EniSpec, Instance, Ipv6Eni, Vpc, IMDS_ADDR};
use crate::sim::Simulator;
use eniroute::values::Mac;

/// How to attach one ENI.
#[derive(Debug, Clone)]
pub struct EniPlan {
    pub name: String,
    pub card: u32,
    pub device: u32,
    pub subnet: Ipv4Net,
    pub ipv4s: Vec<Ipv4Addr>,
    pub vpc_id: String,
    pub vpc_cidrs: Vec<Ipv4Net>,
}

impl EniPlan {
    /// An ENI in the lab's main VPC (10.0.0.0/16).
    pub fn new(name: &str, device: u32, subnet: &str, ipv4s: &[&str]) -> io::Result<EniPlan> {
        Ok(EniPlan {
            name: name.to_string(),
            card: 0,
            device,
            subnet: parse(subnet)?,
            ipv4s: ipv4s.iter().map(|a| parse(a)).collect::<io::Result<_>>()?,
            vpc_id: "vpc-0lab1".into(),
            vpc_cidrs: vec![parse("10.0.0.0/16")?],
        })
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> io::Result<T> {
    s.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid address {s:?}"),
        )
    })
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// One simulated instance: its namespace, its ENIs, and the metadata
/// endpoint that describes it.
pub struct LabInstance {
    pub ns: Instance,
    pub enis: Vec<(Eni, EniMeta)>,
    pub sim: Simulator,
    pub endpoint: String,
    pub id: u8,
}

impl LabInstance {
    pub fn eni(&self, name: &str) -> io::Result<&Eni> {
        self.enis
            .iter()
            .find(|(e, _)| e.name() == name)
            .map(|(e, _)| e)
            .ok_or_else(|| invalid(format!("no ENI {name} on instance {}", self.ns.name())))
    }

    fn meta(&self, plan: &EniPlan, mac: Mac) -> EniMeta {
        EniMeta {
            mac,
            eni_id: format!(
                "eni-0{:02x}{:02x}{:02x}lab",
                self.id, plan.card, plan.device
            ),
            card: plan.card,
            device: plan.device,
            subnet: plan.subnet,
            subnet_id: format!("subnet-{}", plan.subnet.network()).replace('.', ""),
            vpc_id: plan.vpc_id.clone(),
            vpc_cidrs: plan.vpc_cidrs.clone(),
            ipv4s: plan.ipv4s.clone(),
        }
    }

    /// Attaches an ENI: the link appears in the instance at once; metadata
    /// describes it only when `publish` is true (see [`Self::publish`]).
    pub fn attach(&mut self, vpc: &Vpc, plan: &EniPlan, publish: bool) -> io::Result<Eni> {
        let mac = Mac::new([0x0a, 0xe0, 0, self.id, plan.card as u8, plan.device as u8]);
        let eni = vpc.attach_eni(
            &self.ns,
            EniSpec {
                name: plan.name.clone(),
                mac,
                subnet: plan.subnet,
                addresses: plan.ipv4s.clone(),
            },
        )?;
        let meta = self.meta(plan, mac);
        if publish {
            self.sim.update(|t| put_eni(t, &meta));
        }
        self.enis.push((eni.clone(), meta));
        Ok(eni)
    }

    /// Makes metadata describe an attached ENI (after a lag, say).
    pub fn publish(&self, name: &str) -> io::Result<()> {
        let (_, meta) = self
            .enis
            .iter()
            .find(|(e, _)| e.name() == name)
            .ok_or_else(|| invalid(format!("no ENI {name}")))?;
        self.sim.update(|t| put_eni(t, meta));
        Ok(())
    }

    /// Detaches an ENI: metadata forgets it, the link disappears.
    pub fn detach(&mut self, vpc: &Vpc, name: &str) -> io::Result<()> {
        let i = self
            .enis
            .iter()
            .position(|(e, _)| e.name() == name)
            .ok_or_else(|| invalid(format!("no ENI {name}")))?;
        let (eni, meta) = self.enis.remove(i);
        self.sim.update(|t| remove_eni(t, meta.mac));
        vpc.detach_eni(&eni)
    }

    /// Rewrites one ENI's private IPv4 list in metadata.
    pub fn set_ipv4s(&mut self, name: &str, ipv4s: Vec<Ipv4Addr>) -> io::Result<()> {
        let (_, meta) = self
            .enis
            .iter_mut()
            .find(|(e, _)| e.name() == name)
            .ok_or_else(|| invalid(format!("no ENI {name}")))?;
        meta.ipv4s = ipv4s;
        let meta = meta.clone();
        self.sim.update(|t| put_eni(t, &meta));
        Ok(())
    }
}

/// Starts a metadata endpoint for one instance on 169.254.169.254:`port` in
/// the router namespace. Each instance gets its own port, so the agents of
/// several instances in one VPC each see their own metadata.
pub fn metadata_endpoint(vpc: &Vpc, port: u16) -> io::Result<(Simulator, String)> {
    let listener = if port == 80 {
        vpc.imds_listener()?
    } else {
        // The address exists once imds_listener ran for the first instance.
        vpc.router()
            .run_in(move || TcpListener::bind((IMDS_ADDR, port)))??
    };
    // The simulator writes a response's head and body separately; with
    // Nagle on, the body waits for the client's delayed ACK (40 ms) on
    // every request, which would make the agent look ten times slower than
    // it is. Accepted sockets inherit TCP_NODELAY from the listener.
    nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::TcpNoDelay, &true)
        .map_err(|e| io::Error::other(format!("TCP_NODELAY on the metadata listener: {e}")))?;
    let sim = Simulator::serve(listener, serde_json::json!({}))?;
    Ok((sim, format!("http://{IMDS_ADDR}:{port}")))
}

/// Builds an instance whose first ENI is the primary, configured as DHCP
/// leaves it; the others are attached bare, as EC2 hands them over.
pub fn instance(vpc: &Vpc, id: u8, enis: &[EniPlan]) -> io::Result<LabInstance> {
    let ns = vpc.instance(&format!("i{id}"))?;
    let (sim, endpoint) = metadata_endpoint(vpc, if id == 1 { 80 } else { 8000 + u16::from(id) })?;
    let primary_mac = Mac::new([0x0a, 0xe0, 0, id, 0, 0]);
    sim.set_tree(instance_tree(&format!("i-0lab{id:02}"), primary_mac, &[]));
    let mut inst = LabInstance {
        ns,
        enis: Vec::new(),
        sim,
        endpoint,
        id,
    };
    for (i, plan) in enis.iter().enumerate() {
        let eni = inst.attach(vpc, plan, true)?;
        if i == 0 {
            vpc.dhcp_configure(&eni)?;
        }
    }
    Ok(inst)
}

/// The management-network instance: eth0 public (10.0.1.10), eth1
/// management (10.0.2.20 and secondary 10.0.2.21), an admin host in an
/// admin range and an internet client behind the VPC router.
pub struct ManagementLab {
    pub admin: Client,
    pub internet: Client,
    pub inst: LabInstance,
    pub vpc: Vpc,
}

pub fn management_network() -> io::Result<ManagementLab> {
    let vpc = Vpc::new()?;
    let inst = instance(
        &vpc,
        1,
        &[
            EniPlan::new("eth0", 0, "10.0.1.0/24", &["10.0.1.10"])?,
            EniPlan::new("eth1", 1, "10.0.2.0/24", &["10.0.2.20", "10.0.2.21"])?,
        ],
    )?;
    let admin = vpc.client("admin", parse("10.9.0.5/24")?)?;
    let internet = vpc.client("inet", parse("198.51.100.10/24")?)?;
    Ok(ManagementLab {
        admin,
        internet,
        inst,
        vpc,
    })
}

impl LabInstance {
    /// The ENIs' metadata, in attach order (for printing what was built).
    pub fn eni_meta(&self) -> impl Iterator<Item = (&Eni, &EniMeta)> {
        self.enis.iter().map(|(e, m)| (e, m))
    }

    /// The first half of moving an ENI to another instance: this instance's
    /// metadata forgets it; the link stays until [`Self::adopt`] takes it.
    pub fn release(&mut self, name: &str) -> io::Result<(Eni, EniMeta)> {
        let i = self
            .enis
            .iter()
            .position(|(e, _)| e.name() == name)
            .ok_or_else(|| invalid(format!("no ENI {name} on instance {}", self.ns.name())))?;
        let (eni, meta) = self.enis.remove(i);
        self.sim.update(|t| remove_eni(t, meta.mac));
        Ok((eni, meta))
    }

    /// The second half: this instance's metadata describes the ENI as device
    /// `device`, then its link moves here. Metadata comes first so the agent
    /// finds the ENI described when the kernel announces the link (EC2 may
    /// lag instead; the agent's fast retries cover that case).
    pub fn adopt(&mut self, vpc: &Vpc, eni: Eni, mut meta: EniMeta, device: u32) -> io::Result<()> {
        meta.device = device;
        self.sim.update(|t| put_eni(t, &meta));
        vpc.move_eni(&eni, &self.ns)?;
        self.enis.push((eni, meta));
        Ok(())
    }
}

/// The route table an ENI's rules point at (amazon-ec2-net-utils numbering,
/// the agent's default base 10000).
pub fn table_of(meta: &EniMeta) -> u32 {
    10000 + 100 * meta.card + meta.device
}

/// A route in the VPC route table of `from`'s subnet: traffic that enters the
/// router from that client and is headed for `dst` goes to the ENI `via`
/// (to its primary address), e.g. a private subnet's internet route through
/// a NAT instance, or an ingress route sending replies back through it.
///
/// EC2 associates route tables with subnets, so a route applies only to
/// traffic coming from that subnet; the router models that with a policy
/// rule on the client's port (`iif`) and a table of its own, numbered
/// `table`. A route in the router's main table would also catch the
/// appliance's own forwarded packets and send them straight back.
pub fn subnet_route(
    vpc: &Vpc,
    from: &Client,
    dst: Ipv4Net,
    via: &Eni,
    table: u32,
) -> io::Result<()> {
    let router = vpc.router();
    let port = super::probe::route_get(router, std::net::IpAddr::V4(from.addr()), None)?.dev;
    let table = table.to_string();
    router.ip([
        "route",
        "replace",
        &dst.to_string(),
        "via",
        &via.primary().to_string(),
        "dev",
        via.port(),
        "onlink",
        "table",
        &table,
    ])?;
    router.ip([
        "rule", "add", "iif", &port, "lookup", &table, "priority", &table,
    ])?;
    Ok(())
}

/// An instance in IPv6-only subnets: no IPv4 address anywhere on it, and
/// metadata only at `[fd00:ec2::254]`. eth0 (device 0, `2001:db8:1::10`) is
/// configured as DHCPv6 and router advertisements leave it; eth1 (device 1,
/// `2001:db8:2::20` and `2001:db8:2::21`) is attached bare. The admin host
/// is at `2001:db8:9::5`.
pub struct Ipv6OnlyLab {
    pub admin: Client,
    pub ns: Instance,
    pub enis: Vec<Ipv6Eni>,
    pub sim: Simulator,
    pub vpc: Vpc,
}

pub fn ipv6_only() -> io::Result<Ipv6OnlyLab> {
    let vpc = Vpc::new()?;
    let ns = vpc.instance("i6")?;
    let v6 = |s: &str| parse::<Ipv6Addr>(s);
    let plans = [
        ("eth0", 0u8, "2001:db8:1::/64", vec![v6("2001:db8:1::10")?]),
        (
            "eth1",
            1,
            "2001:db8:2::/64",
            vec![v6("2001:db8:2::20")?, v6("2001:db8:2::21")?],
        ),
    ];
    let primary = Mac::new([0x0a, 0xe6, 0, 0, 0, 0]);
    let mut tree = instance_tree("i-0lab6", primary, &[]);
    let mut enis = Vec::new();
    for (name, device, subnet, addrs) in plans {
        let mac = Mac::new([0x0a, 0xe6, 0, 0, 0, device]);
        let eni = vpc.attach_eni_ipv6_only(&ns, name, mac, &addrs)?;
        let meta = serde_json::json!({
            "device-number": device.to_string(),
            "network-card": "0",
            "interface-id": format!("eni-06000{device}lab"),
            "mac": mac.to_string(),
            "subnet-id": format!("subnet-6{device}"),
            "vpc-id": "vpc-0lab6",
            "subnet-ipv6-cidr-blocks": subnet,
            "vpc-ipv6-cidr-blocks": "2001:db8::/56",
            "ipv6s": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        });
        if let Some(macs) = tree
            .pointer_mut("/network/interfaces/macs")
            .and_then(serde_json::Value::as_object_mut)
        {
            macs.insert(mac.to_string(), meta);
        }
        enis.push(eni);
    }
    vpc.dhcp6_configure(&ns, "eth0", enis[0].addrs[0])?;
    let listener = vpc.imds_listener_v6(80)?;
    nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::TcpNoDelay, &true)
        .map_err(|e| io::Error::other(format!("TCP_NODELAY on the metadata listener: {e}")))?;
    let sim = Simulator::serve(listener, tree)?;
    let admin = vpc.client("admin", parse("10.9.0.5/24")?)?;
    vpc.client_ipv6(&admin, parse("2001:db8:9::5/64")?)?;
    Ok(Ipv6OnlyLab {
        admin,
        ns,
        enis,
        sim,
        vpc,
    })
}

/// Serves `inst`'s metadata over IPv6 as well, at `[fd00:ec2::254]:80`,
/// from a second simulator (whose request count tells whether the agent
/// used it), and gives the primary ENI the IPv6 address `addr` and a route
/// there, as on a dual-stack instance.
pub fn serve_metadata_over_ipv6(
    vpc: &Vpc,
    inst: &LabInstance,
    addr: Ipv6Addr,
) -> io::Result<Simulator> {
    let eth0 = inst
        .enis
        .first()
        .map(|(e, _)| e.clone())
        .ok_or_else(|| invalid("instance has no ENI".into()))?;
    vpc.eni_ipv6(&eth0, &[addr])?;
    vpc.dhcp6_configure(&inst.ns, eth0.name(), addr)?;
    let listener = vpc.imds_listener_v6(80)?;
    nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::TcpNoDelay, &true)
        .map_err(|e| io::Error::other(format!("TCP_NODELAY on the metadata listener: {e}")))?;
    Simulator::serve(listener, inst.sim.tree())
}
