//! Per-interface sysctls (forwarding, rp_filter) for appliance ENIs. They are
//! files under /proc/sys, which shows the calling process's network namespace.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A sysctl key, dotted as `sysctl(8)` prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
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

/// A sysctl that could not be read or written.
#[derive(Debug)]
pub struct SysctlError {
    pub key: Sysctl,
    /// The value being written; `None` for a read.
    pub value: Option<String>,
    pub source: io::Error,
}

impl fmt::Display for SysctlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "cannot set sysctl {} to {v}", self.key),
            None => write!(f, "cannot read sysctl {}", self.key),
        }
    }
}

impl std::error::Error for SysctlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub fn read(key: &Sysctl) -> Result<String, SysctlError> {
    match std::fs::read_to_string(Sysctl::path(&key.0)) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(source) => Err(SysctlError {
            key: key.clone(),
            value: None,
            source,
        }),
    }
}

pub fn write(key: &Sysctl, value: &str) -> Result<(), SysctlError> {
    std::fs::write(Sysctl::path(&key.0), value).map_err(|source| SysctlError {
        key: key.clone(),
        value: Some(value.to_string()),
        source,
    })
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
