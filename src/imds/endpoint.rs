//! The metadata endpoint's URL, checked by one set of rules for the
//! configuration file, `--imds-endpoint` and the client alike.
//!
//! IMDS is plain HTTP on a link-local address; the client needs a scheme, a
//! host and at most a port, and appends the paths itself. The `url` crate
//! (which reqwest uses) does the parsing; the checks here only turn its
//! verdict into advice an operator can act on.

use reqwest::Url;

/// Why a text is not a usable metadata endpoint. Each message completes a
/// sentence that starts with the URL: `"https://…" uses https, but …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "uses https, but the instance metadata service speaks only plain HTTP (its link-local \
         address never leaves the instance); write http://"
    )]
    Https,
    #[error("is not an http:// URL; write it as http://HOST[:PORT], e.g. http://169.254.169.254")]
    NotHttp,
    #[error("has a path; give only http://HOST[:PORT], the agent adds /latest/… itself")]
    Path,
    #[error("has an unclosed [ in its IPv6 address; write e.g. http://[fd00:ec2::254]")]
    UnclosedBracket,
    #[error("has {0:?} between [ ], which is not an IPv6 address")]
    NotIpv6(String),
    #[error("has no host; write e.g. http://169.254.169.254")]
    NoHost,
    #[error(
        "has {0:?} as host, which is neither an address nor a host name (put an IPv6 address in \
         [ ])"
    )]
    Host(String),
    #[error("has text after the ] that is not :PORT")]
    AfterBracket,
    #[error("has port {0:?}; a port is a number from 1 to 65535")]
    Port(String),
}

/// Checks `text` and returns it parsed.
pub fn parse(text: &str) -> Result<Url, EndpointError> {
    let authority = match text.strip_prefix("http://") {
        Some(rest) => rest,
        None if text.starts_with("https://") => return Err(EndpointError::Https),
        None => return Err(EndpointError::NotHttp),
    };
    // The parsed URL cannot tell `http://host/` from `http://host`; the
    // text can, and any path is a mistake here.
    if authority.contains(['/', '?', '#']) {
        return Err(EndpointError::Path);
    }
    let (host, port) = split_authority(authority)?;
    let url = Url::parse(text).map_err(|e| match e {
        url::ParseError::EmptyHost => EndpointError::NoHost,
        url::ParseError::InvalidPort => port_or_host(host, port),
        url::ParseError::InvalidIpv6Address => EndpointError::NotIpv6(host.to_string()),
        _ => EndpointError::Host(host.to_string()),
    })?;
    // Credentials or characters a host name cannot have (`_`) are accepted
    // by URL syntax but name no metadata service.
    let plain_host = |h: &str| {
        h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    };
    if host.is_empty() || url.host().is_none() {
        return Err(EndpointError::NoHost);
    }
    if !authority.starts_with('[') && !plain_host(host) {
        return Err(EndpointError::Host(host.to_string()));
    }
    match port {
        Some(p) if !matches!(p.parse::<u16>(), Ok(n) if n > 0) => {
            Err(EndpointError::Port(p.to_string()))
        }
        _ => Ok(url),
    }
}

/// The host and port as written, for messages that quote them.
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), EndpointError> {
    if let Some(after) = authority.strip_prefix('[') {
        let (v6, tail) = after
            .split_once(']')
            .ok_or(EndpointError::UnclosedBracket)?;
        return match tail {
            "" => Ok((v6, None)),
            t => match t.strip_prefix(':') {
                Some(p) => Ok((v6, Some(p))),
                None => Err(EndpointError::AfterBracket),
            },
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    })
}

/// A second colon outside brackets reads as a port to URL syntax; it is
/// far more often an IPv6 address written without its brackets.
fn port_or_host(host: &str, port: Option<&str>) -> EndpointError {
    if host.contains(':') {
        EndpointError::Host(host.to_string())
    } else {
        EndpointError::Port(port.unwrap_or_default().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in [
            "http://169.254.169.254",
            "http://[fd00:ec2::254]",
            "http://127.0.0.1:8080",
            "http://[::1]:1338",
            "http://imds.local",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://169.254.169.254",
            "169.254.169.254",
            "http://",
            "http://169.254.169.254/",
            "http://169.254.169.254/latest",
            "http://[fd00:ec2::254",
            "http://[nothex]",
            "http://host:0",
            "http://host:99999",
            "http://ho st",
            "http://fd00::1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn says_what_is_wrong() {
        for (bad, want) in [
            ("https://169.254.169.254", EndpointError::Https),
            ("169.254.169.254", EndpointError::NotHttp),
            ("http://169.254.169.254/latest", EndpointError::Path),
            ("http://169.254.169.254/", EndpointError::Path),
            ("http://", EndpointError::NoHost),
            ("http://[fd00:ec2::254", EndpointError::UnclosedBracket),
            ("http://[zz]", EndpointError::NotIpv6("zz".into())),
            ("http://[::1]x", EndpointError::AfterBracket),
            ("http://host:99999", EndpointError::Port("99999".into())),
            ("http://host:0", EndpointError::Port("0".into())),
            ("http://host:", EndpointError::Port("".into())),
            (
                "http://fd00:ec2::254",
                EndpointError::Host("fd00:ec2:".into()),
            ),
            ("http://user@host", EndpointError::Host("user@host".into())),
            ("http://ho_st", EndpointError::Host("ho_st".into())),
        ] {
            assert_eq!(parse(bad), Err(want), "{bad}");
        }
    }
}
