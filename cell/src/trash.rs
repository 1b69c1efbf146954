//! Deleting what destroyed containers leave (their writable layer, bundle and files).
//! A directory is moved into `DATA/trash` at once (one rename, so its name is free
//! again) and deleted later by one thread of its own at the lowest priority (nice 19):
//! the deletion (a millisecond or more of a core and of the filesystem's journal per
//! container) then runs mostly when a core has nothing else to do, instead of
//! preempting the next container's start.
//!
//! Not the idle scheduling class: deleting takes the filesystem's journal, and an
//! idle-class thread preempted while it holds a journal handle could be starved for
//! long by busy containers while every other writer of that filesystem (the executor
//! among them) waits for the journal. A nice-19 thread still gets a bounded share of
//! a core, so neither that wait nor the trash grows without bound.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

pub struct Trash {
    dir: PathBuf,
    /// To the deleting thread; `None` once closed (or when the thread could not start).
    queue: Mutex<Option<mpsc::Sender<PathBuf>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Trash {
    /// The trash in `dir`. What an earlier run left there is deleted first, on the
    /// deleting thread.
    pub fn new(dir: PathBuf) -> Trash {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = tx.send(entry.path());
        }
        let thread = std::thread::Builder::new()
            .name("trash".into())
            .spawn(move || {
                // Any thread may lower its own priority. (`who` 0 with PRIO_PROCESS
                // is the calling thread on Linux.)
                // SAFETY: a plain system call.
                if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
                    tracing::debug!(
                        "the trash deletes at normal priority: {}",
                        std::io::Error::last_os_error()
                    );
                }
                for doomed in rx {
                    remove(&doomed);
                }
            });
        let (queue, thread) = match thread {
            Ok(t) => (Some(tx), Some(t)),
            Err(e) => {
                tracing::warn!("no thread for the trash ({e}): deleting in place");
                remove(&dir);
                (None, None)
            }
        };
        Trash {
            dir,
            queue: Mutex::new(queue),
            thread: Mutex::new(thread),
        }
    }

    /// Moves `path` (a directory) out of the way now and deletes it later. A path
    /// that is not there is fine; one that cannot be moved into the trash (another
    /// filesystem) is deleted where it is, later too.
    pub fn discard(&self, path: &Path) {
        let _ = std::fs::create_dir_all(&self.dir);
        let target = self.dir.join(uuid::Uuid::new_v4().simple().to_string());
        let doomed = match std::fs::rename(path, &target) {
            Ok(()) => target,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => path.to_path_buf(),
        };
        let queued = match self.queue.lock().unwrap().as_ref() {
            Some(q) => q.send(doomed).map_err(|mpsc::SendError(d)| d),
            None => Err(doomed),
        };
        if let Err(doomed) = queued {
            remove(&doomed);
        }
    }

    /// Deletes everything discarded so far (whoever closes waits for the thread),
    /// then stops the deleting thread. Later discards delete in place.
    pub fn close(&self) {
        let queue = self.queue.lock().unwrap().take();
        drop(queue);
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Trash {
    fn drop(&mut self) {
        // The thread finishes what was queued on its own; nobody waits for it.
        self.queue.lock().unwrap().take();
    }
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("removing {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
    }

    #[test]
    fn discarded_directories_are_moved_at_once_and_deleted_later() {
        let tmp = tempfile::tempdir().unwrap();
        let trash = Trash::new(tmp.path().join("trash"));
        let doomed = tmp.path().join("c1");
        tree(&doomed);
        trash.discard(&doomed);
        assert!(!doomed.exists(), "the name is free at once");
        // Not there at all: nothing to do.
        trash.discard(&tmp.path().join("never"));
        trash.close();
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("trash"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "left in the trash: {left:?}");
        // After close, a discard deletes in place.
        tree(&doomed);
        trash.discard(&doomed);
        assert!(!doomed.exists());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("trash")).unwrap().count(),
            0
        );
    }

    #[test]
    fn what_an_earlier_run_left_is_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        tree(&tmp.path().join("trash/old"));
        let trash = Trash::new(tmp.path().join("trash"));
        trash.close();
        assert_eq!(
            std::fs::read_dir(tmp.path().join("trash")).unwrap().count(),
            0
        );
    }
}
