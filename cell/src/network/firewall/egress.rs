//! A container's egress rules as nftables rules (pure): one chain per container,
//! reached from the table's `egress` verdict map keyed by the container's address.
//! Each rule allows what it names; what no rule allows returns to the forward chain,
//! which refuses it at once (tcp reset, icmp admin-prohibited). An empty list allows
//! everything (Diego's default: the cluster's default rules, empty unless the operator
//! sets them).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use lattice_specs::egress::{destinations, ports, ICMP_ANY};
use lattice_specs::models::SecurityGroupRule;

/// The verdict map from a container's address to its egress chain.
pub const MAP: &str = "egress";

/// A rule nftables cannot enforce: the field (`egress_rules[2].ports[0]`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field {field}: {message}")]
pub struct EgressError {
    pub field: String,
    pub message: String,
}

/// A container's egress chain: its address and the chain's rules (nft rule bodies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressChain {
    pub ip: Ipv4Addr,
    pub rules: Vec<String>,
}

/// The chain of the container at `ip` (`egress_10_9_0_2`).
pub fn chain_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("egress_{a}_{b}_{c}_{d}")
}

/// The chain enforcing `rules` (the effective ones: the container's own, or the
/// cluster's default) for the container at `ip`; fields are named `{field}[i]…`.
/// Connections a rule with `log` allows are sent to NFLOG group `log_group` (see
/// [`super::super::nflog`]).
pub fn chain(
    ip: Ipv4Addr,
    rules: &[SecurityGroupRule],
    field: &str,
    log_group: u16,
) -> Result<EgressChain, EgressError> {
    let rules = if rules.is_empty() {
        vec!["accept".to_string()]
    } else {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                rule(r, log_group).map_err(|(sub, message)| EgressError {
                    field: format!("{field}[{i}].{sub}"),
                    message,
                })
            })
            .collect::<Result<_, _>>()?
    };
    Ok(EgressChain { ip, rules })
}

/// The nft script that installs (or replaces) a container's chain and points the map
/// at it, atomically.
pub fn install_script(table: &str, c: &EgressChain) -> String {
    let name = chain_name(c.ip);
    let mut s = format!("add chain inet {table} {name}\nflush chain inet {table} {name}\n");
    for r in &c.rules {
        let _ = writeln!(s, "add rule inet {table} {name} {r}");
    }
    let _ = writeln!(
        s,
        "add element inet {table} {MAP} {{ {} : jump {name} }}",
        c.ip
    );
    s
}

/// The nft script that removes a container's chain and its map entry, atomically;
/// it succeeds when they are gone already (each is added first).
pub fn remove_script(table: &str, ip: Ipv4Addr) -> String {
    let name = chain_name(ip);
    format!(
        "add chain inet {table} {name}\n\
         add element inet {table} {MAP} {{ {ip} : jump {name} }}\n\
         delete element inet {table} {MAP} {{ {ip} }}\n\
         flush chain inet {table} {name}\n\
         delete chain inet {table} {name}\n"
    )
}

/// One rule's body: its matches, then (`log`) the NFLOG group, then `accept`.
fn rule(r: &SecurityGroupRule, log_group: u16) -> Result<String, (String, String)> {
    let mut m = String::new();
    let dests = destinations(r).map_err(|(j, e)| (format!("destinations[{j}]"), e))?;
    if dests.is_empty() {
        return Err(("destinations".into(), "is required".into()));
    }
    if dests != [(0, u32::MAX)] {
        let set: Vec<String> = dests
            .iter()
            .map(|&(a, b)| interval(Ipv4Addr::from(a), Ipv4Addr::from(b)))
            .collect();
        let _ = write!(m, "ip daddr {{ {} }} ", set.join(", "));
    }
    match r.protocol.as_str() {
        proto @ ("tcp" | "udp") => {
            let ports = ports(r)?;
            if ports.is_empty() {
                let _ = write!(m, "meta l4proto {proto} ");
            } else {
                let set: Vec<String> = ports.iter().map(|&(a, b)| interval(a, b)).collect();
                let _ = write!(m, "{proto} dport {{ {} }} ", set.join(", "));
            }
        }
        "icmp" => match r.icmp_info {
            None => {
                return Err(("icmp_info".into(), "is required for icmp rules".into()));
            }
            Some(i) => {
                let check = |name: &str, v: i32| {
                    if v == ICMP_ANY || (0..=255).contains(&v) {
                        Ok(())
                    } else {
                        Err((
                            format!("icmp_info.{name}"),
                            "must be between 0 and 255, or -1 for any".to_string(),
                        ))
                    }
                };
                check("type", i.r#type)?;
                check("code", i.code)?;
                match (i.r#type, i.code) {
                    (ICMP_ANY, _) => m.push_str("meta l4proto icmp "),
                    (t, ICMP_ANY) => {
                        let _ = write!(m, "icmp type {t} ");
                    }
                    (t, c) => {
                        let _ = write!(m, "icmp type {t} icmp code {c} ");
                    }
                }
            }
        },
        "all" => {}
        _ => return Err(("protocol".into(), "must be tcp, udp, icmp or all".into())),
    }
    if r.log {
        // Sent at once: NFLOG otherwise holds messages up to a second (or 100 of
        // them), and the cell names the container by its address while it still runs.
        let _ = write!(m, "log group {log_group} queue-threshold 1 ");
    }
    m.push_str("accept");
    Ok(m)
}

/// `a` alone, or the interval `a-b`.
fn interval<T: std::fmt::Display + PartialEq>(a: T, b: T) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_specs::models::{IcmpInfo, PortRange};

    const IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

    fn r(protocol: &str, dests: &[&str]) -> SecurityGroupRule {
        SecurityGroupRule {
            protocol: protocol.into(),
            destinations: dests.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    }

    fn bodies(rules: &[SecurityGroupRule]) -> Vec<String> {
        chain(IP, rules, "egress_rules", 7).unwrap().rules
    }

    #[test]
    fn no_rules_allow_everything() {
        assert_eq!(bodies(&[]), ["accept"]);
    }

    #[test]
    fn destinations_become_one_merged_set_and_everywhere_no_match() {
        let rules = [
            r(
                "all",
                &[
                    "10.0.0.0/24",
                    "10.0.1.0-10.0.1.255",
                    "192.168.1.7",
                    "8.8.8.8-8.8.8.9",
                ],
            ),
            r("all", &["0.0.0.0/0"]),
            r("all", &["0.0.0.0/1", "128.0.0.0/1"]),
        ];
        assert_eq!(
            bodies(&rules),
            [
                "ip daddr { 8.8.8.8-8.8.8.9, 10.0.0.0-10.0.1.255, 192.168.1.7 } accept",
                "accept",
                "accept",
            ]
        );
    }

    #[test]
    fn ports_and_port_ranges_match_their_protocol() {
        let mut tcp = r("tcp", &["1.2.3.4"]);
        tcp.ports = vec![443, 80, 81];
        let mut udp = r("udp", &["0.0.0.0/0"]);
        udp.port_range = Some(PortRange { start: 53, end: 54 });
        let mut one = r("udp", &["0.0.0.0/0"]);
        one.port_range = Some(PortRange { start: 53, end: 53 });
        assert_eq!(
            bodies(&[tcp, udp, one]),
            [
                "ip daddr { 1.2.3.4 } tcp dport { 80-81, 443 } accept",
                "udp dport { 53-54 } accept",
                "udp dport { 53 } accept",
            ]
        );
    }

    #[test]
    fn logged_rules_send_what_they_allow_to_the_bridge_s_group() {
        let mut logged = r("tcp", &["1.2.3.4"]);
        logged.ports = vec![443];
        logged.log = true;
        assert_eq!(
            bodies(&[logged]),
            ["ip daddr { 1.2.3.4 } tcp dport { 443 } log group 7 queue-threshold 1 accept"]
        );
    }

    #[test]
    fn icmp_rules_match_type_and_code_with_minus_one_for_any() {
        let icmp = |t, c| {
            let mut x = r("icmp", &["0.0.0.0/0"]);
            x.icmp_info = Some(IcmpInfo { r#type: t, code: c });
            x
        };
        assert_eq!(
            bodies(&[icmp(8, 0), icmp(3, -1), icmp(-1, -1)]),
            [
                "icmp type 8 icmp code 0 accept",
                "icmp type 3 accept",
                "meta l4proto icmp accept",
            ]
        );
    }

    #[test]
    fn what_nftables_cannot_enforce_is_refused_naming_the_field() {
        let err = |rule: SecurityGroupRule| {
            chain(IP, &[r("all", &["1.1.1.1"]), rule], "default_egress", 7).unwrap_err()
        };
        assert_eq!(
            err(r("all", &["nowhere"])).field,
            "default_egress[1].destinations[0]"
        );
        assert_eq!(
            err(r("gre", &["1.1.1.1"])).field,
            "default_egress[1].protocol"
        );
        let mut big = r("icmp", &["1.1.1.1"]);
        big.icmp_info = Some(IcmpInfo {
            r#type: 300,
            code: 0,
        });
        assert_eq!(err(big).field, "default_egress[1].icmp_info.type");
        let mut zero = r("tcp", &["1.1.1.1"]);
        zero.ports = vec![0];
        let e = err(zero);
        assert_eq!(e.field, "default_egress[1].ports[0]");
        assert_eq!(
            e.to_string(),
            "invalid field default_egress[1].ports[0]: must be a port between 1 and 65535"
        );
        assert_eq!(err(r("all", &[])).field, "default_egress[1].destinations");
    }

    #[test]
    fn chains_are_installed_and_removed_with_their_map_entry_atomically() {
        let c = chain(IP, &[], "egress_rules", 7).unwrap();
        assert_eq!(
            install_script("lattice_lt0", &c),
            "add chain inet lattice_lt0 egress_10_9_0_2\n\
             flush chain inet lattice_lt0 egress_10_9_0_2\n\
             add rule inet lattice_lt0 egress_10_9_0_2 accept\n\
             add element inet lattice_lt0 egress { 10.9.0.2 : jump egress_10_9_0_2 }\n"
        );
        let rm = remove_script("lattice_lt0", IP);
        let del = rm.find("delete element").unwrap();
        assert!(
            rm.find("add element").unwrap() < del,
            "a missing entry is no error"
        );
        assert!(
            del < rm.find("delete chain").unwrap(),
            "the entry goes before its chain"
        );
    }
}
