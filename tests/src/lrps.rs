//! Waiting on a process's actual LRPs, as the end-to-end tests do.

use std::time::{Duration, Instant};

use lattice_specs::bbs_api::ActualLrPsRequest;
use lattice_specs::models::{self, actual_lrp::State};

use crate::BbsClient;

/// Every actual LRP of `guid`.
pub async fn actuals(c: &mut BbsClient, guid: &str) -> Vec<models::ActualLrp> {
    c.actual_lr_ps(ActualLrPsRequest {
        process_guid: guid.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .actual_lrps
}

/// The cell an instance is on (empty when unclaimed).
pub fn cell_of(a: &models::ActualLrp) -> String {
    a.instance_key.clone().unwrap_or_default().cell_id
}

/// Waits for `n` RUNNING instances of `guid` (and no other) for which `accept` holds;
/// panics after `within`.
pub async fn wait_running_where(
    c: &mut BbsClient,
    guid: &str,
    n: usize,
    within: Duration,
    accept: impl Fn(&models::ActualLrp) -> bool,
) -> Vec<models::ActualLrp> {
    let t0 = Instant::now();
    loop {
        let all = actuals(c, guid).await;
        let running: Vec<_> = all
            .iter()
            .filter(|a| a.state() == State::Running && accept(a))
            .cloned()
            .collect();
        if running.len() == n && all.len() == n {
            return running;
        }
        assert!(
            t0.elapsed() < within,
            "{guid}: wanted {n} RUNNING within {within:?}, have {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `n` RUNNING instances of `guid` (and no other); panics after `within`.
pub async fn wait_running(
    c: &mut BbsClient,
    guid: &str,
    n: usize,
    within: Duration,
) -> Vec<models::ActualLrp> {
    wait_running_where(c, guid, n, within, |_| true).await
}
