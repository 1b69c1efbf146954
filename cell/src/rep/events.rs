//! Following the BBS's events: a sync whenever one touches this cell's work.

use super::*;

impl Rep {
    /// Triggers a sync whenever an event touches this cell's work.
    pub(super) async fn follow_events(self: Arc<Self>, shutdown: CancellationToken) {
        use lattice_specs::events::event::Event as E;
        loop {
            let stream = self.bbs().subscribe_events(api::SubscribeRequest {}).await;
            if let Ok(stream) = stream {
                let mut stream = stream.into_inner();
                // Whatever happened while we were not listening.
                self.sync_now.notify_one();
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = stream.message() => m,
                    };
                    let Ok(Some(ev)) = msg else { break };
                    let relevant = match &ev.event {
                        Some(E::ActualLrpRemoved(r)) => self.holds_actual(r.actual_lrp.as_ref()),
                        Some(E::ActualLrpChanged(c)) => self.holds_actual(c.before.as_ref()),
                        Some(E::TaskChanged(c)) => c
                            .before
                            .as_ref()
                            .is_some_and(|t| self.slots.lock().unwrap().contains_key(&t.task_guid)),
                        // Not the use this cell itself reports: only what asks it to act.
                        Some(E::VolumeChanged(v)) => {
                            let key = |x: &models::Volume| (x.state, x.size_bytes);
                            v.after
                                .as_ref()
                                .or(v.before.as_ref())
                                .is_some_and(|x| x.cell_id == self.cfg.cell_id)
                                && v.before.as_ref().map(key) != v.after.as_ref().map(key)
                        }
                        Some(E::TaskRemoved(r)) => r
                            .task
                            .as_ref()
                            .is_some_and(|t| self.slots.lock().unwrap().contains_key(&t.task_guid)),
                        _ => false,
                    };
                    if relevant {
                        self.sync_now.notify_one();
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    pub(super) fn holds_actual(&self, a: Option<&models::ActualLrp>) -> bool {
        a.and_then(|a| a.instance_key.as_ref())
            .is_some_and(|k| self.slots.lock().unwrap().contains_key(&k.instance_guid))
    }
}
