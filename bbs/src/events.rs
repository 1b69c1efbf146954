//! Model events, derived from the store's change feed: whatever changed the
//! store (this BBS, another BBS replica, a lease expiring) shows up here, so
//! events never disagree with the state.

use std::sync::Arc;
use std::time::Duration;

use lattice_specs::events::{event::Event as Kind, *};
use lattice_specs::models::{ActualLrp, Backup, CellPresence, DesiredLrp, Task, Volume};
use prost::Message;
use tokio::sync::broadcast;

use crate::db::{ACTUAL, BACKUP, CELL, DESIRED, EVACUATING, REPLACED, ROOT, SUSPECT, TASK, VOLUME};
use crate::store::{Change, Store};

/// Events buffered per subscriber before it is considered too slow and cut off.
pub const SUBSCRIBER_BUFFER: usize = 1 << 14;

fn decode<T: Message + Default>(v: &Option<Vec<u8>>) -> Option<T> {
    v.as_ref().and_then(|b| T::decode(b.as_slice()).ok())
}

/// Turn one store change into zero or more model events.
pub fn translate(c: &Change) -> Vec<Event> {
    let ev = |kind| Event {
        revision: c.revision,
        event: Some(kind),
    };
    let k = c.key.as_str();
    if k.starts_with(DESIRED) {
        match (
            decode::<DesiredLrp>(&c.prev_value),
            decode::<DesiredLrp>(&c.value),
        ) {
            (None, Some(d)) => vec![ev(Kind::DesiredLrpCreated(DesiredLrpCreatedEvent {
                desired_lrp: Some(d),
            }))],
            (Some(b), Some(a)) => vec![ev(Kind::DesiredLrpChanged(DesiredLrpChangedEvent {
                before: Some(b),
                after: Some(a),
            }))],
            (Some(d), None) => vec![ev(Kind::DesiredLrpRemoved(DesiredLrpRemovedEvent {
                desired_lrp: Some(d),
            }))],
            (None, None) => vec![],
        }
    } else if [ACTUAL, EVACUATING, SUSPECT, REPLACED]
        .iter()
        .any(|p| k.starts_with(p))
    {
        match (
            decode::<ActualLrp>(&c.prev_value),
            decode::<ActualLrp>(&c.value),
        ) {
            (None, Some(a)) => vec![ev(Kind::ActualLrpCreated(ActualLrpCreatedEvent {
                actual_lrp: Some(a),
            }))],
            (Some(b), Some(a)) => {
                let crashed = a.crash_count > b.crash_count;
                let mut out = vec![];
                if crashed {
                    out.push(ev(Kind::ActualLrpCrashed(ActualLrpCrashedEvent {
                        actual_lrp: Some(a.clone()),
                    })));
                }
                out.push(ev(Kind::ActualLrpChanged(ActualLrpChangedEvent {
                    before: Some(b),
                    after: Some(a),
                })));
                out
            }
            (Some(a), None) => vec![ev(Kind::ActualLrpRemoved(ActualLrpRemovedEvent {
                actual_lrp: Some(a),
            }))],
            (None, None) => vec![],
        }
    } else if k.starts_with(TASK) {
        match (decode::<Task>(&c.prev_value), decode::<Task>(&c.value)) {
            (None, Some(t)) => vec![ev(Kind::TaskCreated(TaskCreatedEvent { task: Some(t) }))],
            (Some(b), Some(a)) => vec![ev(Kind::TaskChanged(TaskChangedEvent {
                before: Some(b),
                after: Some(a),
            }))],
            (Some(t), None) => vec![ev(Kind::TaskRemoved(TaskRemovedEvent { task: Some(t) }))],
            (None, None) => vec![],
        }
    } else if k.starts_with(CELL) {
        match (
            decode::<CellPresence>(&c.prev_value),
            decode::<CellPresence>(&c.value),
        ) {
            (None, Some(cell)) => vec![ev(Kind::CellAppeared(CellAppearedEvent {
                cell: Some(cell),
            }))],
            (Some(cell), None) => vec![ev(Kind::CellDisappeared(CellDisappearedEvent {
                cell: Some(cell),
            }))],
            // Put again as it was (a registration under a new lease): nothing changed.
            (Some(b), Some(a)) if b != a => vec![ev(Kind::CellChanged(CellChangedEvent {
                before: Some(b),
                after: Some(a),
            }))],
            _ => vec![],
        }
    } else if k.starts_with(VOLUME) {
        let before = decode::<Volume>(&c.prev_value);
        let after = decode::<Volume>(&c.value);
        if before.is_none() && after.is_none() {
            return vec![];
        }
        vec![ev(Kind::VolumeChanged(VolumeChangedEvent {
            before,
            after,
        }))]
    } else if k.starts_with(BACKUP) {
        let before = decode::<Backup>(&c.prev_value);
        let after = decode::<Backup>(&c.value);
        if before.is_none() && after.is_none() {
            return vec![];
        }
        vec![ev(Kind::BackupChanged(BackupChangedEvent {
            before,
            after,
        }))]
    } else {
        vec![]
    }
}

/// Fans the store's changes out to every subscriber.
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Event>>,
    /// Turns true when the BBS shuts down: every subscriber stream ends.
    closed: Arc<tokio::sync::watch::Sender<bool>>,
}

impl EventHub {
    /// Start following the store. Runs until the process ends, re-watching
    /// after any interruption.
    pub async fn start(store: Arc<dyn Store>) -> EventHub {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let hub = EventHub {
            tx: tx.clone(),
            closed: Arc::new(tokio::sync::watch::channel(false).0),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                let mut rx = match store.watch(ROOT).await {
                    Ok(rx) => rx,
                    Err(e) => {
                        tracing::warn!(error = %e, "event hub cannot watch the store; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                while let Some(change) = rx.recv().await {
                    match change {
                        Ok(c) => {
                            for e in translate(&c) {
                                crate::metrics::EVENTS
                                    .with_label_values(&[event_name(&e)])
                                    .inc();
                                let _ = tx.send(Arc::new(e));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "event hub lost the store's change feed; re-watching");
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        // Give the watch a moment to be established so early writes are seen.
        let _ = tokio::time::timeout(Duration::from_secs(2), ready_rx).await;
        hub
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// End every subscriber's stream (so a shutting-down server can drain).
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }

    /// Resolves once `close` was called.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}

/// The event's name on the wire (receptor style, snake_case).
pub fn event_name(e: &Event) -> &'static str {
    match &e.event {
        Some(Kind::DesiredLrpCreated(_)) => "desired_lrp_created",
        Some(Kind::DesiredLrpChanged(_)) => "desired_lrp_changed",
        Some(Kind::DesiredLrpRemoved(_)) => "desired_lrp_removed",
        Some(Kind::ActualLrpCreated(_)) => "actual_lrp_created",
        Some(Kind::ActualLrpChanged(_)) => "actual_lrp_changed",
        Some(Kind::ActualLrpRemoved(_)) => "actual_lrp_removed",
        Some(Kind::ActualLrpCrashed(_)) => "actual_lrp_crashed",
        Some(Kind::TaskCreated(_)) => "task_created",
        Some(Kind::TaskChanged(_)) => "task_changed",
        Some(Kind::TaskRemoved(_)) => "task_removed",
        Some(Kind::CellAppeared(_)) => "cell_appeared",
        Some(Kind::CellDisappeared(_)) => "cell_disappeared",
        Some(Kind::CellChanged(_)) => "cell_changed",
        Some(Kind::VolumeChanged(_)) => "volume_changed",
        Some(Kind::BackupChanged(_)) => "backup_changed",
        None => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, before: Option<&CellPresence>, after: &CellPresence) -> Change {
        Change {
            revision: 7,
            key: key.into(),
            value: Some(after.encode_to_vec()),
            prev_value: before.map(|b| b.encode_to_vec()),
        }
    }

    /// A cell whose pool figures changed is a `cell_changed` event carrying both; one
    /// put again as it was (a new lease) is none.
    #[test]
    fn a_cell_put_again_with_other_figures_is_a_cell_changed_event() {
        let key = crate::db::cell_key("cell-1");
        let before = CellPresence {
            cell_id: "cell-1".into(),
            volume_pool_bytes: 10 << 30,
            ..Default::default()
        };
        let after = CellPresence {
            volume_pool_bytes: 15 << 30,
            volume_pool_warning: "at its maximum".into(),
            ..before.clone()
        };
        let events = translate(&put(&key, Some(&before), &after));
        assert_eq!(events.len(), 1);
        assert_eq!(event_name(&events[0]), "cell_changed");
        let Some(Kind::CellChanged(c)) = &events[0].event else {
            unreachable!()
        };
        assert_eq!(
            (c.before.as_ref(), c.after.as_ref()),
            (Some(&before), Some(&after))
        );
        assert!(translate(&put(&key, Some(&before), &before)).is_empty());
        let appeared = translate(&put(&key, None, &before));
        assert_eq!(event_name(&appeared[0]), "cell_appeared");
    }
}
