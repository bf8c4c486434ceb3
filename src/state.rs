//! State that must outlive a restart: the single-instance lock and the
//! addresses the agent added. It lives under `/run/eniroute/net-<inode>/`,
//! keyed by the network namespace, so agents in different namespaces of one
//! host (the lab runs several instances side by side) never share it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr as StdSocketAddr, UnixListener};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::values::{Link, Mac};

pub const RUN_ROOT: &str = "/run/eniroute";

const LINKS_UP: &str = "links-up.json";
const LEASES: &str = "leases.json";
/// How long a network manager's permanent address (one with a protocol of
/// its own) is remembered after it was last seen: it has no lease time to
/// go by, and a manager that has not put it back within a day has let go
/// of it.
const MANAGER_MEMORY: u64 = 24 * 60 * 60;

/// A file or directory of the state that could not be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct StateError {
    pub path: PathBuf,
    pub message: String,
}

fn err(path: &Path, e: impl fmt::Display) -> StateError {
    StateError {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The state directory of the calling process's network namespace.
pub fn run_dir() -> Result<PathBuf, StateError> {
    let ns = Path::new("/proc/self/ns/net");
    let ino = fs::metadata(ns).map_err(|e| err(ns, e))?.ino();
    let root = std::env::var_os("ENIROUTE_RUN_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(RUN_ROOT));
    Ok(root.join(format!("net-{ino}")))
}

fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    if let Some(parent) = dir.parent() {
        give_to_owner_of(dir, parent);
    }
    Ok(())
}

/// Under systemd /run/eniroute belongs to the unit's unprivileged user. What
/// a root command (`eniroute apply` by hand) creates in it is handed to that
/// user, or the daemon could not take the lock afterwards. Best effort: a
/// process that may not chown leaves things as they are.
fn give_to_owner_of(path: &Path, dir: &Path) {
    let (Ok(d), Ok(p)) = (fs::metadata(dir), fs::metadata(path)) else {
        return;
    };
    if (d.uid(), d.gid()) != (p.uid(), p.gid()) {
        let _ = std::os::unix::fs::chown(path, Some(d.uid()), Some(d.gid()));
    }
}

/// Held for the life of a process that changes the kernel, so two agents in
/// one namespace never fight over the same rules.
///
/// Two locks: an abstract unix socket, whose name lives in the network
/// namespace itself rather than in a directory someone can delete (removing
/// `/run/eniroute` let a second daemon start and fight the first), and the
/// flock in the state directory, which older versions take and `refresh`
/// finds the daemon by.
#[derive(Debug)]
pub struct Lock {
    _socket: UnixListener,
    _file: Flock<File>,
}

/// The abstract socket name for a state directory. The path is only a name
/// here: deleting the directory does not free it. It is part of the name so
/// that tests with their own run root do not collide.
fn socket_name(dir: &Path) -> Vec<u8> {
    use std::hash::{Hash, Hasher};
    let path = dir.join("lock");
    let path = path.as_os_str().as_encoded_bytes();
    // An abstract name has at most 107 bytes.
    if path.len() <= 90 {
        return [b"eniroute:".as_slice(), path].concat();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    format!("eniroute:#{:016x}", h.finish()).into_bytes()
}

fn shown_socket(name: &[u8]) -> PathBuf {
    PathBuf::from(format!("@{}", String::from_utf8_lossy(name)))
}

fn busy(path: &Path, pid: Option<i32>) -> StateError {
    let holder = match pid {
        None => String::new(),
        Some(p) => format!(" (pid {p})"),
    };
    err(
        path,
        format!(
            "another eniroute process{holder} is already managing this network namespace; stop it first"
        ),
    )
}

/// Binds the namespace's abstract socket. Connections are accepted and
/// dropped by a thread of their own, so the queue of a listener nobody
/// serves never fills and blocks the next process that asks who holds it.
fn bind_socket(name: &[u8]) -> Result<UnixListener, StateError> {
    let shown = shown_socket(name);
    let addr = StdSocketAddr::from_abstract_name(name).map_err(|e| err(&shown, e))?;
    match UnixListener::bind_addr(&addr) {
        Ok(listener) => {
            let drain = listener.try_clone().map_err(|e| err(&shown, e))?;
            std::thread::Builder::new()
                .name("eniroute-lock".into())
                .spawn(move || {
                    for conn in drain.incoming() {
                        drop(conn);
                    }
                })
                .map_err(|e| err(&shown, e))?;
            Ok(listener)
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(busy(&shown, socket_holder(name))),
        Err(e) => Err(err(&shown, e)),
    }
}

/// The pid of the process bound to the abstract socket: the kernel records
/// the listener's credentials, and a connecting socket reads them
/// (SO_PEERCRED) without the holder having to answer.
fn socket_holder(name: &[u8]) -> Option<i32> {
    use nix::sys::socket::{
        connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let addr = UnixAddr::new_abstract(name).ok()?;
    connect(fd.as_raw_fd(), &addr).ok()?;
    let cred = getsockopt(&fd, sockopt::PeerCredentials).ok()?;
    Some(cred.pid())
}

impl Lock {
    pub fn acquire(dir: &Path) -> Result<Lock, StateError> {
        let socket = bind_socket(&socket_name(dir))?;
        ensure_dir(dir)?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| err(&path, e))?;
        give_to_owner_of(&path, dir);
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut file) => {
                // The pid is for the message another process prints; the
                // lock itself is the flock, released by the kernel on exit.
                let _ = file.set_len(0);
                let _ = writeln!(&mut *file, "{}", std::process::id());
                Ok(Lock {
                    _socket: socket,
                    _file: file,
                })
            }
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(busy(&path, holder_pid(&file).map(|p| p as i32)))
            }
            Err((_, e)) => Err(err(&path, e)),
        }
    }
}

/// The pid the lock holder wrote. It writes it just after taking the lock,
/// so a process that lost a race for the lock may look before it is there:
/// give the holder a moment.
fn holder_pid(file: &File) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        let mut f = file;
        if f.seek(SeekFrom::Start(0)).is_ok() && f.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Record {
    ifindex: u32,
    mac: Mac,
    address: IpNet,
}

/// Addresses the agent added, so it removes those and only those even on a
/// kernel that does not keep `IFA_PROTO`.
#[derive(Debug, Clone)]
pub struct AddressRecords {
    path: PathBuf,
    records: BTreeSet<Record>,
    /// Links (ifindex, MAC) seen up: one that is down now was set down by
    /// someone (an administrator's maintenance) and stays down. Kept beside
    /// the address records, in `links-up.json`.
    links_up: BTreeSet<(u32, Mac)>,
    /// Addresses with a finite lifetime seen on a link (a DHCP client's),
    /// by MAC, with when that lifetime ends (seconds since the epoch): an
    /// address that vanishes before then (`networkctl reconfigure`, a
    /// client restarting) is still that client's and is not added by the
    /// agent. A network manager's permanent address (a protocol of its
    /// own) is remembered the same way, for [`MANAGER_MEMORY`]. Kept in
    /// `leases.json`.
    leases: BTreeMap<(Mac, IpNet), u64>,
}

#[derive(Serialize, Deserialize)]
struct Lease {
    mac: Mac,
    address: IpNet,
    until: u64,
}

/// Seconds since the epoch: lease ends must compare across restarts.
fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AddressRecords {
    /// Loads the records; a missing file is an empty set, a corrupt one is
    /// reported and treated as empty (the kernel's `IFA_PROTO` still marks
    /// what is ours).
    pub fn load(dir: &Path) -> AddressRecords {
        let path = dir.join("addresses.json");
        let records = match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!("{}: unreadable, ignoring: {e}", path.display());
                BTreeSet::new()
            }),
            Err(_) => BTreeSet::new(),
        };
        let links_up = fs::read_to_string(dir.join(LINKS_UP))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let leases = fs::read_to_string(dir.join(LEASES))
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<Lease>>(&text).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|l| ((l.mac, l.address), l.until))
            .collect();
        AddressRecords {
            path,
            records,
            links_up,
            leases,
        }
    }

    /// Managed links that are down although they were up before: an
    /// administrator took them down, and they stay down. A link seen for
    /// the first time (a hot-plugged ENI) is not among them.
    pub fn held_down(&self, links: &[Link]) -> BTreeSet<u32> {
        links
            .iter()
            .filter(|l| !l.up)
            .filter(|l| l.mac.is_some_and(|m| self.links_up.contains(&(l.index, m))))
            .map(|l| l.index)
            .collect()
    }

    /// Remembers which links are up now, and forgets links that are gone
    /// (an ifindex reused by a new link is a new link). Writes the file only
    /// when something changed.
    pub fn note_links(&mut self, links: &[Link]) -> Result<(), StateError> {
        let present = |i: u32, m: Mac| links.iter().any(|l| l.index == i && l.mac == Some(m));
        let mut next: BTreeSet<(u32, Mac)> = self
            .links_up
            .iter()
            .copied()
            .filter(|(i, m)| present(*i, *m))
            .collect();
        next.extend(
            links
                .iter()
                .filter(|l| l.up)
                .filter_map(|l| l.mac.map(|m| (l.index, m))),
        );
        if next == self.links_up {
            return Ok(());
        }
        self.links_up = next;
        let path = self.dir().join(LINKS_UP);
        if let Some(dir) = path.parent() {
            ensure_dir(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string(&self.links_up).map_err(|e| err(&tmp, e))?;
        fs::write(&tmp, text).map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| err(&path, e))
    }

    /// Addresses a DHCP client held on a link a moment ago (their lifetime
    /// has not run out) that the link no longer has, as (ifindex, address).
    pub fn leases_gone(&self, links: &[Link]) -> BTreeSet<(u32, IpNet)> {
        self.leases_gone_at(links, epoch_now())
    }

    fn leases_gone_at(&self, links: &[Link], now: u64) -> BTreeSet<(u32, IpNet)> {
        links
            .iter()
            .filter_map(|l| Some((l, l.mac?)))
            .flat_map(|(l, mac)| {
                self.leases
                    .iter()
                    .filter(move |((m, a), until)| {
                        *m == mac
                            && **until > now
                            && !l.addresses.iter().any(|x| x.addr.addr() == a.addr())
                    })
                    .map(move |((_, a), _)| (l.index, *a))
            })
            .collect()
    }

    /// Remembers the addresses with a finite lifetime that links hold now
    /// (see `leases`), and forgets leases that ran out.
    pub fn note_leases(&mut self, links: &[Link]) -> Result<(), StateError> {
        self.note_leases_at(links, epoch_now())
    }

    fn note_leases_at(&mut self, links: &[Link], now: u64) -> Result<(), StateError> {
        let mut next = self.leases.clone();
        next.retain(|_, until| *until > now);
        for l in links {
            let Some(mac) = l.mac else { continue };
            for a in l.addresses.iter().filter(|a| !a.owned) {
                if let Some(valid) = a.valid_lft.filter(|v| *v > 0) {
                    next.insert((mac, a.addr), now.saturating_add(u64::from(valid)));
                } else if a.valid_lft.is_none() && a.proto.is_some() {
                    next.insert((mac, a.addr), now.saturating_add(MANAGER_MEMORY));
                }
            }
        }
        // A renewal moves the end by the lease time; the file need not
        // follow every second of it.
        let moved = next.len() != self.leases.len()
            || next.iter().any(|(k, until)| {
                self.leases
                    .get(k)
                    .is_none_or(|before| before.abs_diff(*until) > 60)
            });
        if !moved {
            return Ok(());
        }
        self.leases = next;
        let path = self.dir().join(LEASES);
        ensure_dir(self.dir())?;
        let list: Vec<Lease> = self
            .leases
            .iter()
            .map(|((mac, address), until)| Lease {
                mac: *mac,
                address: *address,
                until: *until,
            })
            .collect();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string(&list).map_err(|e| err(&tmp, e))?;
        fs::write(&tmp, text).map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| err(&path, e))
    }

    /// The state directory the records live in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The recorded addresses still on the link they were added to (same
    /// ifindex, same MAC: an ifindex reused by a new link is not a match).
    pub fn owned(&self, links: &[Link]) -> BTreeSet<(u32, IpNet)> {
        self.records
            .iter()
            .filter(|r| {
                links
                    .iter()
                    .any(|l| l.index == r.ifindex && l.mac == Some(r.mac))
            })
            .map(|r| (r.ifindex, r.address))
            .collect()
    }

    /// Updates the records after a reconcile and forgets addresses whose
    /// link is gone. Writes the file only when something changed.
    pub fn update(
        &mut self,
        links: &[Link],
        added: &[(u32, IpNet)],
        removed: &[(u32, IpNet)],
    ) -> Result<(), StateError> {
        let before = self.records.clone();
        for (index, address) in added {
            if let Some(mac) = links.iter().find(|l| l.index == *index).and_then(|l| l.mac) {
                self.records.insert(Record {
                    ifindex: *index,
                    mac,
                    address: *address,
                });
            }
        }
        self.records.retain(|r| {
            !removed.contains(&(r.ifindex, r.address))
                && links
                    .iter()
                    .any(|l| l.index == r.ifindex && l.mac == Some(r.mac))
        });
        if self.records == before {
            return Ok(());
        }
        self.save()
    }

    fn save(&self) -> Result<(), StateError> {
        if let Some(dir) = self.path.parent() {
            ensure_dir(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.records).map_err(|e| err(&tmp, e))?;
        fs::write(&tmp, text).map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| err(&self.path, e))
    }
}

/// Removes the namespace's state directory (after `cleanup`).
pub fn remove_records(dir: &Path) -> io::Result<()> {
    for name in ["addresses.json", LEASES] {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The pid of the process holding this namespace's lock, if one does.
pub fn daemon_pid(dir: &Path) -> Option<i32> {
    if let Some(pid) = socket_holder(&socket_name(dir)) {
        return Some(pid);
    }
    let path = dir.join("lock");
    let file = File::open(&path).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Nobody holds it: no daemon (the pid in the file is stale).
        Ok(_) => None,
        Err((mut file, _)) => {
            let mut pid = String::new();
            file.read_to_string(&mut pid).ok()?;
            pid.trim().parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Link;

    fn link(index: u32, mac: &str) -> Link {
        Link {
            index,
            name: format!("eth{index}"),
            mac: Some(mac.parse().unwrap()),
            up: true,
            group: 0,
            mtu: 1500,
            addresses: vec![],
        }
    }

    #[test]
    fn records_survive_reload_and_forget_replaced_links() {
        let dir = std::env::temp_dir().join(format!("eniroute-state-{}", std::process::id()));
        let links = vec![link(3, "0a:00:00:00:00:02")];
        let addr: IpNet = "10.0.2.21/32".parse().unwrap();
        let mut r = AddressRecords::load(&dir);
        r.update(&links, &[(3, addr)], &[]).unwrap();
        let r2 = AddressRecords::load(&dir);
        assert!(r2.owned(&links).contains(&(3, addr)));
        // Same ifindex, different MAC: a new link, not ours.
        assert!(r2.owned(&[link(3, "0a:00:00:00:00:09")]).is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    /// An address a DHCP client left (finite lifetime) that vanishes is
    /// still the client's until its lifetime would have ended, across a
    /// reload; a permanent or an owned address is never a lease.
    #[test]
    fn a_vanished_lease_is_remembered_until_its_lifetime_ends() {
        let dir = std::env::temp_dir().join(format!("eniroute-leases-{}", std::process::id()));
        let addr: IpNet = "10.0.2.20/24".parse().unwrap();
        let mut eth1 = link(3, "0a:00:00:00:00:02");
        eth1.addresses = vec![
            crate::values::LinkAddress {
                addr,
                owned: false,
                valid_lft: Some(60),
                proto: None,
            },
            crate::values::LinkAddress {
                addr: "10.0.2.21/32".parse().unwrap(),
                owned: true,
                valid_lft: Some(60),
                proto: None,
            },
            crate::values::LinkAddress {
                addr: "10.0.2.22/32".parse().unwrap(),
                owned: false,
                valid_lft: None,
                proto: None,
            },
        ];
        let mut r = AddressRecords::load(&dir);
        r.note_leases_at(std::slice::from_ref(&eth1), 1000).unwrap();
        assert!(
            r.leases_gone_at(std::slice::from_ref(&eth1), 1010)
                .is_empty(),
            "still there"
        );
        let bare = link(3, "0a:00:00:00:00:02");
        let r = AddressRecords::load(&dir);
        let gone = r.leases_gone_at(std::slice::from_ref(&bare), 1030);
        assert_eq!(gone, BTreeSet::from([(3, addr)]));
        assert!(
            r.leases_gone_at(std::slice::from_ref(&bare), 1061)
                .is_empty(),
            "lifetime over"
        );
        // Another link with the same ifindex is not the one that had it.
        assert!(r
            .leases_gone_at(&[link(3, "0a:00:00:00:00:09")], 1030)
            .is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    /// A network manager's permanent address (IFA_PROTO of its own) that
    /// vanishes is remembered as the manager's for a day.
    #[test]
    fn a_vanished_managers_address_is_remembered_for_a_day() {
        let dir = std::env::temp_dir().join(format!("eniroute-managed-{}", std::process::id()));
        let addr: IpNet = "10.0.2.20/24".parse().unwrap();
        let mut eth1 = link(3, "0a:00:00:00:00:02");
        eth1.addresses = vec![crate::values::LinkAddress {
            addr,
            owned: false,
            valid_lft: None,
            proto: Some(4),
        }];
        let mut r = AddressRecords::load(&dir);
        r.note_leases_at(std::slice::from_ref(&eth1), 1000).unwrap();
        let bare = link(3, "0a:00:00:00:00:02");
        let r = AddressRecords::load(&dir);
        assert_eq!(
            r.leases_gone_at(std::slice::from_ref(&bare), 1030),
            BTreeSet::from([(3, addr)])
        );
        assert!(r
            .leases_gone_at(std::slice::from_ref(&bare), 1000 + MANAGER_MEMORY + 1)
            .is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn second_lock_in_same_dir_is_refused_with_pid() {
        let dir = std::env::temp_dir().join(format!("eniroute-lock-{}", std::process::id()));
        let _a = Lock::acquire(&dir).unwrap();
        let b = Lock::acquire(&dir).unwrap_err().to_string();
        assert!(
            b.contains("already managing") && b.contains(&std::process::id().to_string()),
            "{b}"
        );
        // Removing the directory frees no lock: the socket's name is the
        // namespace's.
        fs::remove_dir_all(&dir).unwrap();
        let c = Lock::acquire(&dir).unwrap_err().to_string();
        assert!(
            c.contains("already managing") && c.contains(&format!("pid {}", std::process::id())),
            "{c}"
        );
        assert_eq!(
            daemon_pid(&dir),
            Some(std::process::id() as i32),
            "the holder is found without the directory"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
