//! The store's worker threads.
//!
//! With SQLite one thread owns the [`Store`] (and so the connection); every operation is a job
//! sent over a bounded crossbeam channel and run in arrival order. This keeps blocking database
//! work off the async runtime's workers and makes SQLite's single-writer rule explicit. With
//! PostgreSQL, [`PG_STORE_WORKERS`] threads, each with its own [`super::PgStore`] on the shared
//! pool, take jobs from the same channel (docs/replicas.md §3): jobs start in arrival order but
//! may overlap. Results go back through whatever the job captures: a callback (the async driver
//! wraps a tokio oneshot sender), or the crossbeam receiver returned by [`StoreHandle::call`].

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::{Store, StoreError};

/// Jobs that may wait for the workers before requests (tools, staff, admin) are refused with
/// 503 `busy`: a bounded backlog rather than an ever-later answer.
pub const REQUEST_QUEUE_LIMIT: usize = 256;
/// The queue's hard bound. Above [`REQUEST_QUEUE_LIMIT`] only a call's own records (its start
/// and end, [`StoreHandle::submit_record`]) are still taken: a burst of hang-ups (a drain, a
/// network blip ending many calls at once) must not lose their ends while the requests that a
/// caller could retry are refused.
pub const STORE_QUEUE_CAPACITY: usize = 4096;

/// Worker threads of a PostgreSQL store: tool requests of different calls run in parallel, each
/// worker holding at most one pooled connection (well under [`crate::pg::MAX_POOL_SIZE`]).
pub const PG_STORE_WORKERS: usize = 4;

/// The store's worker threads (returned at start-up; they end when every handle is dropped).
/// Dropping this detaches them.
#[derive(Debug)]
pub struct StoreThread {
    threads: Vec<JoinHandle<()>>,
}

impl StoreThread {
    /// Waits for every worker to end; `Err` with the first panic's payload if one panicked.
    pub fn join(self) -> std::thread::Result<()> {
        let mut result = Ok(());
        for t in self.threads {
            if let Err(e) = t.join()
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }
}

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

/// A worker's loop: runs jobs until every handle is dropped.
fn work(mut store: Box<dyn Store>, rx: Receiver<Job>) {
    for job in rx {
        // A panicking job is a bug; it must not take the phone line's store down with it. Its
        // open transaction rolls back while unwinding, and its reply callback is dropped
        // uncalled (the waiting side sees a closed channel).
        let run = std::panic::AssertUnwindSafe(|| job(store.as_mut()));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!("store job panicked; the store thread continues");
        }
        // Released after the reply went out: the job's writes are committed already.
        store.end_job();
    }
}

impl StoreHandle {
    /// Moves `store` onto a new thread named `ignis-store` and returns the handle and the thread.
    pub fn spawn(store: Box<dyn Store>) -> std::io::Result<(StoreHandle, StoreThread)> {
        Self::spawn_workers(vec![store])
    }

    /// One worker thread per store (`ignis-store-<i>`), all taking jobs from one queue: for
    /// stores that share a database safely (PostgreSQL). `stores` must not be empty.
    pub fn spawn_workers(
        stores: Vec<Box<dyn Store>>,
    ) -> std::io::Result<(StoreHandle, StoreThread)> {
        let (tx, rx) = bounded::<Job>(STORE_QUEUE_CAPACITY);
        let single = stores.len() == 1;
        let mut threads = Vec::with_capacity(stores.len());
        for (i, store) in stores.into_iter().enumerate() {
            let rx = rx.clone();
            let name = if single {
                "ignis-store".to_owned()
            } else {
                format!("ignis-store-{i}")
            };
            threads.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || work(store, rx))?,
            );
        }
        if threads.is_empty() {
            return Err(std::io::Error::other("a store needs at least one worker"));
        }
        Ok((StoreHandle { tx }, StoreThread { threads }))
    }

    /// Queues a job without blocking; refused ([`SubmitError::Busy`]) once
    /// [`REQUEST_QUEUE_LIMIT`] jobs wait.
    pub fn submit(
        &self,
        job: impl FnOnce(&mut dyn Store) + Send + 'static,
    ) -> Result<(), SubmitError> {
        if self.tx.len() >= REQUEST_QUEUE_LIMIT {
            return Err(SubmitError::Busy);
        }
        self.submit_record(job)
    }

    /// Queues a call's own record (start, end) without blocking, up to the queue's hard bound
    /// [`STORE_QUEUE_CAPACITY`].
    pub fn submit_record(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::practice::store::SqliteStore;

    #[test]
    fn requests_are_refused_at_their_limit_but_call_records_still_queue() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (handle, _thread) = StoreHandle::spawn(Box::new(store)).unwrap();
        // Hold the one worker until the queue has been filled.
        let (release_tx, release_rx) = bounded::<()>(0);
        let (started_tx, started_rx) = bounded::<()>(0);
        handle
            .submit(move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
            .unwrap();
        started_rx.recv().unwrap();
        for _ in 0..REQUEST_QUEUE_LIMIT {
            handle.submit(|_| {}).unwrap();
        }
        assert_eq!(handle.submit(|_| {}), Err(SubmitError::Busy));
        let (done_tx, done_rx) = bounded::<()>(1);
        handle
            .submit_record(move |_| done_tx.send(()).unwrap())
            .unwrap();
        release_tx.send(()).unwrap();
        done_rx.recv().unwrap();
    }
}
