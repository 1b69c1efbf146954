//! The proxy's per-request timeouts, checked by one ticker per event loop.
//!
//! Every request has two deadlines: hyper's for reading the request head
//! (slowloris) and ours for the instance's answer. As tokio timers, each is a
//! boxed entry put into and taken out of the runtime's timer wheel, and a clock
//! read, per request. Here a client connection owns one [`Slot`] for both: a
//! pending wait arms it with a store, and each loop's [`Clock::run`] ticker wakes
//! the connections whose deadline has passed. Deadlines are coarse: they fire
//! up to a [`TICK`] late, nothing next to limits of seconds.
//!
//! A slot keeps its earliest armed deadline, even one whose wait is over (the
//! request went on): the ticker then wakes the connection once for nothing, and
//! whatever still waits arms the slot again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

/// How often the ticker reads the clock and wakes expired connections.
pub const TICK: Duration = Duration::from_millis(100);

const DISARMED: u64 = u64::MAX;

/// One event loop's coarse clock and the slots of its connections.
pub struct Clock {
    epoch: Instant,
    /// Milliseconds since `epoch` at the last tick.
    now_ms: AtomicU64,
    slots: Mutex<Vec<Weak<Slot>>>,
}

/// A client connection's deadline and the waker of the task serving it.
pub struct Slot {
    clock: Arc<Clock>,
    deadline_ms: AtomicU64,
    waker: AtomicWaker,
}

/// A wait that ran out of time.
#[derive(Debug, PartialEq, Eq)]
pub struct Elapsed;

impl Clock {
    pub fn new() -> Arc<Clock> {
        Arc::new(Clock {
            epoch: Instant::now(),
            now_ms: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
        })
    }

    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    fn ms_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// A slot for a new connection, looked after by this clock's ticker.
    pub fn slot(self: &Arc<Self>) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            clock: self.clone(),
            deadline_ms: AtomicU64::new(DISARMED),
            waker: AtomicWaker::new(),
        });
        self.slots.lock().unwrap().push(Arc::downgrade(&slot));
        slot
    }

    /// One tick: the clock moves on, expired slots are disarmed and their
    /// connections woken, slots of closed connections are forgotten.
    fn tick(&self) {
        let now = self.ms_of(Instant::now());
        self.now_ms.store(now, Ordering::Relaxed);
        self.slots.lock().unwrap().retain(|weak| {
            let Some(slot) = weak.upgrade() else {
                return false;
            };
            if slot.deadline_ms.load(Ordering::Relaxed) <= now {
                slot.deadline_ms.store(DISARMED, Ordering::Relaxed);
                slot.waker.wake();
            }
            true
        });
    }

    /// The ticker, run on the loop whose connections use this clock, calling
    /// `each_tick` after every tick. It holds the clock weakly and ends when the
    /// loop's proxy lets it go.
    pub async fn run(clock: Weak<Clock>, mut each_tick: impl FnMut()) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match clock.upgrade() {
                Some(c) => c.tick(),
                None => return,
            }
            each_tick();
        }
    }
}

impl Slot {
    fn arm(&self, deadline_ms: u64, waker: &Waker) {
        self.waker.register(waker);
        self.deadline_ms.fetch_min(deadline_ms, Ordering::Relaxed);
    }

    fn deadline_after(&self, d: Duration) -> u64 {
        self.clock
            .now_ms()
            .saturating_add(d.as_millis().min(u64::MAX as u128 / 2) as u64)
    }

    /// `fut`, or `Elapsed` once `limit` has passed (give or take a tick).
    pub async fn within<F: Future>(&self, limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
        let deadline = self.deadline_after(limit);
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            if self.clock.now_ms() >= deadline {
                return Poll::Ready(Err(Elapsed));
            }
            self.arm(deadline, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The connection's timer for hyper (its header read timeout).
    pub fn hyper_timer(self: &Arc<Self>) -> ConnTimer {
        ConnTimer(self.clone())
    }
}

/// hyper's timer for one connection, on its slot.
#[derive(Clone)]
pub struct ConnTimer(Arc<Slot>);

struct CoarseSleep {
    slot: Arc<Slot>,
    deadline_ms: u64,
}

impl Future for CoarseSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.slot.clock.now_ms() >= self.deadline_ms {
            return Poll::Ready(());
        }
        self.slot.arm(self.deadline_ms, cx.waker());
        Poll::Pending
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep {
            slot: self.0.clone(),
            deadline_ms: self.0.deadline_after(duration),
        })
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep {
            slot: self.0.clone(),
            deadline_ms: self.0.clock.ms_of(deadline),
        })
    }

    /// The time of the last tick: deadlines are counted from it, with no clock read.
    fn now(&self) -> Instant {
        self.0.clock.epoch + Duration::from_millis(self.0.clock.now_ms())
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(mut s) => s.deadline_ms = self.0.clock.ms_of(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_wait_ends_within_a_tick_of_its_limit_and_a_prompt_one_is_untouched() {
        let clock = Clock::new();
        tokio::spawn(Clock::run(Arc::downgrade(&clock), || {}));
        let slot = clock.slot();
        assert_eq!(
            slot.within(Duration::from_secs(5), async { 7 }).await,
            Ok(7)
        );
        let t0 = Instant::now();
        let r = slot
            .within(Duration::from_millis(300), std::future::pending::<()>())
            .await;
        let took = t0.elapsed();
        assert_eq!(r, Err(Elapsed));
        assert!(took >= Duration::from_millis(200), "ended early: {took:?}");
        assert!(
            took < Duration::from_millis(300) + 3 * TICK,
            "ended late: {took:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stale_earlier_deadline_does_not_end_a_later_wait() {
        let clock = Clock::new();
        tokio::spawn(Clock::run(Arc::downgrade(&clock), || {}));
        let slot = clock.slot();
        let timer = slot.hyper_timer();
        // A head read that finished at once leaves its deadline armed.
        let mut first = hyper::rt::Timer::sleep(&timer, Duration::from_millis(100));
        assert!(futures::poll!(first.as_mut()).is_pending());
        drop(first);
        // The next wait outlives it, woken once for nothing on the way.
        let t0 = Instant::now();
        let r = slot
            .within(
                Duration::from_millis(500),
                tokio::time::sleep(Duration::from_millis(350)),
            )
            .await;
        assert_eq!(
            r,
            Ok(()),
            "a later wait was cut short after {:?}",
            t0.elapsed()
        );
        // A hyper sleep fires too, and once the connection is gone so is its slot.
        hyper::rt::Timer::sleep(&timer, Duration::from_millis(150)).await;
        drop((timer, slot));
        clock.tick();
        assert!(clock.slots.lock().unwrap().is_empty());
    }
}
