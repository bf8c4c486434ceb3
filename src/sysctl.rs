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

    /// The interface a per-interface key is about (`net.ipv4.conf.<dev>.…`).
    pub fn dev(&self) -> Option<&str> {
        let rest = self.0.strip_prefix("net.ipv4.conf.")?;
        rest.rsplit_once('.').map(|(dev, _)| dev)
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
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("cannot read sysctl {key}")]
    Read { key: Sysctl, source: io::Error },
    #[error("cannot set sysctl {key} to {value}")]
    Write {
        key: Sysctl,
        value: String,
        source: io::Error,
    },
}

pub fn read(key: &Sysctl) -> Result<String, SysctlError> {
    match std::fs::read_to_string(Sysctl::path(&key.0)) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(source) => Err(SysctlError::Read {
            key: key.clone(),
            source,
        }),
    }
}

pub fn write(key: &Sysctl, value: &str) -> Result<(), SysctlError> {
    std::fs::write(Sysctl::path(&key.0), value).map_err(|source| SysctlError::Write {
        key: key.clone(),
        value: value.to_string(),
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
