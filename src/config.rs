//! The configuration file: every choice a user makes, with defaults that need
//! no file at all.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::imds::client::{ImdsOptions, MAX_TOKEN_TTL_SECS};
use crate::values::{EniFacts, Mac, RpFilter};

mod spans;
mod validate;

pub use validate::{
    LOG_FORMATS, LOG_LEVELS, MAX_TABLE_BASE, MIN_TABLE_BASE, MTU_MAX, MTU_MIN, RESERVED_PROTOCOLS,
    TABLE_SPAN,
};

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
    pub metrics: MetricsConfig,
}

/// The daemon's Prometheus metrics, written to a file for node_exporter's
/// textfile collector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to write them; unset: no metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataConfig {
    /// Unset: `http://169.254.169.254`, and `ipv6_endpoint` where that one
    /// is unreachable. Set: this endpoint and no other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
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
            endpoint: None,
            ipv6_endpoint: crate::imds::client::IPV6_ENDPOINT.into(),
            use_ipv6: false,
            token_ttl_secs: MAX_TOKEN_TTL_SECS,
            request_timeout_ms: 2000,
            volatile_refresh_secs: 5,
            static_refresh_secs: 300,
        }
    }
}

impl MetadataConfig {
    /// The endpoint asked first.
    pub fn effective_endpoint(&self) -> &str {
        match (&self.endpoint, self.use_ipv6) {
            (_, true) => &self.ipv6_endpoint,
            (Some(e), false) => e,
            (None, false) => crate::imds::client::IPV4_ENDPOINT,
        }
    }

    /// No endpoint chosen: the client tries the IPv4 one and falls back to
    /// `ipv6_endpoint`, as amazon-ec2-net-utils does.
    pub fn automatic(&self) -> bool {
        self.endpoint.is_none() && !self.use_ipv6
    }
}

/// The client's options as the file sets them; what the file does not cover
/// (connect timeout, attempts, backoff) keeps the client's defaults.
impl From<&MetadataConfig> for ImdsOptions {
    fn from(cfg: &MetadataConfig) -> Self {
        // An endpoint the configuration names (or the command line, or
        // use_ipv6) is used as given; only the default looks further.
        let fallback = cfg.automatic().then(|| cfg.ipv6_endpoint.clone());
        ImdsOptions {
            endpoint: cfg.effective_endpoint().to_string(),
            fallback,
            token_ttl_secs: cfg.token_ttl_secs,
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            ..ImdsOptions::default()
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
    /// Run even where amazon-ec2-net-utils is installed. Both program the
    /// same tables, so by default the agent refuses to change anything.
    pub coexist_with_ec2_net_utils: bool,
    /// Whether the primary ENI's secondary IPv4 addresses go on the host.
    pub primary_secondary_ips: SecondaryIps,
}

/// What becomes of the primary ENI's secondary IPv4 addresses (and of its
/// delegated IPv4 prefixes' addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecondaryIps {
    /// On the host, with their rules, unless an agent that gives them to
    /// pods or tasks runs here (the Kubernetes VPC CNI, ECS awsvpc): then
    /// they are left to it.
    #[default]
    Auto,
    /// On the host, whatever else runs.
    Assign,
    /// Never on the host, no rules for them: another agent owns them.
    Leave,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            exclude: Vec::new(),
            primary_rules: true,
            coexist_with_ec2_net_utils: false,
            primary_secondary_ips: SecondaryIps::Auto,
        }
    }
}

/// Matches ENIs; every field given must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EniMatch {
    /// Interface name glob (`*`, `?`, `[…]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_mac"
    )]
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
    /// Whether this matcher selects the ENI `eni` describes.
    pub fn matches(&self, eni: &EniFacts) -> bool {
        self.name
            .as_deref()
            .is_none_or(|g| glob_match(g, eni.link_name))
            && self.mac.is_none_or(|m| m == eni.mac)
            && self
                .eni_id
                .as_deref()
                .is_none_or(|id| eni.interface_id == Some(id))
            && self.device.is_none_or(|d| d == eni.key.device)
            && self.card.is_none_or(|c| c == eni.key.card)
            && self
                .subnet_id
                .as_deref()
                .is_none_or(|s| eni.subnet_id == Some(s))
    }
}

/// Shell-style glob: `*` matches any run of characters, `?` any one
/// character, `[…]` one character of a set (`[0-9]`, `[!0]` for "not 0"); a
/// `[` without a closing `]` is an ordinary character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    name_glob(pattern).0.matches(text)
}

/// Whether `pattern` uses any glob syntax (else it names one interface).
pub fn is_glob(pattern: &str) -> bool {
    name_glob(pattern).1
}

/// The glob crate's pattern for an interface-name glob, and whether it is
/// more than a literal name. The crate is written for paths, so the pattern
/// is first put in its terms: `**` (a path wildcard there) means `*` in a
/// name, `[^…]` is written `[!…]`, and a `[` that opens no set is escaped
/// (the crate would refuse the whole pattern).
fn name_glob(pattern: &str) -> (glob::Pattern, bool) {
    let mut chars: Vec<char> = Vec::with_capacity(pattern.len());
    for c in pattern.chars() {
        if !(c == '*' && chars.last() == Some(&'*')) {
            chars.push(c);
        }
    }
    let mut sets = 0;
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            // A set's first character is literal, even `]`, so its end is
            // searched from the one after.
            let negated = matches!(chars.get(i + 1), Some('!' | '^'));
            let first = i + 1 + usize::from(negated);
            match chars.iter().skip(first + 1).position(|&c| c == ']') {
                Some(end) => {
                    if negated {
                        chars[i + 1] = '!';
                    }
                    sets += 1;
                    i = first + 1 + end;
                }
                None => {
                    chars.splice(i..=i, ['[', '[', ']']);
                    i += 2;
                }
            }
        }
        i += 1;
    }
    let text: String = chars.into_iter().collect();
    match glob::Pattern::new(&text) {
        Ok(p) => (p, sets > 0 || pattern.contains(['*', '?'])),
        // Not reached: what the crate refuses is rewritten above. Should
        // that change, the name is matched as written.
        Err(_) => (
            glob::Pattern::new(&glob::Pattern::escape(pattern)).unwrap_or_default(),
            false,
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRoute {
    #[serde(deserialize_with = "de_cidr")]
    pub dst: IpNet,
    /// Gateway; defaults to the subnet router of the ENI.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_gateway"
    )]
    pub via: Option<IpAddr>,
}

// The stock messages of the address types ("invalid IP address syntax") do
// not say which form is wanted; these say it, and the caller adds the line.

fn de_cidr<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let s = String::deserialize(d)?;
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    let msg = match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => {
            format!("{s:?} is an address, not a CIDR block; write {s}/32 for a single host")
        }
        Ok(IpAddr::V6(_)) => {
            format!("{s:?} is an address, not a CIDR block; write {s}/128 for a single host")
        }
        Err(_) => format!(
            "{s:?} is not a CIDR block; write address/prefix-length, e.g. 10.20.0.0/16 or \
             2001:db8::/56"
        ),
    };
    Err(de::Error::custom(msg))
}

fn de_opt_gateway<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let s = String::deserialize(d)?;
    match s.parse::<IpAddr>() {
        Ok(a) => Ok(Some(a)),
        Err(_) if s.contains('/') => Err(de::Error::custom(format!(
            "{s:?} has a prefix length; a gateway is a single address, e.g. 10.1.0.1"
        ))),
        Err(_) => Err(de::Error::custom(format!(
            "{s:?} is not an IP address; give the gateway's address, e.g. 10.1.0.1"
        ))),
    }
}

fn de_opt_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Mac>().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "{s:?} is not a MAC address; write six hex octets separated by colons, e.g. \
             0a:1b:2c:3d:4e:5f"
        ))
    })
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
    /// The MACs the configuration names (in `[[eni]]` matches and
    /// exclusions): read from metadata whether or not their link is on the
    /// host, so that `status` shows what the entry refers to.
    pub fn named_macs(&self) -> Vec<Mac> {
        self.enis
            .iter()
            .map(|e| &e.matcher)
            .chain(&self.selection.exclude)
            .filter_map(|m| m.mac)
            .collect()
    }

    /// Whether the agent must leave this ENI alone.
    pub fn excluded(&self, eni: &EniFacts) -> bool {
        self.selection.exclude.iter().any(|m| m.matches(eni))
    }

    pub fn options_for(&self, eni: &EniFacts) -> EniOptions {
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
        for ov in self.enis.iter().filter(|ov| ov.matcher.matches(eni)) {
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

/// A configuration file that could not be used: `path:line: what is wrong;
/// what to do`.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// Loads the file at `path`, stopping at the first problem. A missing file
/// at the default path means "all defaults"; a missing file the user named
/// explicitly is an error.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    load_checked(path).map_err(first)
}

/// Like [`load`], but reports every problem in the file.
pub fn load_checked(path: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = match read_file(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Config::default())
        }
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                "; create it, or leave the path out to run with defaults"
            } else {
                ""
            };
            return Err(vec![ConfigError {
                path,
                line: None,
                message: format!("cannot read the configuration file: {e}{hint}"),
            }]);
        }
    };
    check(&text, &path)
}

/// The largest configuration file read. Real ones are a few KiB; the
/// bound keeps a symlink to a device or a runaway file from eating memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads a configuration file, which must be a regular file of at most
/// [`MAX_CONFIG_BYTES`]. Opened non-blocking and checked before it is read:
/// a FIFO would block the reader (the daemon's event loop on SIGHUP) until
/// someone writes to it, and /dev/zero never ends.
fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ));
    }
    let too_big = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("it is larger than {MAX_CONFIG_BYTES} bytes"),
        )
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::InvalidData, "it is not UTF-8"))
}

/// Parses and validates `text` (read from `path`), stopping at the first
/// problem.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    check(text, path).map_err(first)
}

fn first(mut errors: Vec<ConfigError>) -> ConfigError {
    if errors.is_empty() {
        // `check` never fails without a reason; keep the signature total anyway.
        ConfigError {
            path: PathBuf::new(),
            line: None,
            message: "invalid configuration".into(),
        }
    } else {
        errors.swap_remove(0)
    }
}

/// Parses and validates `text` (read from `path`) and reports every problem
/// found, in line order, each naming the line of the offending value.
pub fn check(text: &str, path: &Path) -> Result<Config, Vec<ConfigError>> {
    let spans = match spans::Spans::parse(text) {
        Ok(s) => s,
        Err(e) => return Err(vec![serde_error(text, path, None, e.message(), e.span())]),
    };
    let config: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => return Err(section_errors(text, path, &spans, e)),
    };
    let mut errors: Vec<ConfigError> = validate::validate(&config)
        .into_iter()
        .map(|p| ConfigError {
            path: path.to_path_buf(),
            line: spans.offset(&p.path).map(|o| spans::line_of(text, o)),
            message: clip_values(&p.message),
        })
        .collect();
    if errors.is_empty() {
        return Ok(config);
    }
    errors.sort_by_key(|e| e.line);
    Err(errors)
}

/// The top-level keys of the file.
const SECTIONS: &[&str] = &[
    "metadata",
    "numbering",
    "selection",
    "eni",
    "log",
    "metrics",
];

/// serde stops at the first error; deserialising each section on its own
/// finds one error per section, so a file with a typo in `[metadata]` and one
/// in `[[eni]]` reports both.
fn section_errors(
    text: &str,
    path: &Path,
    spans: &spans::Spans,
    whole: toml::de::Error,
) -> Vec<ConfigError> {
    macro_rules! only {
        ($field:ident: $ty:ty) => {{
            #[derive(Deserialize)]
            struct Only {
                #[serde(default)]
                #[allow(dead_code)]
                $field: $ty,
            }
            toml::from_str::<Only>(text).err()
        }};
    }
    // serde names the first bad key of the `[[eni]]` entries with its full
    // path; the others (on other lines) come from checking each key on its
    // own.
    let first_eni = only!(eni: Vec<EniOverride>);
    let first_line = first_eni
        .as_ref()
        .and_then(|e| e.span())
        .map(|s| spans::line_of(text, s.start));
    let eni_errors: Vec<ConfigError> = eni_key_errors(text, path, spans)
        .into_iter()
        .filter(|e| e.line != first_line)
        .collect();
    let found: Vec<toml::de::Error> = [
        only!(metadata: MetadataConfig),
        only!(numbering: Numbering),
        only!(selection: Selection),
        first_eni,
        only!(log: LogConfig),
        only!(metrics: MetricsConfig),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut errors: Vec<ConfigError> = found
        .iter()
        .map(|e| serde_error(text, path, Some(spans), e.message(), e.span()))
        .collect();
    errors.extend(eni_errors);
    for (name, offset) in spans.top_level() {
        if !SECTIONS.contains(&name) {
            errors.push(ConfigError {
                path: path.to_path_buf(),
                line: offset.map(|o| spans::line_of(text, o)),
                message: format!(
                    "unknown section `{name}`, expected one of {}; fix the spelling or remove \
                     it (see CONFIG.md)",
                    SECTIONS.join(", ")
                ),
            });
        }
    }
    if errors.is_empty() {
        errors.push(serde_error(
            text,
            path,
            Some(spans),
            whole.message(),
            whole.span(),
        ));
    }
    errors.sort_by_key(|e| e.line);
    errors
}

/// Every key of every `[[eni]]` entry on its own: serde stops at an entry's
/// first bad key, and one edit should fix them all.
fn eni_key_errors(text: &str, path: &Path, spans: &spans::Spans) -> Vec<ConfigError> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(toml::Value::Array(entries)) = doc.get("eni") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let toml::Value::Table(entry) = entry else {
            continue;
        };
        for (k, v) in entry {
            let mut one = toml::Table::new();
            one.insert(k.clone(), v.clone());
            if let Err(e) = toml::Value::Table(one).try_into::<EniOverride>() {
                let at = [
                    spans::Seg::Key("eni"),
                    spans::Seg::Index(i),
                    spans::Seg::Key(k.as_str()),
                ];
                let mut error = serde_error(text, path, None, e.message(), None);
                error.line = spans.offset(&at).map(|o| spans::line_of(text, o));
                error.message = format!("{}: {}", spans::display_path(&at), error.message);
                out.push(error);
            }
        }
    }
    out
}

/// Longest quoted value an error message repeats whole: a value of a
/// megabyte echoed back would bury the message.
const SHOWN_MAX: usize = 64;

/// `message` with every quoted value longer than [`SHOWN_MAX`] characters
/// cut short, saying how long it was.
fn clip_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let mut escaped = false;
        let close = after.char_indices().find_map(|(i, c)| {
            let end = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            end.then_some(i)
        });
        let Some(close) = close else {
            rest = after;
            break;
        };
        let value = &after[..close];
        let chars = value.chars().count();
        if chars > SHOWN_MAX {
            let head: String = value.chars().take(SHOWN_MAX).collect();
            out.push_str(&format!("{head}…\" ({chars} characters)"));
        } else {
            out.push_str(value);
            out.push('"');
        }
        rest = &after[close + 1..];
    }
    let chars = rest.chars().count();
    if chars > 4 * SHOWN_MAX {
        let head: String = rest.chars().take(4 * SHOWN_MAX).collect();
        out.push_str(&format!("{head}… ({chars} characters)"));
    } else {
        out.push_str(rest);
    }
    out
}

/// The key on the line at `offset`, under its `[section]`, for an error
/// the parser found before any key path could be known (a number too large
/// for TOML itself).
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !bare(key) {
        return None;
    }
    let section = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match section {
        Some(s) if bare(&s) => format!("{s}.{key}"),
        _ => key.to_string(),
    })
}

/// A syntax or type error (`message` at byte range `span`) as the operator
/// should read it, naming the key it is about when `spans` can tell.
fn serde_error(
    text: &str,
    path: &Path,
    spans: Option<&spans::Spans>,
    message: &str,
    span: Option<std::ops::Range<usize>>,
) -> ConfigError {
    let offset = span.map(|s| s.start);
    let key = match (spans, offset) {
        (Some(s), Some(o)) => s.path_at(o).join("."),
        (None, Some(o)) => key_on_line(text, o).unwrap_or_default(),
        _ => String::new(),
    };
    let mut message = clip_values(&message.trim().replace('\n', " "));
    // serde names Rust types; operators know TOML values.
    for (rust, toml_word) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of 0 or more"),
    ] {
        message = message.replace(rust, toml_word);
    }
    if message.starts_with("unknown field") {
        message.push_str("; fix the spelling or remove the key (see CONFIG.md)");
    } else if message.starts_with("missing field") {
        message.push_str("; add it");
    }
    ConfigError {
        path: path.to_path_buf(),
        line: offset.map(|o| spans::line_of(text, o)),
        message: if key.is_empty() {
            message
        } else {
            format!("{key}: {message}")
        },
    }
}

/// The configuration in force, defaults filled in, as TOML that parses back
/// to the same `Config`.
pub fn render_effective(config: &Config) -> String {
    match toml::to_string_pretty(config) {
        Ok(text) => {
            // A blank line before each table header, for reading; every
            // string here is single-line, so a header is a line starting `[`.
            let mut out = String::with_capacity(text.len() + 64);
            for line in text.lines() {
                if line.starts_with('[') && !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(line);
                out.push('\n');
            }
            out
        }
        // Every field is a string, number, bool or table; serialising cannot
        // fail, but an operator asking for the effective configuration gets a
        // reason rather than a panic if it ever does.
        Err(e) => format!("# cannot render the configuration: {e}\n"),
    }
}

/// Tables in the agent's range that already hold routes it did not create.
/// `tables_in_use_by_others` comes from the kernel (every table with a route
/// whose protocol is not the agent's); each collision is one message.
pub fn table_collisions(config: &Config, tables_in_use_by_others: &[u32]) -> Vec<String> {
    let base = config.numbering.table_base;
    let end = base.saturating_add(TABLE_SPAN);
    let mut tables: Vec<u32> = tables_in_use_by_others
        .iter()
        .copied()
        .filter(|t| (base..end).contains(t))
        .collect();
    tables.sort_unstable();
    tables.dedup();
    tables
        .into_iter()
        .map(|t| {
            format!(
                "table {t} holds routes eniroute did not create, but lies in its range \
                 {base}-{} (numbering.table_base = {base}); eniroute leaves them and reports \
                 them; move numbering.table_base to a free range to keep the tables apart",
                end - 1
            )
        })
        .collect()
}

/// Keys changed between the running and a newly loaded configuration that a
/// reload cannot apply: the numbering identifies what the agent owns in the
/// kernel, and the log format is fixed when logging starts.
pub fn restart_required(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if running.numbering.table_base != new.numbering.table_base {
        keys.push("numbering.table_base");
    }
    if running.numbering.ifgroup != new.numbering.ifgroup {
        keys.push("numbering.ifgroup");
    }
    if running.numbering.protocol != new.numbering.protocol {
        keys.push("numbering.protocol");
    }
    if running.log.format != new.log.format {
        keys.push("log.format");
    }
    keys
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
        assert!(glob_match("eth[1-9]*", "eth1"));
        assert!(glob_match("eth[1-9]*", "eth15"));
        assert!(!glob_match("eth[1-9]*", "eth0"));
        assert!(glob_match("eth[!0]", "eth3"));
        assert!(!glob_match("eth[!0]", "eth0"));
        assert!(glob_match("ens[56]", "ens6"));
        assert!(glob_match("a[]]b", "a]b"));
        assert!(glob_match("eth[", "eth["));
        assert!(!glob_match("eth[", "eth1"));
        assert!(glob_match("*[0-9]", "vlan.eth.42"));
    }

    #[test]
    fn sections_are_the_top_level_keys() {
        let table: toml::Table = toml::from_str(&render_effective(&Config::default())).unwrap();
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut sections = SECTIONS.to_vec();
        keys.sort_unstable();
        sections.sort_unstable();
        assert_eq!(keys, sections);
    }

    #[test]
    fn glob_detection() {
        assert!(is_glob("eth*"));
        assert!(is_glob("eth[12]"));
        assert!(!is_glob("eth1"));
        assert!(!is_glob("eth["));
    }
}
