//! The copier's control thread: it owns the header-return channel and links the workers to it.
//!
//! ```text
//!  worker i ── SessionOp ───► ops_i (SPSC) ───┐                 ┌──► intercept 1..N (CLIENT_ADD/DEL)
//!                                             ├─► control ──────┤
//!  worker i ◄── HeaderMsg ◄── headers_i ◄─────┘   thread        └──◄ headers (64-byte messages)
//! ```
//!
//! A session belongs to the worker whose RX queue sees its client's packets, so the worker tells
//! the control thread (CLIENT_ADD when the session opens, CLIENT_DEL when the engine finally
//! removes it, in order on one queue), and the channel client remembers session → worker to
//! route the returned headers and to re-register live sessions with an intercept that
//! reconnects. That registry is bounded (sized from the workers' session tables, see
//! [`ChannelClient::set_session_limits`]); CLIENT_DEL keeps it to the live sessions, a TTL
//! catches a lost one. The queues are bounded lock-free `ArrayQueue`s; overflow is counted,
//! never blocks. A worker that sleeps in `poll()` is woken through the `wake` callback it
//! registered (an eventfd in the dataplane) when a header arrives.
//!
//! With a single worker there is nothing to route between threads: that worker runs [`Control`]
//! itself (`dataplane::worker::inline`), waiting on [`Control::event_fd`] beside its socket and
//! calling [`Control::run_once`] with a zero timeout; its queues are then the same thread's.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crossbeam_queue::ArrayQueue;

use crate::channel::{ChannelClient, ChannelError, ClientStats, HeaderMsg};

/// A session as the worker names it to the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionAdd {
    /// The client address as sent to the test server (IPv4 or IPv6).
    pub client: SocketAddr,
    /// The test server (the client's family).
    pub target: SocketAddr,
}

/// A worker's request about one of its sessions; both kinds share one queue, so a port reuse's
/// CLIENT_DEL (old session) and CLIENT_ADD (new one) stay in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOp {
    /// Register the session with the intercepts (CLIENT_ADD).
    Add(SessionAdd),
    /// The session is gone: forget it (CLIENT_DEL).
    Del(SessionAdd),
}

/// One worker's two queues and its doorbell.
pub struct WorkerLink {
    /// Worker → control: sessions to register and to forget.
    pub ops: ArrayQueue<SessionOp>,
    /// Control → worker: returned headers of the worker's sessions.
    pub headers: ArrayQueue<HeaderMsg>,
    /// Set by the worker before it blocks, cleared when it wakes.
    pub sleeping: AtomicBool,
    /// Wakes the worker (called only when `sleeping` is set).
    wake: Box<dyn Fn() + Send + Sync>,
    /// Headers dropped because `headers` was full.
    pub headers_dropped: AtomicU64,
    /// Session registrations dropped because `ops` was full (counted by the worker).
    pub adds_dropped: AtomicU64,
    /// CLIENT_DEL requests dropped because `ops` was full (the control thread's TTL catches them).
    pub dels_dropped: AtomicU64,
}

impl WorkerLink {
    /// Creates a link with queues of `capacity` entries and the worker's wake-up callback.
    pub fn new(capacity: usize, wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            ops: ArrayQueue::new(capacity),
            headers: ArrayQueue::new(capacity),
            sleeping: AtomicBool::new(false),
            wake: Box::new(wake),
            headers_dropped: AtomicU64::new(0),
            adds_dropped: AtomicU64::new(0),
            dels_dropped: AtomicU64::new(0),
        }
    }

    /// Worker side: queues a registration; false (and counted) when the queue is full.
    pub fn push_add(&self, add: SessionAdd) -> bool {
        if self.ops.push(SessionOp::Add(add)).is_err() {
            self.adds_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Worker side: queues the end of a session; false (and counted) when the queue is full.
    /// Needs no wake-up: it rides along with the next registration or the control thread's tick.
    pub fn push_del(&self, del: SessionAdd) -> bool {
        if self.ops.push(SessionOp::Del(del)).is_err() {
            self.dels_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Control side: queues a header for the worker (counted when the queue is full). The
    /// worker is woken once per batch, by [`WorkerLink::wake_if_sleeping`].
    fn queue(&self, h: HeaderMsg) {
        if self.headers.push(h).is_err() {
            self.headers_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Control side, after a batch: wakes the worker if headers wait and it sleeps.
    fn wake_if_sleeping(&self) {
        if self.headers.is_empty() {
            return;
        }
        // Pairs with the worker's fence between announcing it sleeps and looking at the queue
        // (a store then a load on each side: without both fences each side can miss the other's
        // store, and the worker sleeps its full timeout with a header waiting).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            (self.wake)();
        }
    }
}

crate::counters! {
    /// Counters of the control thread and its channel client; shown with the prefix `channel_`.
    #[derive(Copy)]
    pub struct ControlStats {
        /// Sessions registered with at least one intercept.
        counter registered,
        /// Registrations no intercept took at once (none connected, or the registry full).
        counter register_failed,
        /// Sessions ended by their worker (CLIENT_DEL requested).
        counter deregistered,
        /// Headers handed to a worker.
        counter routed,
        /// Headers for a client no worker registered (late, or another copier's).
        counter unowned,
        /// Headers dropped because the worker's queue was full.
        counter headers_dropped,
        /// Registrations dropped because a worker's queue was full.
        counter adds_dropped,
        /// CLIENT_DEL requests dropped because a worker's queue was full.
        counter dels_dropped,
        /// Established channel connections now.
        gauge connected,
        /// The channel client's counters.
        group channel: ClientStats,
    }
}

/// The control thread's state.
pub struct Control {
    client: ChannelClient,
    links: Vec<Arc<WorkerLink>>,
    stats: ControlStats,
}

impl Control {
    /// Links the channel client to the workers. The client's session registry routes headers to
    /// workers (the owner tag is the worker's index): size it with
    /// [`ChannelClient::set_session_limits`].
    pub fn new(client: ChannelClient, links: Vec<Arc<WorkerLink>>) -> Self {
        Self { client, links, stats: ControlStats::default() }
    }

    /// One round: forward the workers' registrations, drive the channel for up to `timeout`,
    /// route the headers that came back. Returns the number of headers routed.
    ///
    /// # Errors
    /// Only when the event loop itself fails; connection trouble is handled by reconnecting.
    pub fn run_once(&mut self, timeout: Duration) -> Result<usize, ChannelError> {
        let mut pending = false;
        for (i, link) in self.links.iter().enumerate() {
            while let Some(op) = link.ops.pop() {
                pending = true;
                match op {
                    SessionOp::Add(s) => {
                        if self.client.register(s.client, s.target, i as u32) {
                            self.stats.registered += 1;
                        } else {
                            self.stats.register_failed += 1;
                        }
                    }
                    SessionOp::Del(s) => {
                        self.stats.deregistered += 1;
                        self.client.client_del(s.client, s.target);
                    }
                }
            }
        }
        let timeout = if pending { Duration::ZERO } else { timeout };
        let (links, stats) = (&self.links, &mut self.stats);
        let n = self.client.poll_owned(timeout, |h, owner| match owner.and_then(|w| links.get(w as usize)) {
            Some(link) => {
                stats.routed += 1;
                link.queue(h);
            }
            None => stats.unowned += 1,
        })?;
        // One doorbell per worker per batch, not one per header: the worker drains its whole
        // queue when it wakes.
        for link in &self.links {
            link.wake_if_sleeping();
        }
        Ok(n)
    }

    /// The channel's event-loop descriptor ([`ChannelClient::event_fd`]): a worker that runs
    /// the control loop itself waits on it beside its socket, then calls
    /// [`run_once`](Self::run_once) with a zero timeout.
    pub fn event_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.client.event_fd()
    }

    /// Whether the channel has bytes left to read without a new event
    /// ([`ChannelClient::has_backlog`]): run another round before waiting.
    pub fn has_backlog(&self) -> bool {
        self.client.has_backlog()
    }

    /// Runs until `stop` is set.
    ///
    /// # Errors
    /// As [`Control::run_once`].
    pub fn run(&mut self, stop: &AtomicBool, slice: Duration) -> Result<(), ChannelError> {
        while !stop.load(Ordering::Relaxed) {
            self.run_once(slice)?;
        }
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ControlStats {
        let mut s = self.stats;
        s.headers_dropped = self.links.iter().map(|l| l.headers_dropped.load(Ordering::Relaxed)).sum();
        s.adds_dropped = self.links.iter().map(|l| l.adds_dropped.load(Ordering::Relaxed)).sum();
        s.dels_dropped = self.links.iter().map(|l| l.dels_dropped.load(Ordering::Relaxed)).sum();
        s.channel = self.client.stats();
        s.connected = self.client.connected() as u64;
        s
    }
}
