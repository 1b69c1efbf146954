//! The table's feed: the BBS's actual LRPs, followed with the shared loop of
//! [`lattice_bbs_client::follow`] (a snapshot, then events; resubscribed after the
//! stream breaks, the last known records kept meanwhile, which it logs).

use async_trait::async_trait;
use lattice_bbs_client::follow::Follower;
use lattice_bbs_client::{ActualLrpFilter, BbsError, Reads};
use lattice_specs::events::event::Event as Kind;

use super::Table;

#[async_trait]
impl Follower for Table {
    async fn resync(&self, bbs: &dyn Reads) -> Result<(), BbsError> {
        let actual = bbs.actual_lrps(&ActualLrpFilter::default()).await?;
        self.update(|r| r.reset(&actual));
        Ok(())
    }

    fn apply(&self, event: &Kind) {
        if matches!(
            event,
            Kind::ActualLrpCreated(_) | Kind::ActualLrpChanged(_) | Kind::ActualLrpRemoved(_)
        ) {
            self.update(|r| r.apply(event));
        }
    }
}
