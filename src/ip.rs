//! Canonical origin IP addresses: the one place that decides how an IP is spelled.
//!
//! Cloudflare stores IPv4 as a dotted quad and IPv6 in RFC 5952 form (lowercase, the longest
//! run of zero groups compressed, IPv4-mapped addresses as `::ffff:a.b.c.d`). The operator,
//! the client and the simulator all call [`canonicalize`], so two spellings of one address
//! can never become two mappings.

use std::net::IpAddr;

/// Why a string is not an origin IP address; each variant keeps the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    /// The input was empty.
    #[error("origin IP is empty")]
    Empty,
    /// The input contained whitespace (leading, trailing or inside).
    #[error("origin IP {0:?} contains whitespace")]
    Whitespace(String),
    /// The input carried an IPv6 zone suffix such as `%eth0`, which has no meaning off-host.
    #[error("origin IP {0:?} has a zone suffix ('%...'); give the address alone")]
    ZoneSuffix(String),
    /// The input was a CIDR prefix rather than a single address.
    #[error("origin IP {0:?} is a CIDR prefix; give a single address")]
    Cidr(String),
    /// An IPv4 octet had a leading zero, which some parsers read as octal.
    #[error("origin IP {0:?} has an octet with a leading zero, which is ambiguous")]
    LeadingZero(String),
    /// Anything else that does not parse as an IPv4 or IPv6 address.
    #[error("origin IP {0:?} is not a valid IPv4 or IPv6 address")]
    Invalid(String),
}

/// Parses an origin IP, rejecting ambiguous spellings, and returns the address.
pub fn parse(input: &str) -> Result<IpAddr, IpError> {
    if input.is_empty() {
        return Err(IpError::Empty);
    }
    if input.chars().any(char::is_whitespace) {
        return Err(IpError::Whitespace(input.to_string()));
    }
    if input.contains('%') {
        return Err(IpError::ZoneSuffix(input.to_string()));
    }
    if input.contains('/') {
        return Err(IpError::Cidr(input.to_string()));
    }
    match input.parse::<IpAddr>() {
        Ok(ip) => Ok(ip),
        Err(_) if has_leading_zero_octet(input) => Err(IpError::LeadingZero(input.to_string())),
        Err(_) => Err(IpError::Invalid(input.to_string())),
    }
}

/// Returns the canonical spelling of an origin IP (dotted quad, or RFC 5952 IPv6).
pub fn canonicalize(input: &str) -> Result<String, IpError> {
    parse(input).map(|ip| ip.to_string())
}

/// Tells whether a dotted-quad-looking tail has an octet like `01`, so the error can say so.
fn has_leading_zero_octet(input: &str) -> bool {
    // The dotted part is the whole input for IPv4 and the text after the last ':' for IPv6
    // with an embedded IPv4 tail.
    let tail = input.rsplit(':').next().unwrap_or(input);
    let octets: Vec<&str> = tail.split('.').collect();
    octets.len() == 4
        && octets
            .iter()
            .all(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()))
        && octets.iter().any(|o| o.len() > 1 && o.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("192.0.2.1", "192.0.2.1"),
            ("2001:DB8::1", "2001:db8::1"),
            ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("::FFFF:192.0.2.1", "::ffff:192.0.2.1"),
            ("::ffff:c000:0201", "::ffff:192.0.2.1"),
            ("::", "::"),
            ("::1", "::1"),
        ];
        for (input, want) in cases {
            assert_eq!(canonicalize(input).as_deref(), Ok(want), "input {input}");
        }
    }

    #[test]
    fn rejections_name_the_problem() {
        assert_eq!(canonicalize(""), Err(IpError::Empty));
        assert!(matches!(
            canonicalize(" 192.0.2.1"),
            Err(IpError::Whitespace(_))
        ));
        assert!(matches!(
            canonicalize("fe80::1%eth0"),
            Err(IpError::ZoneSuffix(_))
        ));
        assert!(matches!(
            canonicalize("192.0.2.0/24"),
            Err(IpError::Cidr(_))
        ));
        assert!(matches!(
            canonicalize("192.0.02.1"),
            Err(IpError::LeadingZero(_))
        ));
        assert!(matches!(
            canonicalize("::ffff:192.0.02.1"),
            Err(IpError::LeadingZero(_))
        ));
        assert!(matches!(
            canonicalize("1:2:3:4:5:6:7:8:9"),
            Err(IpError::Invalid(_))
        ));
        assert!(matches!(
            canonicalize("256.0.0.1"),
            Err(IpError::Invalid(_))
        ));
        assert!(matches!(
            canonicalize("example.com"),
            Err(IpError::Invalid(_))
        ));
        let msg = canonicalize("192.0.2.0/24").unwrap_err().to_string();
        assert!(msg.contains("192.0.2.0/24"), "{msg}");
    }
}
