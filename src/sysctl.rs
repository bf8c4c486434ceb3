//! Per-interface sysctls (forwarding, rp_filter) for appliance ENIs. They are
//! files under /proc/sys, which shows the calling process's network namespace.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A sysctl key, dotted as `sysctl(8)` prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sysctl(String);

impl Sysctl {
    pub fn ipv4_conf(dev: &str, key: &str) -> Sysctl {
        Sysctl(format!("net.ipv4.conf.{dev}.{key}"))
    }

    fn path(key: &str) -> PathBuf {
        // Interface names may contain dots; sysctl(8) writes them as '/'.
        // Only the fixed components are separators here.
        let mut parts: Vec<&str> = key.splitn(4, '.').collect();
        let rest = parts.pop().unwrap_or_default();
        let mut p = PathBuf::from("/proc/sys");
        for part in parts {
            p.push(part);
        }
        match rest.rsplit_once('.') {
            Some((dev, leaf)) => {
                p.push(dev);
                p.push(leaf);
            }
            None => p.push(rest),
        }
        p
    }
}

impl fmt::Display for Sysctl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn read(key: &Sysctl) -> io::Result<String> {
    Ok(std::fs::read_to_string(Sysctl::path(&key.0))?
        .trim()
        .to_string())
}

pub fn write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(Sysctl::path(key), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_dots_in_device_names() {
        assert_eq!(
            Sysctl::path("net.ipv4.conf.eth1.forwarding"),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth1/forwarding")
        );
        assert_eq!(
            Sysctl::path("net.ipv4.conf.eth1.100.rp_filter"),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth1.100/rp_filter")
        );
    }
}
