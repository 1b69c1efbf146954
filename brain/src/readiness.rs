//! Whether a brain can do its job: it knows who leads (itself, or the brain holding
//! the lock), as the BBS last told it. `lattice brain` serves it as `GET /readyz`.

use std::sync::{Arc, Mutex};

/// Who leads, as last learnt from the BBS, or why that is not known.
#[derive(Debug, Clone)]
pub struct KnownLeader(Arc<Mutex<Result<String, String>>>);

impl Default for KnownLeader {
    fn default() -> Self {
        KnownLeader(Arc::new(Mutex::new(Err(
            "has not asked the BBS for the brain lock yet".into(),
        ))))
    }
}

impl KnownLeader {
    /// The BBS answered: `leader` holds the lock.
    pub fn known(&self, leader: &str) {
        *self.0.lock().unwrap() = Ok(leader.to_string());
    }

    /// The BBS did not answer (why): who leads is not known.
    pub fn unknown(&self, why: String) {
        *self.0.lock().unwrap() = Err(why);
    }

    /// The leader's id (ready), or why it is not known (not ready).
    pub fn get(&self) -> Result<String, String> {
        self.0.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_answer_decides() {
        let k = KnownLeader::default();
        assert!(k.get().unwrap_err().contains("not asked"));
        k.known("brain-1");
        assert_eq!(k.clone().get(), Ok("brain-1".into()), "clones share it");
        k.unknown("the BBS is unreachable".into());
        assert_eq!(k.get(), Err("the BBS is unreachable".into()));
    }
}
