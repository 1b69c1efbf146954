//! Allocation, pure: which address of the cell's subnet a container gets and which
//! host ports its published ports take. No I/O; [`super::Network`] holds the pools and
//! asks the kernel for what they decide.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

/// What allocation can run out of.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    #[error("no free address left in {gateway}/{prefix}")]
    NoFreeAddress { gateway: Ipv4Addr, prefix: u8 },
    #[error("no free host port in {first}-{last} for {target}")]
    NoFreePort {
        first: u16,
        last: u16,
        target: SocketAddr,
    },
}

/// How many container addresses the subnet `gateway/prefix` holds: what the address
/// pool hands out (offsets 2..=size-2: not the network, not .1, not the broadcast),
/// less the gateway's own when it falls among them.
pub(super) fn container_addresses(gateway: Ipv4Addr, prefix: u8) -> u64 {
    let host_bits = 32 - u32::from(prefix.min(32));
    let size = 1u64 << host_bits;
    let span = size.saturating_sub(3);
    let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
    let offset = u64::from(u32::from(gateway) & !mask);
    span - u64::from(span > 0 && (2..2 + span).contains(&offset))
}

/// The bridge's addresses in use, handed out round-robin: an address freed by a
/// stopped container comes back only after the rest of the subnet had its turn, so a
/// restarted instance never meets the host's stale ARP entry for its predecessor
/// (which cost seconds of failed health checks).
#[derive(Debug, Default)]
pub(super) struct IpPool {
    used: BTreeSet<Ipv4Addr>,
    /// Offset in the subnet where the next search starts.
    next: u32,
}

impl IpPool {
    /// The next free address of `gateway/prefix`.
    pub(super) fn allocate(
        &mut self,
        gateway: Ipv4Addr,
        prefix: u8,
    ) -> Result<Ipv4Addr, AllocationError> {
        let base = u32::from(gateway) & (u32::MAX << (32 - prefix as u32));
        let size = 1u32 << (32 - prefix as u32);
        // Offsets 2..size-1: not the network, not .1 by convention, not broadcast.
        let span = size.saturating_sub(3);
        for i in 0..span {
            let off = 2 + (self.next + i) % span;
            let a = Ipv4Addr::from(base + off);
            if a != gateway && !self.used.contains(&a) {
                self.used.insert(a);
                self.next = off - 2 + 1;
                return Ok(a);
            }
        }
        Err(AllocationError::NoFreeAddress { gateway, prefix })
    }

    /// Marks `addr` in use (a container that survived a restart has it).
    pub(super) fn adopt(&mut self, addr: Ipv4Addr) {
        self.used.insert(addr);
    }

    /// Frees `addr`; it comes back after the others.
    pub(super) fn free(&mut self, addr: Ipv4Addr) {
        self.used.remove(&addr);
    }
}

/// The host ports published container ports take, from an inclusive range.
#[derive(Debug)]
pub(super) struct PortPool {
    range: (u16, u16),
    used: BTreeSet<u16>,
}

impl PortPool {
    pub(super) fn new(range: (u16, u16)) -> PortPool {
        PortPool {
            range,
            used: BTreeSet::new(),
        }
    }

    /// The ports to try, in order: `want` alone when one is wanted (re-adoption keeps
    /// its number), otherwise every port of the range not taken yet.
    pub(super) fn candidates(&self, want: Option<u16>) -> Vec<u16> {
        match want {
            Some(p) => vec![p],
            None => (self.range.0..=self.range.1)
                .filter(|p| !self.used.contains(p))
                .collect(),
        }
    }

    /// Takes `port`; false when it is taken already.
    pub(super) fn take(&mut self, port: u16) -> bool {
        self.used.insert(port)
    }

    /// Frees `port`.
    pub(super) fn free(&mut self, port: u16) {
        self.used.remove(&port);
    }

    /// The error for `target` when no port of the range could be had.
    pub(super) fn exhausted(&self, target: SocketAddr) -> AllocationError {
        AllocationError::NoFreePort {
            first: self.range.0,
            last: self.range.1,
            target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_back_only_after_the_others() {
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut pool = IpPool::default();
        let a = pool.allocate(gw, 29).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 2));
        pool.used.remove(&a);
        let got: Vec<_> = (0..5).map(|_| pool.allocate(gw, 29).unwrap()).collect();
        assert_eq!(
            got.iter().map(|a| a.octets()[3]).collect::<Vec<_>>(),
            vec![3, 4, 5, 6, 2],
            "the freed .2 comes last"
        );
        assert!(pool.allocate(gw, 29).is_err(), "a /29 holds 5");
    }

    #[test]
    fn the_gateway_and_adopted_addresses_are_never_handed_out() {
        // The gateway among the container offsets (.3 of a /29) is skipped.
        let gw = Ipv4Addr::new(10, 0, 0, 3);
        let mut pool = IpPool::default();
        pool.adopt(Ipv4Addr::new(10, 0, 0, 5));
        let got: Vec<_> = std::iter::from_fn(|| pool.allocate(gw, 29).ok()).collect();
        assert_eq!(
            got.iter().map(|a| a.octets()[3]).collect::<Vec<_>>(),
            vec![2, 4, 6]
        );
        assert_eq!(container_addresses(gw, 29), 4, "5 offsets less the gateway");
        pool.free(Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(pool.allocate(gw, 29).unwrap(), Ipv4Addr::new(10, 0, 0, 5));
    }

    #[test]
    fn subnet_sizes_count_the_addresses_the_pool_hands_out() {
        let gw = Ipv4Addr::new(10, 254, 0, 1);
        assert_eq!(container_addresses(gw, 16), 65533);
        assert_eq!(container_addresses(gw, 30), 1);
        assert_eq!(container_addresses(gw, 31), 0);
        assert_eq!(container_addresses(gw, 32), 0);
    }

    #[test]
    fn ports_are_tried_in_order_and_a_wanted_one_alone() {
        let mut ports = PortPool::new((61000, 61003));
        assert_eq!(ports.candidates(None), vec![61000, 61001, 61002, 61003]);
        assert!(ports.take(61001));
        assert!(!ports.take(61001), "taken once");
        assert_eq!(ports.candidates(None), vec![61000, 61002, 61003]);
        assert_eq!(ports.candidates(Some(61001)), vec![61001], "re-adoption");
        ports.free(61001);
        assert_eq!(ports.candidates(None), vec![61000, 61001, 61002, 61003]);
        assert_eq!(PortPool::new((5, 4)).candidates(None), Vec::<u16>::new());
    }
}
