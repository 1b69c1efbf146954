//! Wakes whoever follows a container's lifecycle when its shim appends an event: one
//! inotify instance per executor watches every container directory for writes to
//! `events.jsonl`, so the rep hears of an exit the moment the shim writes it instead of
//! at its next poll. Without inotify (or outside a tokio runtime) followers fall back to
//! polling, as before.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

const EVENTS_FILE: &str = "events.jsonl";

#[derive(Default)]
struct State {
    by_wd: HashMap<WatchDescriptor, String>,
    by_handle: HashMap<String, (WatchDescriptor, watch::Sender<u64>)>,
}

impl State {
    fn bump(tx: &watch::Sender<u64>) {
        tx.send_modify(|n| *n += 1);
    }
}

/// The inotify instance, as tokio wants it.
struct Fd(Inotify);

impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(&self.0).as_raw_fd()
    }
}

struct Inner {
    inotify: Arc<AsyncFd<Fd>>,
    state: Arc<Mutex<State>>,
    reader: tokio::task::AbortHandle,
}

/// The executor's watcher of container event files.
pub struct EventWatch {
    inner: Option<Inner>,
}

/// Tells a follower that new events may be there.
pub struct EventSignal {
    rx: Option<watch::Receiver<u64>>,
}

impl EventSignal {
    /// Whether wakes come from the watcher (otherwise the follower must poll).
    pub fn is_live(&self) -> bool {
        self.rx.is_some()
    }

    /// Resolves once events were appended since the last call (or since this signal
    /// was taken); never, when the watcher is not live.
    pub async fn changed(&mut self) {
        match &mut self.rx {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    // The container is no longer watched: nothing will come.
                    self.rx = None;
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending().await,
        }
    }
}

impl EventWatch {
    /// Starts the watcher on the current tokio runtime; an inert watcher (followers
    /// poll) when there is none or inotify is unavailable.
    pub fn new() -> EventWatch {
        let inner = match Self::start() {
            Ok(inner) => Some(inner),
            Err(e) => {
                tracing::warn!("container events will be polled: {e:#}");
                None
            }
        };
        EventWatch { inner }
    }

    fn start() -> anyhow::Result<Inner> {
        let rt = tokio::runtime::Handle::try_current()?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // Inside the runtime's context (try_current succeeded): AsyncFd can register.
        // SAFETY: the instance is ours alone and lives as long as the AsyncFd.
        let inotify = Arc::new(unsafe { AsyncFd::register(Fd(inotify)) }?);
        let state = Arc::new(Mutex::new(State::default()));
        let reader = rt
            .spawn(read_loop(inotify.clone(), Arc::downgrade(&state)))
            .abort_handle();
        Ok(Inner {
            inotify,
            state,
            reader,
        })
    }

    /// Starts watching container `handle`'s directory (which must exist).
    pub fn add(&self, handle: &str, dir: &Path) {
        let Some(inner) = &self.inner else { return };
        let flags = AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE;
        match inner.inotify.get_ref().0.add_watch(dir, flags) {
            Ok(wd) => {
                let mut st = inner.state.lock().unwrap();
                st.by_wd.insert(wd, handle.to_string());
                let tx = watch::Sender::new(0);
                if let Some((old, _)) = st.by_handle.insert(handle.to_string(), (wd, tx)) {
                    if old != wd {
                        st.by_wd.remove(&old);
                    }
                }
            }
            Err(e) => tracing::warn!(handle, "watching {}: {e}", dir.display()),
        }
    }

    /// Stops watching `handle` (its directory is going away).
    pub fn remove(&self, handle: &str) {
        let Some(inner) = &self.inner else { return };
        let mut st = inner.state.lock().unwrap();
        if let Some((wd, _)) = st.by_handle.remove(handle) {
            st.by_wd.remove(&wd);
            let _ = inner.inotify.get_ref().0.rm_watch(wd);
        }
    }

    /// A signal for `handle`'s new events. Take it before reading the events, then
    /// await [`EventSignal::changed`]: nothing written in between is missed.
    pub fn signal(&self, handle: &str) -> EventSignal {
        let rx = self.inner.as_ref().and_then(|inner| {
            let st = inner.state.lock().unwrap();
            st.by_handle.get(handle).map(|(_, tx)| tx.subscribe())
        });
        EventSignal { rx }
    }
}

impl Default for EventWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            inner.reader.abort();
        }
    }
}

async fn read_loop(inotify: Arc<AsyncFd<Fd>>, state: std::sync::Weak<Mutex<State>>) {
    loop {
        let Ok(mut ready) = inotify.readable().await else {
            return;
        };
        let events = match ready.get_inner().0.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EAGAIN) => {
                ready.clear_ready();
                continue;
            }
            Err(e) => {
                tracing::warn!("reading inotify events: {e}; container events will be polled");
                return;
            }
        };
        let Some(state) = state.upgrade() else { return };
        let mut st = state.lock().unwrap();
        for ev in events {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: wake everyone, they re-read their files.
                st.by_handle.values().for_each(|(_, tx)| State::bump(tx));
                continue;
            }
            if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The directory is gone (or unwatched): its followers' channels close.
                if let Some(handle) = st.by_wd.remove(&ev.wd) {
                    if st
                        .by_handle
                        .get(&handle)
                        .is_some_and(|(wd, _)| *wd == ev.wd)
                    {
                        st.by_handle.remove(&handle);
                    }
                }
                continue;
            }
            if ev.name.as_deref() != Some(std::ffi::OsStr::new(EVENTS_FILE)) {
                continue;
            }
            if let Some((_, tx)) = st.by_wd.get(&ev.wd).and_then(|h| st.by_handle.get(h)) {
                State::bump(tx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn appends_to_the_events_file_wake_its_follower_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let w = EventWatch::new();
        w.add("a", &a);
        w.add("b", &b);
        let mut sa = w.signal("a");
        let mut sb = w.signal("b");
        assert!(sa.is_live() && sb.is_live());

        // Other files in the directory wake no one.
        std::fs::write(a.join("shim.log"), "x").unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(100), sa.changed()).await;
        assert!(quiet.is_err(), "a write to another file woke the follower");

        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.join(EVENTS_FILE))
            .unwrap();
        f.write_all(b"{}\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), sa.changed())
            .await
            .expect("the follower of a was not woken");
        let other = tokio::time::timeout(Duration::from_millis(100), sb.changed()).await;
        assert!(other.is_err(), "b's follower woke for a's events");

        // A removed directory ends the watch; its signal never fires again.
        w.remove("a");
        assert!(!w.signal("a").is_live());
    }
}
