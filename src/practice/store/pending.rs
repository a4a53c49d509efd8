//! Call registrations queued but not yet committed.
//!
//! [`crate::practice::Practice::start_call`] hands the call's token to the agent before the
//! registration commits. With SQLite's single worker the registration job runs before any
//! tool request the agent can make; with several PostgreSQL workers a tool request may start
//! while its call's registration still runs on another worker, so the tool job first waits
//! (at most [`REGISTRATION_WAIT`]) for a registration of its token that is in flight on this
//! replica. The registration was queued earlier, so it is already running: no deadlock.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Longest a tool job waits for its call's registration (a commit; normally milliseconds).
pub const REGISTRATION_WAIT: Duration = Duration::from_secs(5);

/// The token hashes whose registration is queued or running.
#[derive(Debug, Default)]
pub struct Registrations {
    pending: Mutex<HashSet<[u8; 32]>>,
    changed: Condvar,
}

/// A registration in flight; dropping it (after the commit, or with a refused or panicking
/// job) ends the wait of the tool jobs of its token.
#[derive(Debug)]
pub struct Pending {
    owner: Arc<Registrations>,
    hash: [u8; 32],
}

impl Registrations {
    /// Marks `hash` as being registered until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>, hash: [u8; 32]) -> Pending {
        if let Ok(mut p) = self.pending.lock() {
            p.insert(hash);
        }
        Pending {
            owner: Arc::clone(self),
            hash,
        }
    }

    /// Waits while a registration of `hash` is in flight, at most [`REGISTRATION_WAIT`].
    pub fn wait_for(&self, hash: &[u8; 32]) {
        let Ok(guard) = self.pending.lock() else {
            return;
        };
        let _ = self
            .changed
            .wait_timeout_while(guard, REGISTRATION_WAIT, |p| p.contains(hash));
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut p) = self.owner.pending.lock() {
            p.remove(&self.hash);
        }
        self.owner.changed.notify_all();
    }
}
