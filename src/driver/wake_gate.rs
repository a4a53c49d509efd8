//! Polling only the sources that woke the task.
//!
//! A call's task waits on both sockets, its timers and its end signal in one `select!`, which
//! polls every branch on every wake-up: a caller frame (50 a second) also polled the agent
//! socket and the end signal. A socket that is not ready still takes tokio's readiness lock and
//! re-registers tungstenite's wakers, and a `watch` receiver takes its channel's lock: together
//! about a tenth of ignis's CPU in the issue 16 profile. This is what `FuturesUnordered` does
//! for a set of futures: each gated source gets its own waker, which marks it and wakes the
//! task, and a source is only polled again once it has been marked (or after it produced
//! something, since it may hold more).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The task the gates of one `select!` wake.
#[derive(Default)]
pub(super) struct GateSet {
    task: AtomicWaker,
}

struct Flag {
    woken: AtomicBool,
    set: Arc<GateSet>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.set.task.wake();
    }
}

/// One gated source of a [`GateSet`].
pub(super) struct Gate {
    flag: Arc<Flag>,
    /// The source's waker, made once (a `Waker` from an `Arc` costs a reference count, not an
    /// allocation, per clone).
    waker: Waker,
}

impl Gate {
    /// A gate of `set`, open for its first poll.
    pub(super) fn new(set: &Arc<GateSet>) -> Gate {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            set: Arc::clone(set),
        });
        Gate {
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }

    /// Opens the gate: the source is polled on the next turn whether or not it woke (a source
    /// that was absent and is now present).
    pub(super) fn open(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }

    /// Polls the source with `poll` if it woke since it last returned `Pending`, else returns
    /// `Pending` at once. `cx` is the task's: it is what the gate's waker wakes.
    pub(super) fn poll<T>(
        &self,
        cx: &Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.flag.set.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let result = poll(&mut Context::from_waker(&self.waker));
        if result.is_ready() {
            // It may have more ready at once: poll it again next turn.
            self.open();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts the task's wake-ups.
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A source that counts its polls and keeps the last waker it was given.
    #[derive(Default)]
    struct Source {
        polls: std::cell::Cell<usize>,
        waker: std::cell::RefCell<Option<Waker>>,
    }

    impl Source {
        fn poll(&self, cx: &mut Context<'_>, ready: bool) -> Poll<()> {
            self.polls.set(self.polls.get() + 1);
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn a_source_is_polled_first_after_its_wake_and_after_a_result() {
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let task_waker = Waker::from(Arc::clone(&task));
        let cx = Context::from_waker(&task_waker);
        let set = Arc::new(GateSet::default());
        let gate = Gate::new(&set);
        let source = Source::default();
        // First poll goes through; then it stays shut until the source's waker fires.
        assert!(gate.poll(&cx, |c| source.poll(c, false)).is_pending());
        assert!(gate.poll(&cx, |c| source.poll(c, true)).is_pending());
        assert_eq!(source.polls.get(), 1);
        let waker = source.waker.borrow_mut().take();
        waker
            .expect("the source keeps the waker of its poll")
            .wake();
        assert_eq!(task.0.load(Ordering::Relaxed), 1, "the task was woken");
        // Ready: polled again next time without a wake-up.
        assert!(gate.poll(&cx, |c| source.poll(c, true)).is_ready());
        assert!(gate.poll(&cx, |c| source.poll(c, false)).is_pending());
        assert!(gate.poll(&cx, |c| source.poll(c, true)).is_pending());
        assert_eq!(source.polls.get(), 3);
        gate.open();
        assert!(gate.poll(&cx, |c| source.poll(c, true)).is_ready());
        assert_eq!(source.polls.get(), 4);
    }
}
