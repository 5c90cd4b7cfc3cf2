//! Property tests of `ip::canonicalize` against std's parser and formatter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use origin_region_operator::ip::{canonicalize, IpError};
use proptest::prelude::*;

/// The three properties every accepted spelling must have.
fn check_spelling(input: &str, addr: IpAddr) -> Result<(), TestCaseError> {
    let canonical =
        canonicalize(input).map_err(|e| TestCaseError::fail(format!("{input:?} rejected: {e}")))?;
    // Same address as std reads from the input, and from the canonical text.
    prop_assert_eq!(
        input.parse::<IpAddr>().ok(),
        Some(addr),
        "std on {:?}",
        input
    );
    prop_assert_eq!(
        canonical.parse::<IpAddr>().ok(),
        Some(addr),
        "{:?} -> {:?}",
        input,
        canonical
    );
    // Canonical text is std's (RFC 5952 for IPv6).
    prop_assert_eq!(&canonical, &addr.to_string());
    // Idempotent.
    let again = canonicalize(&canonical);
    prop_assert_eq!(again.as_deref(), Ok(canonical.as_str()));
    Ok(())
}

/// IPv6 addresses rich in zero groups (so `::` runs occur), plus fully random ones.
fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    let group = prop_oneof![3 => Just(0u16), 1 => 0u16..16, 2 => any::<u16>()];
    prop_oneof![
        prop::array::uniform8(group).prop_map(Ipv6Addr::from),
        any::<Ipv6Addr>(),
        // IPv4-mapped, which std and RFC 5952 write with a dotted tail.
        any::<Ipv4Addr>().prop_map(|v4| v4.to_ipv6_mapped()),
    ]
}

/// How to respell one group: zero-padding width and per-digit case.
#[derive(Debug, Clone)]
struct GroupStyle {
    pad: usize,
    upper: [bool; 4],
}

fn group_style() -> impl Strategy<Value = GroupStyle> {
    (0usize..=4, prop::array::uniform4(any::<bool>()))
        .prop_map(|(pad, upper)| GroupStyle { pad, upper })
}

fn spell_group(g: u16, style: &GroupStyle) -> String {
    let hex = format!("{g:0width$x}", width = style.pad.max(1));
    hex.chars()
        .zip(style.upper.iter().cycle())
        .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
        .collect()
}

/// Respells an IPv6 address: each group padded/cased by its style; optionally one run of
/// zero groups (chosen by `run_pick` among all runs, any length ≥ 1) compressed to `::`;
/// optionally the last 32 bits as a dotted quad.
fn respell_v6(
    addr: Ipv6Addr,
    styles: &[GroupStyle],
    run_pick: Option<usize>,
    dotted_tail: bool,
) -> String {
    let segs = addr.segments();
    let n = if dotted_tail { 6 } else { 8 };
    let parts: Vec<String> = segs[..n]
        .iter()
        .zip(styles)
        .map(|(&g, s)| spell_group(g, s))
        .collect();
    // All runs of consecutive zero groups among the first `n`, as (start, len), and every
    // sub-run of them: `::` may stand for any non-empty run.
    let mut runs = Vec::new();
    for start in 0..n {
        for end in start + 1..=n {
            if segs[start..end].iter().all(|&g| g == 0) {
                runs.push((start, end));
            }
        }
    }
    let tail = dotted_tail.then(|| {
        let o = addr.octets();
        format!("{}.{}.{}.{}", o[12], o[13], o[14], o[15])
    });
    let (head, rest): (Vec<String>, Option<Vec<String>>) =
        match run_pick.filter(|_| !runs.is_empty()) {
            Some(pick) => {
                let (s, e) = runs[pick % runs.len()];
                (parts[..s].to_vec(), Some(parts[e..].to_vec()))
            }
            None => (parts.clone(), None),
        };
    let mut out = head.join(":");
    match rest {
        Some(rest) => {
            out.push_str("::");
            let mut tail_parts = rest;
            if let Some(t) = tail {
                tail_parts.push(t);
            }
            out.push_str(&tail_parts.join(":"));
        }
        None => {
            if let Some(t) = tail {
                out.push(':');
                out.push_str(&t);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ipv4_canonical(addr in any::<Ipv4Addr>()) {
        check_spelling(&addr.to_string(), IpAddr::V4(addr))?;
    }

    #[test]
    fn ipv6_std_spelling(addr in ipv6()) {
        check_spelling(&addr.to_string(), IpAddr::V6(addr))?;
    }

    #[test]
    fn ipv6_respellings(
        addr in ipv6(),
        styles in prop::collection::vec(group_style(), 8),
        run_pick in prop::option::of(any::<usize>()),
        dotted_tail in any::<bool>(),
    ) {
        let input = respell_v6(addr, &styles, run_pick, dotted_tail);
        check_spelling(&input, IpAddr::V6(addr))?;
    }

    #[test]
    fn ipv4_leading_zero_octet_is_rejected(
        addr in any::<Ipv4Addr>(),
        which in 0usize..4,
        zeros in 1usize..3,
        as_v6_tail in any::<bool>(),
    ) {
        let octets: Vec<String> = addr
            .octets()
            .iter()
            .enumerate()
            .map(|(i, o)| if i == which { format!("{}{o}", "0".repeat(zeros)) } else { o.to_string() })
            .collect();
        let dotted = octets.join(".");
        let input = if as_v6_tail { format!("::ffff:{dotted}") } else { dotted };
        prop_assert!(input.parse::<IpAddr>().is_err(), "std accepts {:?}", input);
        let result = canonicalize(&input);
        prop_assert!(matches!(result, Err(IpError::LeadingZero(_))), "{:?} -> {:?}", input, result);
    }
}

#[test]
fn respelling_examples() {
    let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let plain = GroupStyle {
        pad: 4,
        upper: [true; 4],
    };
    let styles = vec![plain; 8];
    assert_eq!(
        respell_v6(a, &styles, None, false),
        "2001:0DB8:0000:0000:0000:0000:0000:0001"
    );
    assert_eq!(
        respell_v6(a, &styles, Some(0), false),
        "2001:0DB8::0000:0000:0000:0000:0001"
    );
    assert_eq!(
        respell_v6(a, &styles, Some(0), true),
        "2001:0DB8::0000:0000:0000:0.0.0.1"
    );
}
