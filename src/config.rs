//! The configuration file: every choice a user makes, with defaults that need
//! no file at all.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::imds::model::{Eni, Mac};

pub const DEFAULT_PATH: &str = "/etc/eniroute/config.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub metadata: MetadataConfig,
    pub numbering: Numbering,
    pub selection: Selection,
    /// Per-ENI overrides; every entry whose `match` fits an ENI applies, in
    /// file order (later entries win for scalar options).
    #[serde(rename = "eni")]
    pub enis: Vec<EniOverride>,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataConfig {
    pub endpoint: String,
    pub ipv6_endpoint: String,
    /// Use `ipv6_endpoint` instead of `endpoint`.
    pub use_ipv6: bool,
    pub token_ttl_secs: u32,
    pub request_timeout_ms: u64,
    pub volatile_refresh_secs: u64,
    pub static_refresh_secs: u64,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            endpoint: "http://169.254.169.254".into(),
            ipv6_endpoint: "http://[fd00:ec2::254]".into(),
            use_ipv6: false,
            token_ttl_secs: 21600,
            request_timeout_ms: 2000,
            volatile_refresh_secs: 5,
            static_refresh_secs: 300,
        }
    }
}

impl MetadataConfig {
    pub fn effective_endpoint(&self) -> &str {
        if self.use_ipv6 {
            &self.ipv6_endpoint
        } else {
            &self.endpoint
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Numbering {
    /// Table and rule priority of device 0 on card 0; ENI (card c, device d)
    /// uses base + 100*c + d.
    pub table_base: u32,
    /// Interface group given to managed ENI links; one rule
    /// `lookup main suppress_ifgroup <group>` at priority `table_base - 1`
    /// lets main decide for every other link (bridges, tunnels).
    pub ifgroup: u32,
    /// Protocol number on every route and rule the agent owns.
    pub protocol: u8,
}

impl Default for Numbering {
    fn default() -> Self {
        Numbering {
            table_base: 10000,
            ifgroup: 10000,
            protocol: 233,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Selection {
    /// ENIs matching any entry are never touched.
    pub exclude: Vec<EniMatch>,
    /// Add rules for the primary ENI's addresses too (default). Off gives
    /// amazon-ec2-net-utils' behaviour.
    pub primary_rules: bool,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            exclude: Vec::new(),
            primary_rules: true,
        }
    }
}

/// Matches ENIs; every field given must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EniMatch {
    /// Interface name glob (`*` and `?`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eni_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
}

impl EniMatch {
    /// Whether this matcher selects `eni` on the link called `link_name`.
    pub fn matches(&self, eni: &Eni, link_name: &str) -> bool {
        self.name.as_deref().is_none_or(|g| glob_match(g, link_name))
            && self.mac.is_none_or(|m| m == eni.mac)
            && self
                .eni_id
                .as_deref()
                .is_none_or(|id| eni.interface_id.as_deref() == Some(id))
            && self.device.is_none_or(|d| d == eni.key.device)
            && self.card.is_none_or(|c| c == eni.key.card)
            && self
                .subnet_id
                .as_deref()
                .is_none_or(|s| eni.subnet_id.as_deref() == Some(s))
    }
}

/// `*` matches any run of characters, `?` any one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpFilter {
    Off,
    Strict,
    Loose,
}

impl RpFilter {
    pub fn sysctl_value(self) -> &'static str {
        match self {
            RpFilter::Off => "0",
            RpFilter::Strict => "1",
            RpFilter::Loose => "2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRoute {
    pub dst: IpNet,
    /// Gateway; defaults to the subnet router of the ENI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EniOverride {
    #[serde(rename = "match")]
    pub matcher: EniMatch,
    /// Routes added to the main table through this ENI.
    pub main_routes: Vec<UserRoute>,
    /// Routes added to this ENI's own table.
    pub table_routes: Vec<UserRoute>,
    /// Route the ENI's VPC CIDRs (non-overlapping ones) in main when the ENI
    /// is in another VPC than the primary ENI. Default on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_vpc: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rp_filter: Option<RpFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Assign the ENI's addresses (default); off leaves them to DHCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assign_addresses: Option<bool>,
    /// Also assign addresses from delegated prefixes (default off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assign_prefix_addresses: Option<bool>,
}

/// The options in force for one ENI after every matching override applied.
#[derive(Debug, Clone, PartialEq)]
pub struct EniOptions {
    pub main_routes: Vec<UserRoute>,
    pub table_routes: Vec<UserRoute>,
    pub cross_vpc: bool,
    pub forwarding: Option<bool>,
    pub rp_filter: Option<RpFilter>,
    pub mtu: Option<u32>,
    pub assign_addresses: bool,
    pub assign_prefix_addresses: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug, trace
    pub level: String,
    /// auto (journal when started by systemd, else text), text, journal
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "auto".into(),
        }
    }
}

impl Config {
    /// Whether the agent must leave this ENI alone.
    pub fn excluded(&self, eni: &Eni, link_name: &str) -> bool {
        self.selection
            .exclude
            .iter()
            .any(|m| m.matches(eni, link_name))
    }

    pub fn options_for(&self, eni: &Eni, link_name: &str) -> EniOptions {
        let mut o = EniOptions {
            main_routes: Vec::new(),
            table_routes: Vec::new(),
            cross_vpc: true,
            forwarding: None,
            rp_filter: None,
            mtu: None,
            assign_addresses: true,
            assign_prefix_addresses: false,
        };
        for ov in self.enis.iter().filter(|ov| ov.matcher.matches(eni, link_name)) {
            o.main_routes.extend(ov.main_routes.iter().cloned());
            o.table_routes.extend(ov.table_routes.iter().cloned());
            o.cross_vpc = ov.cross_vpc.unwrap_or(o.cross_vpc);
            o.forwarding = ov.forwarding.or(o.forwarding);
            o.rp_filter = ov.rp_filter.or(o.rp_filter);
            o.mtu = ov.mtu.or(o.mtu);
            o.assign_addresses = ov.assign_addresses.unwrap_or(o.assign_addresses);
            o.assign_prefix_addresses = ov
                .assign_prefix_addresses
                .unwrap_or(o.assign_prefix_addresses);
        }
        o
    }
}

/// A configuration file that could not be used.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Loads the file at `path`. A missing file at the default path means "all
/// defaults"; a missing file the user named explicitly is an error.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Config::default())
        }
        Err(e) => {
            return Err(ConfigError {
                path,
                line: None,
                message: format!("cannot read: {e}"),
            })
        }
    };
    parse(&text, &path)
}

pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        ConfigError {
            path: path.to_path_buf(),
            line,
            message: e.message().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("eth*", "eth1"));
        assert!(glob_match("e?h1", "eth1"));
        assert!(!glob_match("eth?", "eth10"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("ens", "ens5"));
    }
}
