//! The bridge's nftables table, as an `nft -f` script (pure): what the cell's host
//! accepts from its containers (input), what it forwards for them (forward: their
//! egress rules, nothing new into the bridge), and the outbound NAT (postrouting).

use std::net::Ipv4Addr;

use super::super::NetworkConfig;
use super::{egress, table_name};

/// `addr/prefix` with its host bits cleared.
pub fn network_of(addr: Ipv4Addr, prefix: u8) -> (Ipv4Addr, u8) {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    (Ipv4Addr::from(u32::from(addr) & mask), prefix)
}

/// The cell's own container subnet.
pub fn subnet(cfg: &NetworkConfig) -> (Ipv4Addr, u8) {
    network_of(cfg.gateway, cfg.prefix)
}

/// Where container-to-container traffic goes: the cluster's container network, or the
/// cell's own subnet when it has none. Never masqueraded, allowed whatever the egress
/// rules.
pub fn internal(cfg: &NetworkConfig) -> (Ipv4Addr, u8) {
    match cfg.cluster_network {
        Some((a, p)) => network_of(a, p),
        None => subnet(cfg),
    }
}

/// The nft script that (re)creates the bridge's table, atomically (its containers'
/// egress chains go with it: they are added again as containers connect or are
/// adopted). `uplink`: the interface through which the cells routed directly (no
/// VXLAN, [`crate::network::overlay::Via::Direct`]) send their containers' packets.
pub fn script(cfg: &NetworkConfig, uplink: Option<&str>) -> String {
    let t = table_name(&cfg.bridge);
    let b = &cfg.bridge;
    let gw = cfg.gateway;
    let (net, len) = subnet(cfg);
    let (inet, ilen) = internal(cfg);
    let map = egress::MAP;
    let dns = crate::dns::PORT;
    let lifecycle = LIFECYCLE_CHAIN;
    // Containers of other cells (over the overlay) may open connections to this
    // cell's containers; nothing else may.
    // Only through the overlay's device, or the uplink from the cells routed directly
    // (their hosts are neighbours on it, as the VXLAN packets' senders are): a packet
    // from any other interface that merely claims a container source address is not
    // one.
    let from_cluster = match (&cfg.cluster_network, &cfg.overlay) {
        (Some(_), Some(o)) => {
            let devices = match uplink {
                Some(u) => format!("{{ \"{}\", \"{u}\" }}", o.device),
                None => format!("\"{}\"", o.device),
            };
            format!(
                "\t\tiifname {devices} oifname \"{b}\" ip saddr {inet}/{ilen} ip saddr != {net}/{len} accept comment \"other cells' containers\"\n"
            )
        }
        _ => String::new(),
    };
    format!(
        "table inet {t}\n\
         delete table inet {t}\n\
         table inet {t} {{\n\
         \tmap {map} {{\n\
         \t\ttype ipv4_addr : verdict\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{b}\" ct state established,related accept\n\
         \t\tiifname \"{b}\" ip daddr {gw} meta l4proto {{ tcp, udp }} th dport {dns} accept comment \"the cell's DNS server\"\n\
         \t\tiifname \"{b}\" ip daddr {gw} jump {lifecycle}\n\
         \t\tiifname \"{b}\" counter drop comment \"containers may not reach the cell's host\"\n\
         \t\tiifname != {{ \"{b}\", \"lo\" }} ip saddr {inet}/{ilen} ct state new counter drop comment \"nor may containers beyond this bridge\"\n\
         \t}}\n\
         \tchain {lifecycle} {{\n\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{b}\" ct state established,related accept\n\
         \t\toifname \"{b}\" ct state established,related accept\n\
         \t\tiifname \"{b}\" oifname \"{b}\" accept\n\
         \t\tiifname \"{b}\" ip daddr {inet}/{ilen} accept comment \"container to container\"\n\
         \t\tiifname \"{b}\" ip saddr {net}/{len} ip saddr vmap @{map}\n\
         \t\tiifname \"{b}\" meta l4proto tcp counter reject with tcp reset comment \"denied by the container's egress rules\"\n\
         \t\tiifname \"{b}\" counter reject with icmpx type admin-prohibited comment \"denied by the container's egress rules\"\n\
         {from_cluster}\
         \t\toifname \"{b}\" counter drop comment \"containers are reached through published ports\"\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {net}/{len} ip daddr != {inet}/{ilen} oifname != \"{b}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// The input chain that lets containers reach the cell's lifecycle file server
/// (empty until [`file_server_script`] fills it).
pub const LIFECYCLE_CHAIN: &str = "lifecycle";

/// The nft script that opens the cell's lifecycle file server (listening on the
/// gateway at `port`) to its containers: their connections to the gateway's port
/// [`crate::fileserver::PORT`] go to it, and it accepts them (run again, it
/// replaces what it did).
pub fn file_server_script(cfg: &NetworkConfig, port: u16) -> String {
    let t = table_name(&cfg.bridge);
    let b = &cfg.bridge;
    let gw = cfg.gateway;
    let public = crate::fileserver::PORT;
    let chain = LIFECYCLE_CHAIN;
    format!(
        "flush chain inet {t} {chain}\n\
         flush chain inet {t} prerouting\n\
         add rule inet {t} prerouting iifname \"{b}\" ip daddr {gw} tcp dport {public} redirect to :{port} comment \"the lifecycle file server\"\n\
         add rule inet {t} {chain} tcp dport {port} accept comment \"the lifecycle file server\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cluster: Option<(Ipv4Addr, u8)>) -> NetworkConfig {
        NetworkConfig {
            bridge: "lt0".into(),
            gateway: Ipv4Addr::new(10, 9, 3, 1),
            prefix: 24,
            cluster_network: cluster,
            ..Default::default()
        }
    }

    #[test]
    fn the_table_drops_new_connections_from_the_bridge_to_the_host_only() {
        assert_eq!(table_name("lt-1.x"), "lattice_lt_1_x");
        let r = script(&cfg(None), None);
        let input = &r[r.find("chain input").unwrap()..r.find("chain forward").unwrap()];
        assert!(input.contains("hook input"));
        let accept = input.find("established,related accept").unwrap();
        let dns = input.find("ip daddr 10.9.3.1 meta l4proto { tcp, udp } th dport 53 accept");
        let drop = input.find("counter drop").unwrap();
        assert!(accept < drop, "answers pass before the drop");
        assert!(dns.unwrap() < drop, "DNS to the gateway passes");
        assert_eq!(input.matches("iifname \"lt0\"").count(), 4);
        let lifecycle = input.find("ip daddr 10.9.3.1 jump lifecycle").unwrap();
        assert!(
            lifecycle < drop,
            "the file server's chain is asked before the drop"
        );
        assert!(r.contains("chain lifecycle {\n\t}"), "empty until opened");
        assert!(r.contains("type nat hook prerouting priority dstnat"));
        assert!(r.starts_with("table inet lattice_lt0\ndelete table inet lattice_lt0\n"));
    }

    #[test]
    fn other_cells_containers_may_not_open_connections_to_the_host() {
        let alone = script(&cfg(None), None);
        assert!(alone.contains(
            "iifname != { \"lt0\", \"lo\" } ip saddr 10.9.3.0/24 ct state new counter drop comment \"nor may containers beyond this bridge\""
        ));
        let cluster = script(&cfg(Some((Ipv4Addr::new(10, 255, 0, 0), 16))), None);
        let input =
            &cluster[cluster.find("chain input").unwrap()..cluster.find("chain forward").unwrap()];
        assert!(
            input.contains(
                "iifname != { \"lt0\", \"lo\" } ip saddr 10.255.0.0/16 ct state new counter drop"
            ),
            "{input}"
        );
    }

    #[test]
    fn the_file_server_is_reached_at_the_gateways_port_8080() {
        let s = file_server_script(&cfg(None), 41234);
        assert!(s.starts_with(
            "flush chain inet lattice_lt0 lifecycle\nflush chain inet lattice_lt0 prerouting\n"
        ));
        assert!(s.contains(
            "add rule inet lattice_lt0 prerouting iifname \"lt0\" ip daddr 10.9.3.1 tcp dport 8080 redirect to :41234"
        ));
        assert!(s.contains("add rule inet lattice_lt0 lifecycle tcp dport 41234 accept"));
    }

    #[test]
    fn the_own_subnet_is_masqueraded_except_to_the_cluster() {
        let alone = script(&cfg(None), None);
        assert!(alone.contains(
            "ip saddr 10.9.3.0/24 ip daddr != 10.9.3.0/24 oifname != \"lt0\" masquerade"
        ));
        assert!(alone.contains("iifname \"lt0\" ip daddr 10.9.3.0/24 accept"));
        assert!(
            !alone.contains("other cells"),
            "no cluster: nothing comes in"
        );
        let cluster = script(&cfg(Some((Ipv4Addr::new(10, 255, 7, 7), 16))), None);
        assert!(cluster.contains("ip daddr != 10.255.0.0/16 oifname != \"lt0\" masquerade"));
        assert!(cluster.contains("iifname \"lt0\" ip daddr 10.255.0.0/16 accept"));
        assert!(
            !cluster.contains("other cells"),
            "no overlay: no other cell's container can arrive"
        );
        let with_overlay = NetworkConfig {
            overlay: Some(crate::network::OverlayConfig {
                device: "lvx0".into(),
                vni: 1,
                port: 4789,
                local: Ipv4Addr::new(192, 168, 1, 2),
                direct_routing: false,
            }),
            ..cfg(Some((Ipv4Addr::new(10, 255, 7, 7), 16)))
        };
        let overlay = script(&with_overlay, None);
        assert!(overlay.contains(
            "iifname \"lvx0\" oifname \"lt0\" ip saddr 10.255.0.0/16 ip saddr != 10.9.3.0/24 accept"
        ));
        // Routed directly, the other cells' containers come through the uplink too.
        let direct = script(&with_overlay, Some("eth0"));
        assert!(direct.contains(
            "iifname { \"lvx0\", \"eth0\" } oifname \"lt0\" ip saddr 10.255.0.0/16 ip saddr != 10.9.3.0/24 accept"
        ));
        assert_eq!(direct.matches("eth0").count(), 1, "nothing else from it");
    }

    #[test]
    fn new_traffic_from_the_bridge_meets_the_egress_map_then_a_fast_refusal() {
        let r = script(&cfg(None), None);
        let at = |s: &str| r.find(s).unwrap_or_else(|| panic!("{s} missing from {r}"));
        let answers = at("iifname \"lt0\" ct state established,related accept\n\t\toifname");
        let internal = at("ip daddr 10.9.3.0/24 accept");
        let map = at("ip saddr 10.9.3.0/24 ip saddr vmap @egress");
        let reset = at("reject with tcp reset");
        let prohibited = at("reject with icmpx type admin-prohibited");
        let inbound = at("oifname \"lt0\" counter drop");
        assert!(answers < internal && internal < map && map < reset);
        assert!(reset < prohibited && prohibited < inbound);
        assert!(r.contains("map egress {\n\t\ttype ipv4_addr : verdict\n\t}"));
        assert_eq!(
            network_of(Ipv4Addr::new(10, 1, 2, 3), 0),
            (Ipv4Addr::UNSPECIFIED, 0)
        );
    }
}
