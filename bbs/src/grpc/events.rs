//! `SubscribeEvents`: the store's change feed, as a gRPC stream per subscriber.

use std::pin::Pin;

use futures::Stream;
use lattice_specs::events::Event;
use tonic::Status;

use crate::events::EventHub;

/// What `SubscribeEvents` answers.
pub(super) type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

/// Every event from now on, until the BBS shuts down; a subscriber that falls
/// behind gets `DATA_LOSS` and must resubscribe and resync.
pub(super) fn subscribe(hub: &EventHub) -> EventStream {
    let mut rx = hub.subscribe();
    let closing = hub.closing();
    async_stream_events(move |tx| async move {
        tokio::pin!(closing);
        loop {
            let next = tokio::select! {
                e = rx.recv() => e,
                _ = &mut closing => return,
            };
            match next {
                Ok(e) => {
                    if tx.send(Ok((*e).clone())).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let _ = tx
                        .send(Err(Status::data_loss(format!(
                            "subscriber fell {n} events behind; resubscribe and resync"
                        ))))
                        .await;
                    return;
                }
                Err(_) => return,
            }
        }
    })
}

/// A stream fed by a task through a bounded channel.
fn async_stream_events<F, Fut>(f: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
