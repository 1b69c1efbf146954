//! Egress rules (a Task's or LRP's `egress_rules`, Diego's security group rules) read
//! as what they allow: destinations as inclusive IPv4 address intervals, ports as
//! inclusive port intervals. Pure: the BBS validates with it, the cell turns the
//! intervals into firewall rules.
//!
//! A destination is an address (`10.0.0.1`), a CIDR (`10.0.0.0/8`; host bits are
//! ignored, as Diego's Go parser does) or a range (`10.0.0.1-10.0.0.9`, first ≤ last).

use std::net::Ipv4Addr;

use crate::models::SecurityGroupRule;

/// ICMP type or code `-1`: any.
pub const ICMP_ANY: i32 = -1;

/// The addresses a destination names: the inclusive interval `(first, last)`.
pub fn parse_destination(d: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let d = d.trim();
    let bad =
        || format!("{d:?} is not an IPv4 address, CIDR (10.0.0.0/8) or range (10.0.0.1-10.0.0.9)");
    if let Some((a, b)) = d.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
        if a > b {
            return Err(format!(
                "{d:?}: the range's first address is after its last"
            ));
        }
        return Ok((a, b));
    }
    if let Some((a, p)) = d.split_once('/') {
        let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let p: u8 = p.parse().map_err(|_| bad())?;
        if p > 32 {
            return Err(format!("{d:?}: a prefix length is at most 32"));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
        let first = u32::from(a) & mask;
        return Ok((first.into(), (first | !mask).into()));
    }
    let a: Ipv4Addr = d.parse().map_err(|_| bad())?;
    Ok((a, a))
}

/// Inclusive intervals sorted, overlapping and adjacent ones merged.
pub fn merge<T: Copy + Ord + Into<u64>>(mut v: Vec<(T, T)>) -> Vec<(T, T)> {
    v.sort();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a.into() <= last.1.into() + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// A rule's destinations as merged address intervals (u32 host order).
pub fn destinations(rule: &SecurityGroupRule) -> Result<Vec<(u32, u32)>, (usize, String)> {
    let mut v = Vec::with_capacity(rule.destinations.len());
    for (j, d) in rule.destinations.iter().enumerate() {
        let (a, b) = parse_destination(d).map_err(|e| (j, e))?;
        v.push((u32::from(a), u32::from(b)));
    }
    Ok(merge(v))
}

/// A rule's ports (`ports` or `port_range`) as merged intervals; empty: every port.
/// A port outside 1-65535 or a backwards range is an error naming the field
/// (`ports[j]`, `port_range`).
pub fn ports(rule: &SecurityGroupRule) -> Result<Vec<(u16, u16)>, (String, String)> {
    let port = |p: u32| u16::try_from(p).ok().filter(|&p| p > 0);
    let mut v = Vec::with_capacity(rule.ports.len() + 1);
    for (j, &p) in rule.ports.iter().enumerate() {
        let p = port(p).ok_or_else(|| {
            (
                format!("ports[{j}]"),
                "must be a port between 1 and 65535".to_string(),
            )
        })?;
        v.push((p, p));
    }
    if let Some(r) = &rule.port_range {
        match (port(r.start), port(r.end)) {
            (Some(a), Some(b)) if a <= b => v.push((a, b)),
            _ => {
                return Err((
                    "port_range".into(),
                    "must satisfy 1 <= start <= end <= 65535".into(),
                ))
            }
        }
    }
    Ok(merge(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn destinations_are_addresses_cidrs_or_ranges() {
        assert_eq!(
            parse_destination("1.2.3.4"),
            Ok((ip("1.2.3.4"), ip("1.2.3.4")))
        );
        assert_eq!(
            parse_destination("10.1.2.3/8"),
            Ok((ip("10.0.0.0"), ip("10.255.255.255")))
        );
        assert_eq!(
            parse_destination("0.0.0.0/0"),
            Ok((ip("0.0.0.0"), ip("255.255.255.255")))
        );
        assert_eq!(
            parse_destination("10.0.0.1 - 10.0.0.9"),
            Ok((ip("10.0.0.1"), ip("10.0.0.9")))
        );
        for bad in [
            "",
            "host",
            "10.0.0.0/33",
            "10.0.0.9-10.0.0.1",
            "1.2.3.4/x",
            "::1",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn intervals_merge_when_they_touch_or_overlap() {
        assert_eq!(
            merge(vec![(5u16, 9u16), (1, 2), (3, 4), (20, 30), (25, 26)]),
            vec![(1, 9), (20, 30)]
        );
        let rule = SecurityGroupRule {
            ports: vec![443, 80, 81],
            port_range: Some(crate::models::PortRange {
                start: 8000,
                end: 8080,
            }),
            ..Default::default()
        };
        assert_eq!(ports(&rule), Ok(vec![(80, 81), (443, 443), (8000, 8080)]));
        assert_eq!(ports(&SecurityGroupRule::default()), Ok(vec![]));
        let backwards = SecurityGroupRule {
            port_range: Some(crate::models::PortRange { start: 9, end: 1 }),
            ..Default::default()
        };
        assert_eq!(ports(&backwards).unwrap_err().0, "port_range");
        let zero = SecurityGroupRule {
            ports: vec![1, 0],
            ..Default::default()
        };
        assert_eq!(ports(&zero).unwrap_err().0, "ports[1]");
        let rule = SecurityGroupRule {
            destinations: vec!["10.0.0.0/24".into(), "10.0.1.0-10.0.1.255".into()],
            ..Default::default()
        };
        assert_eq!(
            destinations(&rule),
            Ok(vec![(
                u32::from(ip("10.0.0.0")),
                u32::from(ip("10.0.1.255"))
            )])
        );
    }
}
