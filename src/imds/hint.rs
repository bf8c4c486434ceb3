//! The likely cause of a metadata failure and what to check, for the
//! message a user reads. The error itself says what failed; this says why
//! it usually does, for the failures people meet off EC2, in containers and
//! behind proxies.

use super::client::{ErrorKind, ImdsError};

/// The proxy variables set in the environment, as `NAME=value`.
pub fn proxy_env() -> Vec<String> {
    [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ]
    .iter()
    .filter_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| format!("{name}={v}"))
    })
    .collect()
}

const ENABLE: &str =
    "aws ec2 modify-instance-metadata-options --instance-id <id> --http-endpoint enabled";
const HOP_LIMIT: &str =
    "aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2";

/// `e` as the user reads it: the error, then its likely cause and what to
/// check (proxies from this process's environment).
pub fn explain(e: &ImdsError) -> String {
    match hint(e, &proxy_env()) {
        Some(h) => format!("{e}; {h}"),
        None => e.to_string(),
    }
}

/// The likely cause of `e` and what to check, or `None` when there is
/// nothing to add to the error itself. `proxies`: see [`proxy_env`].
pub fn hint(e: &ImdsError, proxies: &[String]) -> Option<String> {
    let nothing_answers = || {
        format!(
            "nothing answers at {}: this is not an EC2 instance, or its metadata endpoint is disabled (check with `aws ec2 describe-instances`, enable with `{ENABLE}`)",
            e.endpoint()
        )
    };
    let mut hints = Vec::new();
    // The token request failing by itself (the daemon's reads report it
    // so) or inside a GET that could not get a token: the same cause.
    let token_failure = match e.kind() {
        ErrorKind::Token { cause, .. } => Some(cause.as_ref()),
        kind if e.method() == "PUT" => Some(kind),
        _ => None,
    };
    match e.kind() {
        ErrorKind::Config(_) | ErrorKind::Endpoint(_) => return None,
        ErrorKind::Connect(_) => hints.push(nothing_answers()),
        _ if token_failure.is_some() => match token_failure.unwrap_or(e.kind()) {
            ErrorKind::Connect(_) => hints.push(nothing_answers()),
            ErrorKind::Timeout => hints.push(format!(
                "the token PUT got no answer in time: inside a container the instance's default hop limit of 1 lets the reply die one hop short (raise it: `{HOP_LIMIT}`); outside one, {}",
                nothing_answers()
            )),
            ErrorKind::Status(code @ (403 | 405)) => hints.push(format!(
                "the endpoint refuses the IMDSv2 token request (HTTP {code}): it answers IMDSv1 only (an old metadata emulator or mock), or the request was forwarded, which IMDS refuses for tokens; eniroute speaks IMDSv2 only"
            )),
            _ => {}
        },
        ErrorKind::Timeout => hints.push(format!(
            "{} took the token but stopped answering: check the instance's metadata options (`aws ec2 describe-instances`) and any firewall rule for 169.254.169.254",
            e.endpoint()
        )),
        _ => {}
    }
    if !proxies.is_empty() {
        hints.push(format!(
            "{} is set, but eniroute never sends metadata requests through a proxy (the endpoint is link-local); a proxy is only to blame if it intercepts traffic transparently",
            proxies.join(" ")
        ));
    }
    (!hints.is_empty()).then(|| hints.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(cause: ErrorKind) -> ImdsError {
        ImdsError::new(
            "http://169.254.169.254",
            "GET",
            "latest/meta-data/mac",
            ErrorKind::Token {
                cause: Box::new(cause),
                attempts: 3,
            },
        )
    }

    #[test]
    fn each_failure_names_its_likely_cause() {
        let refused = token(ErrorKind::Connect("Connection refused".into()));
        let h = hint(&refused, &[]).unwrap();
        assert!(
            h.contains("nothing answers at http://169.254.169.254"),
            "{h}"
        );
        assert!(h.contains("not an EC2 instance"), "{h}");
        assert!(h.contains("--http-endpoint enabled"), "{h}");

        let h = hint(&token(ErrorKind::Timeout), &[]).unwrap();
        assert!(h.contains("hop limit of 1"), "{h}");
        assert!(h.contains("--http-put-response-hop-limit 2"), "{h}");

        for code in [403, 405] {
            let h = hint(&token(ErrorKind::Status(code)), &[]).unwrap();
            assert!(h.contains("IMDSv1 only"), "{h}");
            assert!(h.contains(&format!("HTTP {code}")), "{h}");
        }
        assert_eq!(hint(&token(ErrorKind::Status(500)), &[]), None);

        let h = hint(
            &token(ErrorKind::Status(500)),
            &["HTTPS_PROXY=http://proxy:3128".into()],
        )
        .unwrap();
        assert!(h.contains("HTTPS_PROXY=http://proxy:3128 is set"), "{h}");
        assert!(
            h.contains("never sends metadata requests through a proxy"),
            "{h}"
        );

        let put = ImdsError::new(
            "http://169.254.169.254",
            "PUT",
            "latest/api/token",
            ErrorKind::Timeout,
        );
        assert!(hint(&put, &[]).unwrap().contains("hop limit of 1"));

        let bad = ImdsError::new("ftp://x", "GET", "", ErrorKind::Config("bad".into()));
        assert_eq!(hint(&bad, &["HTTP_PROXY=x".into()]), None);
    }
}
