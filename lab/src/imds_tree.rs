//! Metadata trees for simulated instances: what IMDS would serve for the
//! ENIs a scenario attached.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Map, Value};

use eniroute::values::Mac;

/// One ENI as metadata describes it.
#[derive(Debug, Clone)]
pub struct EniMeta {
    pub mac: Mac,
    pub eni_id: String,
    pub card: u32,
    pub device: u32,
    pub subnet: Ipv4Net,
    pub subnet_id: String,
    pub vpc_id: String,
    pub vpc_cidrs: Vec<Ipv4Net>,
    /// Private IPv4s, primary first.
    pub ipv4s: Vec<Ipv4Addr>,
}

impl EniMeta {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        let s = |v: &str| Value::String(v.to_string());
        m.insert("device-number".into(), s(&self.device.to_string()));
        m.insert("network-card".into(), s(&self.card.to_string()));
        m.insert("interface-id".into(), s(&self.eni_id));
        m.insert("mac".into(), s(&self.mac.to_string()));
        m.insert("subnet-id".into(), s(&self.subnet_id));
        m.insert("vpc-id".into(), s(&self.vpc_id));
        m.insert("subnet-ipv4-cidr-block".into(), s(&self.subnet.to_string()));
        m.insert(
            "vpc-ipv4-cidr-blocks".into(),
            json!(self
                .vpc_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()),
        );
        if !self.ipv4s.is_empty() {
            m.insert(
                "local-ipv4s".into(),
                json!(self.ipv4s.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            );
        }
        Value::Object(m)
    }
}

/// The tree (rooted at `latest/meta-data/`) for an instance whose primary
/// ENI is `primary`.
pub fn instance_tree(instance_id: &str, primary: Mac, enis: &[EniMeta]) -> Value {
    let macs: Map<String, Value> = enis
        .iter()
        .map(|e| (e.mac.to_string(), e.to_json()))
        .collect();
    json!({
        "instance-id": instance_id,
        "mac": primary.to_string(),
        "network": {"interfaces": {"macs": macs}},
    })
}

/// Removes a MAC from a tree (the ENI was detached).
pub fn remove_eni(tree: &mut Value, mac: Mac) {
    if let Some(macs) = tree
        .pointer_mut("/network/interfaces/macs")
        .and_then(Value::as_object_mut)
    {
        macs.remove(&mac.to_string());
    }
}

/// Adds or replaces one ENI in a tree.
pub fn put_eni(tree: &mut Value, eni: &EniMeta) {
    if let Some(macs) = tree
        .pointer_mut("/network/interfaces/macs")
        .and_then(Value::as_object_mut)
    {
        macs.insert(eni.mac.to_string(), eni.to_json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eniroute::imds::{parse, tree};

    #[test]
    fn tree_parses_back_to_the_same_enis() {
        let eni = EniMeta {
            mac: "0a:00:00:00:00:02".parse().unwrap(),
            eni_id: "eni-02".into(),
            card: 0,
            device: 1,
            subnet: "10.0.2.0/24".parse().unwrap(),
            subnet_id: "subnet-02".into(),
            vpc_id: "vpc-1".into(),
            vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap()],
            ipv4s: vec!["10.0.2.20".parse().unwrap(), "10.0.2.21".parse().unwrap()],
        };
        let t = instance_tree(
            "i-1",
            "0a:00:00:00:00:01".parse().unwrap(),
            std::slice::from_ref(&eni),
        );
        let inst = parse::instance_from(|p| tree::lookup(&t, p)).unwrap();
        let got = inst.ready().next().unwrap();
        assert_eq!(got.ipv4s, eni.ipv4s);
        assert_eq!(got.key.device, 1);
    }
}
