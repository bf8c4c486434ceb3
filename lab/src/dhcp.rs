//! The VPC's DHCP service: dnsmasq in the router namespace hands each ENI
//! its primary address (by MAC, as EC2 does), with the subnet router as the
//! gateway. It runs inside the router namespace only, serves only the
//! subnets it is given, answers no DNS, and writes its leases and log to
//! the test's own directory.

use std::fs;
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::netns::Netns;
use eniroute::values::Mac;

/// A running dnsmasq; stopped (by pid) when dropped.
pub struct DhcpServer {
    child: Option<Child>,
    hosts: PathBuf,
    log: PathBuf,
}

impl DhcpServer {
    /// Starts dnsmasq in `router` for `subnets` (each served from its
    /// first host address, the router's address on the ENI ports), keeping
    /// its files in `dir`. Only addresses added with [`Self::add_host`] are
    /// handed out.
    pub fn start(router: &Netns, dir: &Path, subnets: &[Ipv4Net]) -> io::Result<DhcpServer> {
        fs::create_dir_all(dir)?;
        let hosts = dir.join("dnsmasq.hosts");
        let log = dir.join("dnsmasq.log");
        let conf = dir.join("dnsmasq.conf");
        fs::write(&hosts, "")?;
        let mut text = format!(
            "# No DNS: only DHCP, only inside the router namespace.\n\
             port=0\nno-resolv\nno-hosts\nkeep-in-foreground\nlog-facility=-\n\
             except-interface=lo\ndhcp-authoritative\nno-ping\nuser=root\npid-file=\n\
             dhcp-leasefile={}\ndhcp-hostsfile={}\n",
            dir.join("dnsmasq.leases").display(),
            hosts.display()
        );
        for net in subnets {
            let net = net.trunc();
            text += &format!("dhcp-range={},static,{},1h\n", net.network(), net.netmask());
        }
        fs::write(&conf, text)?;
        let file = fs::File::create(&log)?;
        let mut cmd = router.command("dnsmasq");
        super::guest::stop_with_parent(&mut cmd);
        let child = cmd
            .arg(format!("--conf-file={}", conf.display()))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("dnsmasq in netns {}: {e}", router.name()))
            })?;
        let pid = child.id();
        let mut server = DhcpServer {
            child: Some(child),
            hosts,
            log,
        };
        // dnsmasq outlives a killed test (it does not keep the parent-death
        // signal), so the next run ends it by this record.
        super::guest::record_pid(dir, "dnsmasq", pid)?;
        // Serving once it has logged its ranges; a bad option ends it at once.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.log().contains("DHCP, static leases only") {
                return Ok(server);
            }
            let exited = matches!(
                server.child.as_mut().map(|c| c.try_wait()),
                Some(Ok(Some(_)))
            );
            if exited || Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "dnsmasq did not start:\n{}",
                    server.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Gives `addr` to the interface with `mac` from now on (dnsmasq re-reads
    /// its hosts file on SIGHUP).
    pub fn add_host(&self, mac: Mac, addr: Ipv4Addr) -> io::Result<()> {
        let mut f = fs::OpenOptions::new().append(true).open(&self.hosts)?;
        writeln!(f, "{mac},{addr}")?;
        drop(f);
        if let Some(child) = &self.child {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP)
                .map_err(|e| io::Error::other(format!("SIGHUP to dnsmasq {}: {e}", child.id())))?;
        }
        Ok(())
    }

    /// What dnsmasq logged so far (one line per DHCP message).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many DHCPACKs dnsmasq has sent for `addr`.
    pub fn acks(&self, addr: Ipv4Addr) -> usize {
        let needle = format!(" {addr} ");
        self.log()
            .lines()
            .filter(|l| l.contains("DHCPACK(") && l.contains(&needle))
            .count()
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs dnsmasq, so the child's pid is dnsmasq.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
