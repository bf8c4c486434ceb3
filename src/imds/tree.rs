//! A metadata tree as a JSON value: objects are directories, strings (or
//! arrays of strings, one per line) are values. The simulator serves such a
//! tree, and the plan's golden tests read the same files without HTTP.

use serde_json::Value;

/// Looks up `path` (relative to `latest/meta-data/`) the way IMDS answers a
/// GET: a value's text, a directory's listing (sub-directories end in `/`),
/// or `None` for a missing path (404).
pub fn lookup(tree: &Value, path: &str) -> Option<String> {
    let mut node = tree;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        node = node.as_object()?.get(part)?;
    }
    render(node)
}

fn render(node: &Value) -> Option<String> {
    match node {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(render)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Value::Object(map) => Some(
            map.iter()
                .map(|(k, v)| {
                    if v.is_object() {
                        format!("{k}/")
                    } else {
                        k.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Value::Null => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_listings_and_misses() {
        let t = json!({"mac": "0a:00:00:00:00:01",
            "network": {"interfaces": {"macs": {"0a:00:00:00:00:01": {
                "local-ipv4s": ["10.0.1.10", "10.0.1.11"], "device-number": 0}}}}});
        assert_eq!(lookup(&t, "mac").as_deref(), Some("0a:00:00:00:00:01"));
        assert_eq!(
            lookup(&t, "network/interfaces/macs/").as_deref(),
            Some("0a:00:00:00:00:01/")
        );
        let base = "network/interfaces/macs/0a:00:00:00:00:01/";
        assert_eq!(
            lookup(&t, &format!("{base}local-ipv4s")).as_deref(),
            Some("10.0.1.10\n10.0.1.11")
        );
        assert_eq!(lookup(&t, &format!("{base}device-number")).as_deref(), Some("0"));
        assert_eq!(lookup(&t, &format!("{base}ipv6s")), None);
    }
}
