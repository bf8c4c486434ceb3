//! The EC2 actions a takeover uses, with typed answers parsed from the
//! Query API's XML (roxmltree; elements matched by local name, so the
//! namespace of the API version does not matter).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use roxmltree::{Document, Node};

use super::client::{Ec2Client, Ec2Error, ErrorKind};
use crate::values::Mac;

/// One ENI as DescribeNetworkInterfaces shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInterface {
    pub id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub mac: Mac,
    /// `available`, `in-use`, `attaching`, `detaching`.
    pub status: String,
    /// Private IPv4s, primary first.
    pub ipv4s: Vec<Ipv4Addr>,
    pub ipv6s: Vec<Ipv6Addr>,
    pub ipv4_prefixes: Vec<Ipv4Net>,
    pub ipv6_prefixes: Vec<Ipv6Net>,
    pub attachment: Option<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub id: String,
    pub instance_id: Option<String>,
    pub device_index: u32,
    pub network_card: u32,
    /// `attaching`, `attached`, `detaching`, `detached`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub cidr: Ipv4Net,
    pub ipv6_cidrs: Vec<Ipv6Net>,
    pub availability_zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vpc {
    pub id: String,
    pub cidrs: Vec<Ipv4Net>,
    pub ipv6_cidrs: Vec<Ipv6Net>,
}

/// `Code` and `Message` of an error document, whichever of EC2's shapes
/// it has (`Response/Errors/Error` or `ErrorResponse/Error`).
pub fn error_document(text: &str) -> Option<(String, String)> {
    let doc = Document::parse(text).ok()?;
    let error = doc
        .descendants()
        .find(|n| n.has_tag_name("Error"))
        .or_else(|| {
            doc.descendants()
                .find(|n| local(n) == "Error" || local(n) == "Errors")
        })?;
    let code = text_of(error, "Code")?;
    let message = text_of(error, "Message").unwrap_or_default();
    Some((code, message))
}

fn local<'a>(n: &Node<'a, '_>) -> &'a str {
    n.tag_name().name()
}

/// The text of the first descendant element named `name`.
fn text_of(node: Node, name: &str) -> Option<String> {
    node.descendants()
        .find(|n| n.is_element() && local(n) == name)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
}

/// The direct child element named `name`.
fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|n| n.is_element() && local(n) == name)
}

fn child_text(node: Node, name: &str) -> Option<String> {
    child(node, name)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
}

/// The `item`s of the child set `name`.
fn items<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Vec<Node<'a, 'i>> {
    child(node, name)
        .map(|set| {
            set.children()
                .filter(|n| n.is_element() && local(n) == "item")
                .collect()
        })
        .unwrap_or_default()
}

fn parse<T: std::str::FromStr>(action: &'static str, what: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{action}: {what} {text:?} does not parse"))
}

fn malformed(client: &Ec2Client, action: &'static str, m: String) -> Ec2Error {
    Ec2Error {
        action,
        endpoint: client.endpoint().to_string(),
        kind: ErrorKind::Malformed(m),
        attempts: 1,
    }
}

fn document<'i>(
    client: &Ec2Client,
    action: &'static str,
    text: &'i str,
) -> Result<Document<'i>, Ec2Error> {
    Document::parse(text).map_err(|e| malformed(client, action, format!("not XML: {e}")))
}

/// Parses one `networkInterfaceSet/item`.
fn network_interface(item: Node) -> Result<NetworkInterface, String> {
    const A: &str = "DescribeNetworkInterfaces";
    let need =
        |name: &str| child_text(item, name).ok_or_else(|| format!("{A}: an ENI without {name}"));
    let id = need("networkInterfaceId")?;
    let mac = parse(A, "macAddress", &need("macAddress")?)?;
    let mut ipv4s: Vec<(bool, Ipv4Addr)> = Vec::new();
    for ip in items(item, "privateIpAddressesSet") {
        let Some(addr) = child_text(ip, "privateIpAddress") else {
            continue;
        };
        let primary = child_text(ip, "primary").as_deref() == Some("true");
        ipv4s.push((primary, parse(A, "privateIpAddress", &addr)?));
    }
    // Primary first, the others in EC2's order.
    ipv4s.sort_by_key(|(primary, _)| !primary);
    let ipv6s = items(item, "ipv6AddressesSet")
        .into_iter()
        .filter_map(|n| child_text(n, "ipv6Address"))
        .map(|t| parse(A, "ipv6Address", &t))
        .collect::<Result<_, _>>()?;
    let ipv4_prefixes = items(item, "ipv4PrefixSet")
        .into_iter()
        .filter_map(|n| child_text(n, "ipv4Prefix"))
        .map(|t| parse(A, "ipv4Prefix", &t))
        .collect::<Result<_, _>>()?;
    let ipv6_prefixes = items(item, "ipv6PrefixSet")
        .into_iter()
        .filter_map(|n| child_text(n, "ipv6Prefix"))
        .map(|t| parse(A, "ipv6Prefix", &t))
        .collect::<Result<_, _>>()?;
    let attachment = match child(item, "attachment") {
        Some(a) => match child_text(a, "attachmentId") {
            Some(att_id) => Some(Attachment {
                id: att_id,
                instance_id: child_text(a, "instanceId"),
                device_index: parse(
                    A,
                    "deviceIndex",
                    &child_text(a, "deviceIndex").unwrap_or_else(|| "0".into()),
                )?,
                network_card: parse(
                    A,
                    "networkCardIndex",
                    &child_text(a, "networkCardIndex").unwrap_or_else(|| "0".into()),
                )?,
                status: child_text(a, "status").unwrap_or_default(),
            }),
            None => None,
        },
        None => None,
    };
    Ok(NetworkInterface {
        mac,
        subnet_id: need("subnetId")?,
        vpc_id: need("vpcId")?,
        availability_zone: child_text(item, "availabilityZone").unwrap_or_default(),
        status: child_text(item, "status").unwrap_or_default(),
        ipv4s: ipv4s.into_iter().map(|(_, a)| a).collect(),
        ipv6s,
        ipv4_prefixes,
        ipv6_prefixes,
        attachment,
        id,
    })
}

/// `Name.1=v1`, `Name.2=v2`, …
fn numbered(name: &str, values: &[String]) -> Vec<(String, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{name}.{}", i + 1), v.clone()))
        .collect()
}

impl Ec2Client {
    /// The ENIs with these ids (DescribeNetworkInterfaces).
    pub async fn describe_network_interfaces(
        &self,
        ids: &[String],
    ) -> Result<Vec<NetworkInterface>, Ec2Error> {
        self.describe_enis(numbered("NetworkInterfaceId", ids))
            .await
    }

    /// The ENIs that hold `addr` (filter `private-ip-address` or
    /// `ipv6-addresses.ipv6-address`).
    pub async fn enis_holding(&self, addr: IpAddr) -> Result<Vec<NetworkInterface>, Ec2Error> {
        let name = match addr {
            IpAddr::V4(_) => "private-ip-address",
            IpAddr::V6(_) => "ipv6-addresses.ipv6-address",
        };
        let enis = self
            .describe_enis(vec![
                ("Filter.1.Name".into(), name.into()),
                ("Filter.1.Value.1".into(), addr.to_string()),
            ])
            .await?;
        // An emulator may ignore the filter; the answer is checked here.
        Ok(enis
            .into_iter()
            .filter(|e| match addr {
                IpAddr::V4(a) => e.ipv4s.contains(&a),
                IpAddr::V6(a) => e.ipv6s.contains(&a),
            })
            .collect())
    }

    async fn describe_enis(
        &self,
        params: Vec<(String, String)>,
    ) -> Result<Vec<NetworkInterface>, Ec2Error> {
        const A: &str = "DescribeNetworkInterfaces";
        let text = self.call(A, &params).await?;
        let doc = document(self, A, &text)?;
        let root = doc.root_element();
        items(root, "networkInterfaceSet")
            .into_iter()
            .map(network_interface)
            .collect::<Result<_, _>>()
            .map_err(|m| malformed(self, A, m))
    }

    /// One subnet (DescribeSubnets).
    pub async fn describe_subnet(&self, id: &str) -> Result<Subnet, Ec2Error> {
        const A: &str = "DescribeSubnets";
        let text = self
            .call(A, &[("SubnetId.1".into(), id.to_string())])
            .await?;
        let doc = document(self, A, &text)?;
        let item = items(doc.root_element(), "subnetSet")
            .into_iter()
            .next()
            .ok_or_else(|| malformed(self, A, format!("no subnet {id} in the answer")))?;
        let get = |name: &str| {
            child_text(item, name)
                .ok_or_else(|| malformed(self, A, format!("subnet {id} without {name}")))
        };
        let cidr = get("cidrBlock")?;
        let ipv6_cidrs = items(item, "ipv6CidrBlockAssociationSet")
            .into_iter()
            .filter_map(|n| child_text(n, "ipv6CidrBlock"))
            .filter_map(|t| t.parse().ok())
            .collect();
        Ok(Subnet {
            id: id.to_string(),
            cidr: parse(A, "cidrBlock", &cidr).map_err(|m| malformed(self, A, m))?,
            ipv6_cidrs,
            availability_zone: get("availabilityZone")?,
        })
    }

    /// One VPC's CIDR blocks (DescribeVpcs).
    pub async fn describe_vpc(&self, id: &str) -> Result<Vpc, Ec2Error> {
        const A: &str = "DescribeVpcs";
        let text = self.call(A, &[("VpcId.1".into(), id.to_string())]).await?;
        let doc = document(self, A, &text)?;
        let item = items(doc.root_element(), "vpcSet")
            .into_iter()
            .next()
            .ok_or_else(|| malformed(self, A, format!("no VPC {id} in the answer")))?;
        let mut cidrs: Vec<Ipv4Net> = items(item, "cidrBlockAssociationSet")
            .into_iter()
            .filter(|n| {
                child(*n, "cidrBlockState")
                    .and_then(|s| child_text(s, "state"))
                    .is_none_or(|s| s == "associated")
            })
            .filter_map(|n| child_text(n, "cidrBlock"))
            .filter_map(|t| t.parse().ok())
            .collect();
        if cidrs.is_empty() {
            cidrs.extend(child_text(item, "cidrBlock").and_then(|t| t.parse::<Ipv4Net>().ok()));
        }
        let ipv6_cidrs = items(item, "ipv6CidrBlockAssociationSet")
            .into_iter()
            .filter_map(|n| child_text(n, "ipv6CidrBlock"))
            .filter_map(|t| t.parse().ok())
            .collect();
        Ok(Vpc {
            id: id.to_string(),
            cidrs,
            ipv6_cidrs,
        })
    }

    /// AssignPrivateIpAddresses of one address; returns the addresses EC2
    /// says the ENI was given.
    pub async fn assign_private_ip(
        &self,
        eni: &str,
        addr: Ipv4Addr,
        allow_reassignment: bool,
    ) -> Result<Vec<Ipv4Addr>, Ec2Error> {
        const A: &str = "AssignPrivateIpAddresses";
        let mut params = vec![
            ("NetworkInterfaceId".to_string(), eni.to_string()),
            ("PrivateIpAddress.1".to_string(), addr.to_string()),
        ];
        if allow_reassignment {
            params.push(("AllowReassignment".into(), "true".into()));
        }
        let text = self.call(A, &params).await?;
        let doc = document(self, A, &text)?;
        let assigned = items(doc.root_element(), "assignedPrivateIpAddressesSet")
            .into_iter()
            .filter_map(|n| child_text(n, "privateIpAddress"))
            .filter_map(|t| t.parse().ok())
            .collect();
        Ok(assigned)
    }

    /// AssignIpv6Addresses of one address.
    pub async fn assign_ipv6(&self, eni: &str, addr: Ipv6Addr) -> Result<Vec<Ipv6Addr>, Ec2Error> {
        const A: &str = "AssignIpv6Addresses";
        let params = [
            ("NetworkInterfaceId".to_string(), eni.to_string()),
            ("Ipv6Addresses.1".to_string(), addr.to_string()),
        ];
        let text = self.call(A, &params).await?;
        let doc = document(self, A, &text)?;
        let root = doc.root_element();
        let set = child(root, "assignedIpv6Addresses")
            .or_else(|| child(root, "assignedIpv6AddressesSet"));
        Ok(set
            .map(|s| {
                s.children()
                    .filter(|n| n.is_element())
                    .filter_map(|n| n.text())
                    .filter_map(|t| t.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// UnassignIpv6Addresses of one address.
    pub async fn unassign_ipv6(&self, eni: &str, addr: Ipv6Addr) -> Result<(), Ec2Error> {
        let params = [
            ("NetworkInterfaceId".to_string(), eni.to_string()),
            ("Ipv6Addresses.1".to_string(), addr.to_string()),
        ];
        self.call("UnassignIpv6Addresses", &params).await?;
        Ok(())
    }

    /// DetachNetworkInterface.
    pub async fn detach(&self, attachment: &str, force: bool) -> Result<(), Ec2Error> {
        let mut params = vec![("AttachmentId".to_string(), attachment.to_string())];
        if force {
            params.push(("Force".into(), "true".into()));
        }
        self.call("DetachNetworkInterface", &params).await?;
        Ok(())
    }

    /// AttachNetworkInterface; returns the attachment id.
    pub async fn attach(
        &self,
        eni: &str,
        instance: &str,
        device_index: u32,
    ) -> Result<String, Ec2Error> {
        const A: &str = "AttachNetworkInterface";
        let params = [
            ("NetworkInterfaceId".to_string(), eni.to_string()),
            ("InstanceId".to_string(), instance.to_string()),
            ("DeviceIndex".to_string(), device_index.to_string()),
        ];
        let text = self.call(A, &params).await?;
        let doc = document(self, A, &text)?;
        text_of(doc.root_element(), "attachmentId")
            .ok_or_else(|| malformed(self, A, "no attachmentId in the answer".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENI: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<DescribeNetworkInterfacesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><networkInterfaceSet><item><attachment><attachmentId>eni-attach-beb1</attachmentId><deviceIndex>2</deviceIndex><networkCardIndex>0</networkCardIndex><instanceId>i-e04e</instanceId><status>attached</status></attachment><availabilityZone>us-east-1a</availabilityZone><groupSet><item><groupId>sg-1</groupId></item></groupSet><ipv6AddressesSet/><macAddress>02:00:00:55:0c:6a</macAddress><networkInterfaceId>eni-6258</networkInterfaceId><privateIpAddress>10.0.3.10</privateIpAddress><privateIpAddressesSet><item><primary>false</primary><privateIpAddress>10.0.3.100</privateIpAddress></item><item><primary>true</primary><privateIpAddress>10.0.3.10</privateIpAddress></item></privateIpAddressesSet><status>in-use</status><subnetId>subnet-645e</subnetId><vpcId>vpc-546e</vpcId></item></networkInterfaceSet><requestId>r</requestId></DescribeNetworkInterfacesResponse>"#;

    #[test]
    fn network_interface_parses_primary_first() {
        let doc = Document::parse(ENI).unwrap();
        let item = items(doc.root_element(), "networkInterfaceSet")[0];
        let eni = network_interface(item).unwrap();
        assert_eq!(eni.id, "eni-6258");
        assert_eq!(eni.mac.to_string(), "02:00:00:55:0c:6a");
        assert_eq!(
            eni.ipv4s,
            vec![
                "10.0.3.10".parse::<Ipv4Addr>().unwrap(),
                "10.0.3.100".parse().unwrap()
            ]
        );
        let att = eni.attachment.unwrap();
        assert_eq!(
            (
                att.id.as_str(),
                att.instance_id.as_deref(),
                att.device_index
            ),
            ("eni-attach-beb1", Some("i-e04e"), 2)
        );
        assert_eq!(eni.availability_zone, "us-east-1a");
        // The security group's item is not mistaken for an address.
        assert!(eni.ipv6s.is_empty());
    }

    #[test]
    fn error_documents_in_both_shapes() {
        let ec2 = r#"<?xml version="1.0"?><Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>x</RequestID></Response>"#;
        assert_eq!(
            error_document(ec2),
            Some((
                "UnauthorizedOperation".into(),
                "You are not authorized to perform this operation.".into()
            ))
        );
        let other = r#"<ErrorResponse><Error><Code>Throttling</Code></Error></ErrorResponse>"#;
        assert_eq!(
            error_document(other),
            Some(("Throttling".into(), String::new()))
        );
        assert_eq!(error_document("<html>busy</html>"), None);
        assert_eq!(error_document("not xml"), None);
    }
}
