//! What an operator should know that changes nothing by itself: metadata or
//! configuration the agent cannot honour, and state of others in its way.
//! Compared by value, so the daemon logs each once until the set changes;
//! printed and serialised as one line.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use super::{EniKey, Mac, Route, Rule};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// An ENI whose metadata failed validation, in the parser's words
    /// (`ENI <mac>: key …`); that ENI is left alone.
    InvalidMetadata(String),
    /// One read gives an up link with addresses of the ENI no address at
    /// all of one family (an empty or 404 `local-ipv4s` or `ipv6s`): held
    /// until a second read agrees.
    UnconfirmedRemoval {
        /// The ENI's label (`eni-… (mac)`).
        eni: String,
        dev: String,
        /// `local-ipv4s` or `ipv6s`.
        key: &'static str,
    },
    /// Metadata gives two ENIs the same card and device, so the same table.
    TableTaken {
        /// The ENI's label (`eni-… (mac)`).
        eni: String,
        table: u32,
        holder: Mac,
        key: EniKey,
    },
    /// A configured route whose gateway is not on the ENI's subnet.
    GatewayOffSubnet {
        eni: String,
        dev: String,
        dst: IpNet,
        gateway: IpAddr,
    },
    /// A VPC CIDR of a cross-VPC ENI that overlaps the primary VPC's: not
    /// routed, so the primary VPC keeps its own addresses.
    VpcOverlap {
        eni: String,
        dev: String,
        cidr: IpNet,
        primary: IpNet,
    },
    /// An altname the agent wants is already another link's name.
    AltnameTaken {
        name: String,
        dev: String,
        holder: String,
    },
    /// A foreign rule consulted before a managed ENI's table takes its
    /// traffic.
    RuleAhead {
        /// The ENI's id, `?` when metadata has none.
        eni: String,
        dev: String,
        rule: ForeignRule,
        table: u32,
    },
    /// A route of someone else's in the agent's table range, left as it is.
    ForeignRouteInRange {
        route: Route,
        /// The protocol's name (`static`, `dhcp`) or number.
        protocol: String,
        metric: u32,
        /// The managed ENI the table belongs to (`ENI eni-… (eth1)`), if any.
        owner: Option<String>,
        /// The route fills the slot of one of the agent's own, which stays
        /// out while it is there.
        shadows: bool,
        /// The agent's table range, for a table no ENI has.
        range: (u32, u32),
    },
    /// A rule of someone else's that looks up one of the agent's tables.
    ForeignRuleInRange { rule: Rule, protocol: String },
}

impl Warning {
    /// The link and table it is about, where it names them.
    pub fn subject(&self) -> (Option<&str>, Option<u32>) {
        match self {
            Warning::UnconfirmedRemoval { dev, .. }
            | Warning::GatewayOffSubnet { dev, .. }
            | Warning::VpcOverlap { dev, .. }
            | Warning::AltnameTaken { dev, .. } => (Some(dev), None),
            Warning::RuleAhead { dev, table, .. } => (Some(dev), Some(*table)),
            Warning::TableTaken { table, .. } => (None, Some(*table)),
            Warning::ForeignRouteInRange { route, .. } => (None, Some(route.table)),
            Warning::ForeignRuleInRange { rule, .. } => (None, Some(rule.table)),
            Warning::InvalidMetadata(_) => (None, None),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::InvalidMetadata(message) => f.write_str(message),
            Warning::UnconfirmedRemoval { eni, dev, key } => write!(
                f,
                "ENI {eni} ({dev}): key {key}: reads empty while {dev} is up with addresses; not applied until a second read confirms it"
            ),
            Warning::TableTaken {
                eni,
                table,
                holder,
                key,
            } => write!(
                f,
                "ENI {eni}: table {table} is already used by ENI {holder}; metadata gives both {key}"
            ),
            Warning::GatewayOffSubnet {
                eni,
                dev,
                dst,
                gateway,
            } => write!(
                f,
                "ENI {eni} ({dev}): route {dst} via {gateway} ignored: the gateway is not on the \
                 ENI's subnet"
            ),
            Warning::VpcOverlap {
                eni,
                dev,
                cidr,
                primary,
            } => write!(
                f,
                "ENI {eni} ({dev}): VPC CIDR {cidr} overlaps the primary VPC's {primary}; not routed"
            ),
            Warning::AltnameTaken { name, dev, holder } => write!(
                f,
                "altname {name} for {dev} is already the name of link {holder}, which eniroute \
                 does not own; leaving it there"
            ),
            Warning::RuleAhead {
                eni,
                dev,
                rule,
                table,
            } => write!(
                f,
                "ENI {eni} ({dev}): foreign {rule} is consulted before table {table} and takes its \
                 traffic"
            ),
            Warning::ForeignRouteInRange {
                route,
                protocol,
                metric,
                owner,
                shadows,
                range: (first, last),
            } => {
                let table = route.table;
                let what = format!("{route} (protocol {protocol}, metric {metric})");
                match owner {
                    Some(eni) => write!(
                        f,
                        "table {table} of {eni} holds a route eniroute did not create: {what}; \
                         left as it is{}",
                        if *shadows {
                            "; eniroute's own route to that destination stays out while it is there"
                        } else {
                            ""
                        }
                    ),
                    None => write!(
                        f,
                        "table {table} lies in eniroute's range {first}-{last} \
                         (numbering.table_base) and holds a route eniroute did not create: \
                         {what}; left as it is; an ENI that gets this table would share it"
                    ),
                }
            }
            Warning::ForeignRuleInRange { rule, protocol } => write!(
                f,
                "{rule} (protocol {protocol}) points into eniroute's table {}; left as it is",
                rule.table
            ),
        }
    }
}

impl Serialize for Warning {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A rule of someone else's (another protocol) as `status` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRule {
    pub rule: Rule,
    pub protocol: u8,
}

impl fmt::Display for ForeignRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (protocol {})", self.rule, self.protocol)
    }
}

impl Serialize for ForeignRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialised_as_the_line_it_prints() {
        let w = Warning::VpcOverlap {
            eni: "eni-0abc (0a:00:00:00:00:02)".into(),
            dev: "eth1".into(),
            cidr: "10.0.0.0/16".parse().unwrap(),
            primary: "10.0.0.0/8".parse().unwrap(),
        };
        let line = "ENI eni-0abc (0a:00:00:00:00:02) (eth1): VPC CIDR 10.0.0.0/16 overlaps the \
                    primary VPC's 10.0.0.0/8; not routed";
        assert_eq!(w.to_string(), line);
        assert_eq!(serde_json::to_value(&w).unwrap(), line);
    }
}
