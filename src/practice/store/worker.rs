//! The store's writer thread.
//!
//! One thread owns the [`Store`] (and so the SQLite connection); every operation is a job sent
//! over a bounded crossbeam channel and run in arrival order. This keeps blocking database work
//! off the async runtime's workers and makes SQLite's single-writer rule explicit. Results go back
//! through whatever the job captures: a callback (the async driver wraps a tokio oneshot sender),
//! or the crossbeam receiver returned by [`StoreHandle::call`].

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::{Store, StoreError};

/// Jobs that may wait for the writer thread before submissions are refused.
pub const STORE_QUEUE_CAPACITY: usize = 256;

/// The writer thread's join handle (returned at start-up; it ends when every handle is dropped).
pub type StoreThread = JoinHandle<()>;

/// A unit of work run on the writer thread.
pub type Job = Box<dyn FnOnce(&mut dyn Store) + Send + 'static>;

/// Why a job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full (answer 503 and let the client retry).
    Busy,
    /// The writer thread has stopped.
    Closed,
}

impl From<SubmitError> for StoreError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Busy => StoreError::Busy,
            SubmitError::Closed => StoreError::Closed,
        }
    }
}

/// A cloneable handle to the writer thread. The thread stops when every handle is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    tx: Sender<Job>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreHandle")
    }
}

impl StoreHandle {
    /// Moves `store` onto a new thread named `ignis-store` and returns the handle and the thread.
    pub fn spawn(store: Box<dyn Store>) -> std::io::Result<(StoreHandle, StoreThread)> {
        let (tx, rx) = bounded::<Job>(STORE_QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("ignis-store".into())
            .spawn(move || {
                let mut store = store;
                for job in rx {
                    // A panicking job is a bug; it must not take the phone line's store down with
                    // it. Its open transaction rolls back while unwinding, and its reply callback
                    // is dropped uncalled (the waiting side sees a closed channel).
                    let run = std::panic::AssertUnwindSafe(|| job(store.as_mut()));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("store job panicked; the store thread continues");
                    }
                }
            })?;
        Ok((StoreHandle { tx }, thread))
    }

    /// Queues a job without blocking.
    pub fn submit(
        &self,
        job: impl FnOnce(&mut dyn Store) + Send + 'static,
    ) -> Result<(), SubmitError> {
        match self.tx.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Queues `job` and hands its result to `reply`; when the queue refuses the job, `reply`
    /// gets `refused(why)` at once instead. Either way `reply` is called exactly once (unless
    /// the job panics), so an HTTP request always gets its answer.
    pub fn submit_with_reply<R: 'static>(
        &self,
        reply: impl FnOnce(R) + Send + 'static,
        job: impl FnOnce(&mut dyn Store) -> R + Send + 'static,
        refused: impl FnOnce(SubmitError) -> R,
    ) {
        // The callback is shared with the job so it can still be answered if the queue refuses it.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(reply)));
        let in_job = std::sync::Arc::clone(&slot);
        let result = self.submit(move |store| {
            let r = job(store);
            if let Some(f) = in_job.lock().ok().and_then(|mut s| s.take()) {
                f(r);
            }
        });
        if let Err(e) = result
            && let Some(f) = slot.lock().ok().and_then(|mut s| s.take())
        {
            f(refused(e));
        }
    }

    /// Queues `f` and returns a receiver for its result (blocking callers: tests, CLI, start-up).
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> T + Send + 'static,
    ) -> Result<Receiver<T>, SubmitError> {
        let (tx, rx) = bounded(1);
        self.submit(move |s| {
            // The receiver may have been dropped; then nobody wants the result.
            let _ = tx.send(f(s));
        })?;
        Ok(rx)
    }

    /// Runs `f` on the writer thread and waits for the result.
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> T + Send + 'static,
    ) -> Result<T, SubmitError> {
        self.call(f)?.recv().map_err(|_| SubmitError::Closed)
    }
}
