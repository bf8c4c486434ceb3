//! A simulated VPC: a router namespace, instance namespaces whose ENIs are
//! veth pairs into the router, client hosts behind the router, and the
//! metadata endpoint on the router.
//!
//! The router reproduces the two VPC behaviours the agent exists for:
//! - every ENI port answers ARP for anything the VPC can route elsewhere
//!   (proxy ARP), as the VPC's virtual router answers every ARP in a subnet;
//! - a packet whose source address does not belong to the ENI it arrives
//!   from is dropped (the source/destination check). The router knows each
//!   ENI's addresses only as /32 routes to that ENI's port, and strict
//!   reverse-path filtering on the port drops any packet whose source would
//!   not be routed back out of the same port.
//!
//! One difference from EC2: the kernel applies rp_filter to ARP requests too,
//! so an ARP request whose sender address belongs to another ENI (sent when
//! the first packet towards the router carries that address) goes unanswered,
//! where the VPC would answer it and then drop the packet. Either way the
//! misrouted packet is lost; it is only counted in a different place.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ipnet::{Ipv4Net, Ipv6Net};

use super::netns::{veth, Netns};
use eniroute::values::Mac;

/// The link-local address of the instance metadata service.
pub const IMDS_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The metadata service's IPv6 address (Nitro instances).
pub const IMDS_ADDR_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// The IPv6 router of every Nitro subnet, on each ENI's port.
pub const ROUTER_V6: &str = "fe80:ec2::1";

/// Interface names are limited to 15 bytes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// A simulated VPC; dropping it deletes its namespaces (and with them every
/// veth), except those still held through an [`Instance`] or [`Client`].
#[derive(Debug)]
pub struct Vpc {
    router: Arc<Netns>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Instance and client namespaces, kept alive for the VPC's lifetime.
    hosts: Vec<Arc<Netns>>,
    /// Indexed by [`Eni::id`].
    enis: Vec<EniRecord>,
    /// Numbers router ports so their names are unique in the router.
    next_port: usize,
}

#[derive(Debug)]
struct EniRecord {
    /// The namespace the instance end currently lives in.
    instance: Arc<Netns>,
    /// Addresses the router sends to this ENI; the first is the primary.
    addresses: Vec<Ipv4Addr>,
    attached: bool,
}

/// A simulated EC2 instance: a namespace with strict reverse-path filtering,
/// so a packet arriving on an ENI that the instance would answer through
/// another one is already dropped on the way in.
///
/// Dereferences to its [`Netns`], whose name carries the instance's name.
#[derive(Debug, Clone)]
pub struct Instance {
    netns: Arc<Netns>,
}

impl Deref for Instance {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// A host outside the instance (admin host, internet client, database),
/// with `eth0` holding its address and a default route via the router.
#[derive(Debug, Clone)]
pub struct Client {
    netns: Arc<Netns>,
    addr: Ipv4Net,
    /// The router's end of the client's link.
    port: String,
}

impl Client {
    pub fn addr(&self) -> Ipv4Addr {
        self.addr.addr()
    }

    /// The client's network, with the router at its first host address.
    pub fn net(&self) -> Ipv4Net {
        self.addr.trunc()
    }
}

impl Deref for Client {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// What to attach: the instance-side interface name, the ENI's MAC, its
/// subnet and its private IPv4 addresses, primary first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EniSpec {
    pub name: String,
    pub mac: Mac,
    pub subnet: Ipv4Net,
    pub addresses: Vec<Ipv4Addr>,
}

/// An attached ENI, as a handle into its [`Vpc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    id: usize,
    name: String,
    mac: Mac,
    subnet: Ipv4Net,
    primary: Ipv4Addr,
    port: String,
}

impl Eni {
    /// The interface name on the instance.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn primary(&self) -> Ipv4Addr {
        self.primary
    }

    /// The subnet's router: its first host address, as in a VPC.
    pub fn router(&self) -> Ipv4Addr {
        first_host(self.subnet)
    }

    /// The router-side interface of this ENI's veth pair.
    pub fn port(&self) -> &str {
        &self.port
    }
}

/// An ENI of an IPv6-only subnet (see [`Vpc::attach_eni_ipv6_only`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Eni {
    pub name: String,
    pub mac: Mac,
    /// Its addresses, primary first.
    pub addrs: Vec<Ipv6Addr>,
    /// The router-side interface of its veth pair.
    pub port: String,
}

impl Vpc {
    /// Creates the router namespace.
    pub fn new() -> io::Result<Vpc> {
        let router = Netns::create("router")?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        // The kernel applies max(conf.all, conf.<port>) for rp_filter, so
        // `all` must be 0 for a port's own value to decide: strict on ENI
        // ports, and off on a port whose source/destination check is off.
        router.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        router.sysctl("net.ipv4.conf.default.rp_filter", "1")?;
        Ok(Vpc {
            router: Arc::new(router),
            state: Mutex::new(State::default()),
        })
    }

    /// The router namespace, for diagnostics (`ip route`, counters).
    pub fn router(&self) -> &Netns {
        &self.router
    }

    /// Creates an instance namespace with strict rp_filter (`all` and
    /// `default`, so ENIs attached later inherit it).
    pub fn instance(&self, name: &str) -> io::Result<Instance> {
        let netns = Netns::create(name)?;
        netns.sysctl("net.ipv4.conf.all.rp_filter", "1")?;
        netns.sysctl("net.ipv4.conf.default.rp_filter", "1")?;
        let netns = Arc::new(netns);
        self.lock().hosts.push(Arc::clone(&netns));
        Ok(Instance { netns })
    }

    /// Attaches an ENI to `instance`: its link appears there up and without
    /// addresses (as a hot-plugged NIC does), and the router learns its
    /// addresses.
    pub fn attach_eni(&self, instance: &Instance, spec: EniSpec) -> io::Result<Eni> {
        let invalid = |what: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ENI {} ({}): {what}", spec.name, spec.mac),
            )
        };
        let Some(&primary) = spec.addresses.first() else {
            return Err(invalid("no addresses".into()));
        };
        if spec.subnet.prefix_len() > 30 {
            return Err(invalid(format!("subnet {} too small", spec.subnet)));
        }
        let subnet = spec.subnet.trunc();
        let router_addr = first_host(subnet);
        for addr in &spec.addresses {
            if !subnet.contains(addr) || *addr == router_addr || *addr == subnet.network() {
                return Err(invalid(format!("address {addr} not usable in {subnet}")));
            }
        }

        let mut state = self.lock();
        let id = state.enis.len();
        let port = port_name(&mut state, 'e', &spec.name);
        veth(
            &instance.netns,
            &spec.name,
            Some(spec.mac),
            &self.router,
            &port,
        )?;
        if let Err(e) = self.setup_eni_port(&port, spec.mac, router_addr, &spec.addresses) {
            let _ = self.router.ip(["link", "del", "dev", port.as_str()]);
            return Err(e);
        }
        state.enis.push(EniRecord {
            instance: Arc::clone(&instance.netns),
            addresses: spec.addresses.clone(),
            attached: true,
        });
        Ok(Eni {
            id,
            name: spec.name,
            mac: spec.mac,
            subnet,
            primary,
            port,
        })
    }

    fn setup_eni_port(
        &self,
        port: &str,
        mac: Mac,
        router_addr: Ipv4Addr,
        addrs: &[Ipv4Addr],
    ) -> io::Result<()> {
        // Strict: the source must route back out of this very port, which
        // only the ENI's own addresses (the /32s below) do.
        self.router
            .sysctl(&format!("net.ipv4.conf.{port}.rp_filter"), "1")?;
        // The instance ARPs for anything in its subnet (other instances, and
        // the router); the port answers for whatever it routes elsewhere.
        self.router
            .sysctl(&format!("net.ipv4.conf.{port}.proxy_arp"), "1")?;
        // ... at once, as the VPC does: the kernel otherwise delays each
        // proxy reply by a random time of up to `proxy_delay` (0.8 s), a slow
        // first connection between two instances of one subnet.
        self.router
            .sysctl(&format!("net.ipv4.neigh.{port}.proxy_delay"), "0")?;
        // A /32 keeps the router from claiming the subnet on one port: the
        // subnet is spread over several ports (one per ENI in it), each
        // owning only its addresses.
        self.router
            .ip(["addr", "add", &format!("{router_addr}/32"), "dev", port])?;
        for addr in addrs {
            self.router
                .ip(["route", "add", &format!("{addr}/32"), "dev", port])?;
            self.map_address(*addr, mac, port)?;
        }
        Ok(())
    }

    /// The VPC knows which ENI holds each address and never ARPs for it. A
    /// router that did would, when the first packet for an address arrives
    /// before the instance has configured it, wait a whole ARP retransmit
    /// (1 s) before trying again: an artefact no VPC has, which would hide
    /// how fast the agent really is.
    fn map_address(&self, addr: Ipv4Addr, mac: Mac, port: &str) -> io::Result<()> {
        self.router.ip([
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            &mac.to_string(),
            "dev",
            port,
            "nud",
            "permanent",
        ])?;
        Ok(())
    }

    /// Moves a secondary private IPv4 from one ENI to another (EC2's
    /// assign-private-ip-addresses with reassignment): the router sends it to
    /// `to` from now on. Neither instance's configuration is touched.
    pub fn move_address(&self, from: &Eni, to: &Eni, addr: Ipv4Addr) -> io::Result<()> {
        let invalid = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "move {addr} from ENI {} to ENI {}: {what}",
                    from.mac, to.mac
                ),
            )
        };
        if addr == from.primary {
            return Err(invalid("a primary address cannot move"));
        }
        if !to.subnet.contains(&addr) {
            return Err(invalid("address outside the target ENI's subnet"));
        }
        let mut state = self.lock();
        let attached = |eni: &Eni| state.enis.get(eni.id).is_some_and(|e| e.attached);
        if !attached(from) || !attached(to) {
            return Err(invalid("ENI not attached"));
        }
        if !state.enis[from.id].addresses.contains(&addr) {
            return Err(invalid("address not on the source ENI"));
        }
        // One replace, so the router never has a moment without a route.
        self.router
            .ip(["route", "replace", &format!("{addr}/32"), "dev", &to.port])?;
        self.map_address(addr, to.mac, &to.port)?;
        // Only a stale mapping, unused now that the route points elsewhere.
        let _ = self
            .router
            .ip(["neigh", "del", &addr.to_string(), "dev", from.port.as_str()]);
        state.enis[from.id].addresses.retain(|a| *a != addr);
        state.enis[to.id].addresses.push(addr);
        Ok(())
    }

    /// Routes an address no ENI held before to `eni` (EC2 assigned a new
    /// secondary address).
    pub fn assign_address(&self, eni: &Eni, addr: Ipv4Addr) -> io::Result<()> {
        let mut state = self.lock();
        self.record(&mut state, eni)?;
        self.router
            .ip(["route", "replace", &format!("{addr}/32"), "dev", &eni.port])?;
        self.map_address(addr, eni.mac, &eni.port)?;
        state.enis[eni.id].addresses.push(addr);
        Ok(())
    }

    /// Detaches an ENI: its link disappears from the instance and the router
    /// forgets its addresses.
    pub fn detach_eni(&self, eni: &Eni) -> io::Result<()> {
        let mut state = self.lock();
        let record = self.record(&mut state, eni)?;
        // Deleting one end of a veth deletes the pair, and the routes on it.
        self.router.ip(["link", "del", "dev", eni.port.as_str()])?;
        record.attached = false;
        Ok(())
    }

    /// Moves an ENI to another instance, keeping its MAC, name and router
    /// port (so the router's routes stay): the link vanishes from one
    /// namespace and appears in the other. The kernel drops its addresses and
    /// takes it down on the way; it is brought up again, as the OS does with
    /// a hot-plugged NIC, and left unconfigured.
    pub fn move_eni(&self, eni: &Eni, to: &Instance) -> io::Result<()> {
        let mut state = self.lock();
        let record = self.record(&mut state, eni)?;
        // EC2 hands a moved ENI to its new instance as a new device, without
        // the alternative names the old instance gave it; a veth keeps them
        // across namespaces (and the kernel refuses the move when one of them
        // is taken there).
        let shown = record
            .instance
            .ip(["-o", "link", "show", "dev", eni.name.as_str()])?;
        let words: Vec<&str> = shown.split_whitespace().collect();
        for pair in words.windows(2).filter(|w| w[0] == "altname") {
            record.instance.ip([
                "link",
                "property",
                "del",
                "dev",
                eni.name.as_str(),
                "altname",
                pair[1].trim_end_matches('\\'),
            ])?;
        }
        record.instance.ip([
            "link",
            "set",
            "dev",
            eni.name.as_str(),
            "netns",
            to.netns.name(),
        ])?;
        record.instance = Arc::clone(&to.netns);
        to.netns
            .ip(["link", "set", "dev", eni.name.as_str(), "up"])?;
        Ok(())
    }

    /// Does what DHCP does on EC2 for the primary ENI: the primary address
    /// with the subnet's prefix, and a default route via the subnet router.
    pub fn dhcp_configure(&self, eni: &Eni) -> io::Result<()> {
        let mut state = self.lock();
        let instance = Arc::clone(&self.record(&mut state, eni)?.instance);
        drop(state);
        let addr = format!("{}/{}", eni.primary, eni.subnet.prefix_len());
        instance.ip(["addr", "add", addr.as_str(), "dev", eni.name.as_str()])?;
        instance.ip([
            "route",
            "add",
            "default",
            "via",
            &eni.router().to_string(),
            "dev",
            eni.name.as_str(),
        ])?;
        Ok(())
    }

    /// Turns the VPC's source/destination check for an ENI on or off, as an
    /// appliance (NAT, proxy, router) needs. Off means any source address may
    /// leave through the ENI.
    pub fn set_source_dest_check(&self, eni: &Eni, on: bool) -> io::Result<()> {
        let mut state = self.lock();
        self.record(&mut state, eni)?;
        self.router.sysctl(
            &format!("net.ipv4.conf.{}.rp_filter", eni.port),
            if on { "1" } else { "0" },
        )
    }

    /// A VPC route table entry targeting an ENI: traffic for `dst` is sent to
    /// the ENI (to its primary address's MAC, as the VPC does), e.g. a
    /// private subnet's default route through a NAT instance.
    pub fn route_via_eni(&self, dst: Ipv4Net, eni: &Eni) -> io::Result<()> {
        let mut state = self.lock();
        self.record(&mut state, eni)?;
        self.router.ip([
            "route",
            "replace",
            &dst.to_string(),
            "via",
            &eni.primary.to_string(),
            "dev",
            eni.port.as_str(),
        ])?;
        Ok(())
    }

    /// Creates a client host at `addr` (e.g. `10.9.0.5/24`): the router gets
    /// the first host of that network on its side, the client a default route
    /// via it. Each client needs a network of its own.
    pub fn client(&self, name: &str, addr: Ipv4Net) -> io::Result<Client> {
        if addr.prefix_len() > 30
            || addr.addr() == first_host(addr)
            || addr.addr() == addr.network()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("client {name}: {addr} leaves no room for a router address"),
            ));
        }
        let gateway = first_host(addr);
        let netns = Arc::new(Netns::create(name)?);
        let mut state = self.lock();
        state.hosts.push(Arc::clone(&netns));
        let port = port_name(&mut state, 'c', name);
        veth(&netns, "eth0", None, &self.router, &port)?;
        self.router
            .sysctl(&format!("net.ipv4.conf.{port}.rp_filter"), "1")?;
        self.router.ip([
            "addr",
            "add",
            &format!("{gateway}/{}", addr.prefix_len()),
            "dev",
            port.as_str(),
        ])?;
        netns.ip(["addr", "add", &addr.to_string(), "dev", "eth0"])?;
        netns.ip(["route", "add", "default", "via", &gateway.to_string()])?;
        Ok(Client { netns, addr, port })
    }

    /// Gives a client IPv6 as well: `addr` on its link, the first host of
    /// `addr`'s network on the router's end, and a default route via it.
    /// Addresses skip duplicate address detection, which would leave them
    /// unusable for a second and has nothing to find in a lab.
    pub fn client_ipv6(&self, client: &Client, addr: Ipv6Net) -> io::Result<()> {
        let _state = self.lock();
        self.router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let gateway = Ipv6Addr::from(u128::from(addr.network()).saturating_add(1));
        self.router.ip([
            "-6",
            "addr",
            "add",
            &format!("{gateway}/{}", addr.prefix_len()),
            "dev",
            client.port.as_str(),
            "nodad",
        ])?;
        client.netns.ip([
            "-6",
            "addr",
            "add",
            &addr.to_string(),
            "dev",
            "eth0",
            "nodad",
        ])?;
        client
            .netns
            .ip(["-6", "route", "add", "default", "via", &gateway.to_string()])?;
        Ok(())
    }

    /// The VPC's IPv6 side of an ENI: the router answers as `fe80:ec2::1`
    /// (the IPv6 router of every Nitro subnet) on the ENI's port and routes
    /// `addrs` to the ENI.
    pub fn eni_ipv6(&self, eni: &Eni, addrs: &[Ipv6Addr]) -> io::Result<()> {
        let _state = self.lock();
        self.router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        self.router.ip([
            "-6",
            "addr",
            "add",
            "fe80:ec2::1/64",
            "dev",
            eni.port.as_str(),
            "nodad",
        ])?;
        for a in addrs {
            self.router.ip([
                "-6",
                "route",
                "add",
                &format!("{a}/128"),
                "dev",
                eni.port.as_str(),
            ])?;
        }
        Ok(())
    }

    /// A listener on 169.254.169.254:80 inside the router, for the metadata
    /// simulator. Instances reach it through their default route via the
    /// primary ENI (on EC2 it is link-local behind the primary ENI); replies
    /// go back along the router's /32 for the primary address. Callers that
    /// serve several instances tell them apart by the peer address.
    pub fn imds_listener(&self) -> io::Result<TcpListener> {
        let _state = self.lock();
        self.router
            .ip(["addr", "replace", &format!("{IMDS_ADDR}/32"), "dev", "lo"])?;
        let bind = SocketAddr::new(IpAddr::V4(IMDS_ADDR), 80);
        self.router
            .run_in(|| TcpListener::bind(bind))?
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("bind {bind} in netns {}: {e}", self.router.name()),
                )
            })
    }

    /// Attaches an ENI of an IPv6-only subnet: no IPv4 at all, its
    /// addresses routed to it, `fe80:ec2::1` on the router's end. The VPC's
    /// source check holds for IPv6 too: traffic the router would forward
    /// from this port must come from one of `addrs` (link-local traffic to
    /// the router itself, such as neighbour discovery, is local and passes).
    pub fn attach_eni_ipv6_only(
        &self,
        instance: &Instance,
        name: &str,
        mac: Mac,
        addrs: &[Ipv6Addr],
    ) -> io::Result<Ipv6Eni> {
        let mut state = self.lock();
        let port = port_name(&mut state, 'e', name);
        veth(&instance.netns, name, Some(mac), &self.router, &port)?;
        self.router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        self.router
            .ip(["-6", "addr", "add", "fe80:ec2::1/64", "dev", &port, "nodad"])?;
        // One priority per port keeps each port's rules together.
        let priority = (1000 + 2 * state.next_port).to_string();
        let drop_priority = (1001 + 2 * state.next_port).to_string();
        for a in addrs {
            let host = format!("{a}/128");
            self.router
                .ip(["-6", "route", "add", &host, "dev", &port])?;
            // Known, as the VPC knows every address's ENI: no neighbour
            // discovery delay on the first packet.
            self.router.ip([
                "-6",
                "neigh",
                "replace",
                &a.to_string(),
                "lladdr",
                &mac.to_string(),
                "dev",
                &port,
                "nud",
                "permanent",
            ])?;
            self.router.ip([
                "-6", "rule", "add", "iif", &port, "from", &host, "lookup", "main", "priority",
                &priority,
            ])?;
        }
        self.router.ip([
            "-6",
            "rule",
            "add",
            "iif",
            &port,
            "to",
            "2000::/3",
            "prohibit",
            "priority",
            &drop_priority,
        ])?;
        Ok(Ipv6Eni {
            name: name.to_string(),
            mac,
            addrs: addrs.to_vec(),
            port,
        })
    }

    /// What DHCPv6 and router advertisements leave on an instance's ENI:
    /// its address (a /128, as EC2's DHCPv6 hands out) and a default route
    /// via the subnet's IPv6 router. No duplicate address detection: it
    /// has nothing to find here and would hold the address back a second.
    pub fn dhcp6_configure(
        &self,
        instance: &Instance,
        dev: &str,
        addr: Ipv6Addr,
    ) -> io::Result<()> {
        instance.ip([
            "-6",
            "addr",
            "add",
            &format!("{addr}/128"),
            "dev",
            dev,
            "nodad",
        ])?;
        instance.ip([
            "-6", "route", "add", "default", "via", ROUTER_V6, "dev", dev,
        ])?;
        Ok(())
    }

    /// A listener on `[fd00:ec2::254]:port` inside the router, for a
    /// metadata simulator reached over IPv6.
    pub fn imds_listener_v6(&self, port: u16) -> io::Result<TcpListener> {
        let _state = self.lock();
        self.router.ip([
            "-6",
            "addr",
            "replace",
            &format!("{IMDS_ADDR_V6}/128"),
            "dev",
            "lo",
            "nodad",
        ])?;
        let bind = SocketAddr::new(IpAddr::V6(IMDS_ADDR_V6), port);
        self.router
            .run_in(|| TcpListener::bind(bind))?
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("bind {bind} in netns {}: {e}", self.router.name()),
                )
            })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain bookkeeping; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record<'s>(&self, state: &'s mut State, eni: &Eni) -> io::Result<&'s mut EniRecord> {
        match state.enis.get_mut(eni.id) {
            Some(record) if record.attached => Ok(record),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("ENI {} ({}) is not attached", eni.name, eni.mac),
            )),
        }
    }
}

fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(1))
}

/// A router-side interface name that is unique in the router and readable:
/// `e3-eth1` for an ENI, `c4-admin` for a client.
fn port_name(state: &mut State, kind: char, name: &str) -> String {
    let n = state.next_port;
    state.next_port += 1;
    let mut port = format!("{kind}{n}-");
    port.extend(
        name.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_'),
    );
    port.truncate(MAX_IFNAME);
    port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_host_is_the_vpc_router() {
        let net: Ipv4Net = "10.0.1.0/24".parse().unwrap();
        assert_eq!(first_host(net), Ipv4Addr::new(10, 0, 1, 1));
    }

    #[test]
    fn port_names_are_unique_and_fit() {
        let mut state = State::default();
        let a = port_name(&mut state, 'e', "eth1");
        let b = port_name(&mut state, 'e', "eth1");
        let c = port_name(&mut state, 'c', "a-very-long-client-name");
        assert_eq!(a, "e0-eth1");
        assert_ne!(a, b);
        assert!(c.len() <= MAX_IFNAME && c.starts_with("c2-"), "{c}");
    }
}
