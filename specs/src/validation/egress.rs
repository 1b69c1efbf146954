//! Egress rules (Diego's security group rules): what each protocol takes, and
//! destinations and ports the cell's firewall can enforce (see [`crate::egress`]).

use super::{check_len, check_port, ValidationErrors, MAX_EGRESS_RULES, MAX_RULE_ENTRIES};
use crate::egress::{parse_destination, ICMP_ANY};
use crate::models::SecurityGroupRule;

/// Egress rules alone (the cluster's default rules, say); fields are named
/// `egress_rules[i]…`.
pub fn validate_egress_rules(rules: &[SecurityGroupRule]) -> Result<(), ValidationErrors> {
    let mut e = ValidationErrors::default();
    check_egress(&mut e, rules);
    e.into_result()
}

pub(super) fn check_egress(errs: &mut ValidationErrors, rules: &[SecurityGroupRule]) {
    check_len(errs, "egress_rules", rules.len(), MAX_EGRESS_RULES, "rules");
    for (i, r) in rules.iter().enumerate() {
        let f = format!("egress_rules[{i}]");
        check_len(
            errs,
            &format!("{f}.destinations"),
            r.destinations.len(),
            MAX_RULE_ENTRIES,
            "entries",
        );
        check_len(
            errs,
            &format!("{f}.ports"),
            r.ports.len(),
            MAX_RULE_ENTRIES,
            "entries",
        );
        if r.destinations.is_empty() {
            errs.add(format!("{f}.destinations"), "is required");
        }
        for (j, d) in r.destinations.iter().enumerate() {
            if let Err(e) = parse_destination(d) {
                errs.add(format!("{f}.destinations[{j}]"), e);
            }
        }
        for (j, p) in r.ports.iter().enumerate() {
            check_port(errs, &format!("{f}.ports[{j}]"), *p);
        }
        check_protocol(errs, &f, r);
    }
}

/// What goes with the protocol: ports with tcp and udp, an ICMP type with icmp.
fn check_protocol(errs: &mut ValidationErrors, f: &str, r: &SecurityGroupRule) {
    let has_ports = !r.ports.is_empty() || r.port_range.is_some();
    match r.protocol.as_str() {
        "tcp" | "udp" => {
            if !r.ports.is_empty() && r.port_range.is_some() {
                errs.add(
                    format!("{f}.port_range"),
                    "give ports or port_range, not both",
                );
            } else if !has_ports {
                errs.add(
                    format!("{f}.ports"),
                    format!("{} rules need ports or port_range", r.protocol),
                );
            }
            if let Some(pr) = &r.port_range {
                if pr.start == 0 || pr.start > pr.end || pr.end > 65535 {
                    errs.add(
                        format!("{f}.port_range"),
                        "must satisfy 1 <= start <= end <= 65535",
                    );
                }
            }
            if r.icmp_info.is_some() {
                errs.add(format!("{f}.icmp_info"), "is for icmp rules only");
            }
        }
        "icmp" => {
            if has_ports {
                errs.add(format!("{f}.ports"), "icmp rules have no ports");
            }
            match &r.icmp_info {
                None => errs.add(
                    format!("{f}.icmp_info"),
                    "is required for icmp rules (type and code, -1 for any)",
                ),
                Some(i) => {
                    for (name, v) in [("type", i.r#type), ("code", i.code)] {
                        if !(ICMP_ANY..=255).contains(&v) {
                            errs.add(
                                format!("{f}.icmp_info.{name}"),
                                "must be between 0 and 255, or -1 for any",
                            );
                        }
                    }
                }
            }
        }
        "all" => {
            if has_ports {
                errs.add(
                    format!("{f}.ports"),
                    "rules for all protocols have no ports",
                );
            }
            if r.icmp_info.is_some() {
                errs.add(format!("{f}.icmp_info"), "is for icmp rules only");
            }
        }
        _ => errs.add(format!("{f}.protocol"), "must be tcp, udp, icmp or all"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{IcmpInfo, PortRange};

    fn rule(protocol: &str, dest: &str) -> SecurityGroupRule {
        SecurityGroupRule {
            protocol: protocol.into(),
            destinations: vec![dest.into()],
            ..Default::default()
        }
    }

    fn fields(rules: &[SecurityGroupRule]) -> Vec<String> {
        validate_egress_rules(rules)
            .err()
            .map(|e| e.fields().iter().map(|f| f.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn good_rules_pass() {
        let mut tcp = rule("tcp", "10.0.0.0/8");
        tcp.ports = vec![80, 443];
        let mut udp = rule("udp", "1.1.1.1-1.1.1.2");
        udp.port_range = Some(PortRange { start: 53, end: 53 });
        let mut icmp = rule("icmp", "0.0.0.0/0");
        icmp.icmp_info = Some(IcmpInfo {
            r#type: ICMP_ANY,
            code: ICMP_ANY,
        });
        let mut all = rule("all", "169.254.169.254");
        all.log = true;
        assert_eq!(fields(&[tcp, udp, icmp, all]), Vec::<String>::new());
        assert_eq!(fields(&[]), Vec::<String>::new());
    }

    #[test]
    fn bad_rules_name_their_field() {
        let mut both = rule("tcp", "10.0.0.1");
        both.ports = vec![80];
        both.port_range = Some(PortRange { start: 1, end: 2 });
        let none = rule("udp", "10.0.0.1");
        let mut zero = rule("tcp", "10.0.0.1");
        zero.ports = vec![80, 0];
        let mut icmp_ports = rule("icmp", "10.0.0.1");
        icmp_ports.ports = vec![1];
        let no_info = rule("icmp", "10.0.0.1");
        let mut big_type = rule("icmp", "10.0.0.1");
        big_type.icmp_info = Some(IcmpInfo {
            r#type: 256,
            code: -2,
        });
        let mut all_info = rule("all", "10.0.0.1");
        all_info.icmp_info = Some(IcmpInfo::default());
        let bad_dest = rule("all", "example.com");
        let mut second = rule("all", "10.0.0.1");
        second.destinations.push("10.0.0.9-10.0.0.1".into());
        let bad_proto = rule("sctp", "10.0.0.1");
        assert_eq!(
            fields(&[
                both, none, zero, icmp_ports, no_info, big_type, all_info, bad_dest, second,
                bad_proto
            ]),
            [
                "egress_rules[0].port_range",
                "egress_rules[1].ports",
                "egress_rules[2].ports[1]",
                "egress_rules[3].ports",
                "egress_rules[3].icmp_info",
                "egress_rules[4].icmp_info",
                "egress_rules[5].icmp_info.type",
                "egress_rules[5].icmp_info.code",
                "egress_rules[6].icmp_info",
                "egress_rules[7].destinations[0]",
                "egress_rules[8].destinations[1]",
                "egress_rules[9].protocol",
            ]
        );
    }
}
