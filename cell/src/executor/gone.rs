//! Containers destroyed a moment ago, by address: what the cell's log of egress
//! connections names a late packet by. The kernel logs a connection at once, but the
//! cell may read it after the container that opened it is gone (a Task that connects
//! and exits, on a loaded cell); the line still belongs in that container's log.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::ContainerInfo;

/// How long a destroyed container still answers for its address.
pub const KEEP: Duration = Duration::from_secs(10);

/// The destroyed containers of the last [`KEEP`], oldest first.
#[derive(Default)]
pub struct RecentlyGone(VecDeque<(Instant, Ipv4Addr, ContainerInfo)>);

impl RecentlyGone {
    /// Records `info`, destroyed at `now`, at address `ip`.
    pub fn push(&mut self, ip: Ipv4Addr, info: ContainerInfo, now: Instant) {
        self.prune(now);
        self.0.push_back((now, ip, info));
    }

    /// The container last destroyed at `ip` within [`KEEP`] of `now`.
    pub fn find(&mut self, ip: Ipv4Addr, now: Instant) -> Option<ContainerInfo> {
        self.prune(now);
        self.0
            .iter()
            .rev()
            .find(|(_, at, _)| *at == ip)
            .map(|(_, _, info)| info.clone())
    }

    fn prune(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > KEEP)
        {
            self.0.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(handle: &str) -> ContainerInfo {
        crate::rep::fake::container(handle, &[])
    }

    #[test]
    fn a_gone_container_answers_for_its_address_for_a_while() {
        let t0 = Instant::now();
        let ip: Ipv4Addr = "10.255.0.7".parse().unwrap();
        let mut gone = RecentlyGone::default();
        assert!(gone.find(ip, t0).is_none());
        gone.push(ip, info("a"), t0);
        gone.push(ip, info("b"), t0 + Duration::from_secs(1));
        // The latest at that address.
        let found = gone.find(ip, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(found.handle(), "b");
        assert!(gone.find("10.255.0.8".parse().unwrap(), t0).is_none());
        // Forgotten after KEEP.
        assert!(gone.find(ip, t0 + KEEP + Duration::from_secs(2)).is_none());
        assert!(gone.0.is_empty());
    }
}
