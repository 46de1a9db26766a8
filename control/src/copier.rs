//! The copier's control thread: it owns the header-return channel and links the workers to it.
//!
//! ```text
//!  worker i ── SessionAdd ──► adds_i (SPSC) ──┐                 ┌──► intercept 1..N (CLIENT_ADD)
//!                                             ├─► control ──────┤
//!  worker i ◄── HeaderMsg ◄── headers_i ◄─────┘   thread        └──◄ headers (64-byte messages)
//! ```
//!
//! A session belongs to the worker whose RX queue sees its client's packets, so the worker tells
//! the control thread (with the CLIENT_ADD request) and the control thread remembers
//! client → worker to route the returned headers. The queues are bounded lock-free
//! `ArrayQueue`s; overflow is counted, never blocks. A worker that sleeps in `poll()` is woken
//! through the `wake` callback it registered (an eventfd in the dataplane) when a header arrives.

use std::{
    collections::HashMap,
    net::SocketAddrV4,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crossbeam_queue::ArrayQueue;

use crate::channel::{ChannelClient, ChannelError, ClientStats, HeaderMsg};

/// A worker's request to register a session with the intercepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionAdd {
    /// The client address as sent to the test server.
    pub client: SocketAddrV4,
    /// The test server.
    pub target: SocketAddrV4,
}

/// One worker's two queues and its doorbell.
pub struct WorkerLink {
    /// Worker → control: sessions to register.
    pub adds: ArrayQueue<SessionAdd>,
    /// Control → worker: returned headers of the worker's sessions.
    pub headers: ArrayQueue<HeaderMsg>,
    /// Set by the worker before it blocks, cleared when it wakes.
    pub sleeping: AtomicBool,
    /// Wakes the worker (called only when `sleeping` is set).
    wake: Box<dyn Fn() + Send + Sync>,
    /// Headers dropped because `headers` was full.
    pub headers_dropped: AtomicU64,
    /// Session registrations dropped because `adds` was full (counted by the worker).
    pub adds_dropped: AtomicU64,
}

impl WorkerLink {
    /// Creates a link with queues of `capacity` entries and the worker's wake-up callback.
    pub fn new(capacity: usize, wake: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            adds: ArrayQueue::new(capacity),
            headers: ArrayQueue::new(capacity),
            sleeping: AtomicBool::new(false),
            wake: Box::new(wake),
            headers_dropped: AtomicU64::new(0),
            adds_dropped: AtomicU64::new(0),
        }
    }

    /// Worker side: queues a registration; false (and counted) when the queue is full.
    pub fn push_add(&self, add: SessionAdd) -> bool {
        if self.adds.push(add).is_err() {
            self.adds_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn deliver(&self, h: HeaderMsg) {
        if self.headers.push(h).is_err() {
            self.headers_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if self.sleeping.load(Ordering::Acquire) {
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
        /// Registrations no intercept took (none connected).
        counter register_failed,
        /// Headers handed to a worker.
        counter routed,
        /// Headers for a client no worker registered (late, or another copier's).
        counter unowned,
        /// Headers dropped because the worker's queue was full.
        counter headers_dropped,
        /// Registrations dropped because a worker's queue was full.
        counter adds_dropped,
        /// Established channel connections now.
        gauge connected,
        /// The channel client's counters.
        group channel: ClientStats,
    }
}

/// How long a client → worker entry lives after its last registration: well past any session
/// timeout, so late headers still find their worker; then it is swept.
const OWNER_TTL: Duration = Duration::from_secs(900);

/// The control thread's state.
pub struct Control {
    client: ChannelClient,
    links: Vec<Arc<WorkerLink>>,
    owners: HashMap<SocketAddrV4, (usize, Instant)>,
    stats: ControlStats,
    last_sweep: Instant,
}

impl Control {
    /// Links the channel client to the workers.
    pub fn new(client: ChannelClient, links: Vec<Arc<WorkerLink>>) -> Self {
        Self { client, links, owners: HashMap::new(), stats: ControlStats::default(), last_sweep: Instant::now() }
    }

    /// One round: forward the workers' registrations, drive the channel for up to `timeout`,
    /// route the headers that came back. Returns the number of headers routed.
    ///
    /// # Errors
    /// Only when the event loop itself fails; connection trouble is handled by reconnecting.
    pub fn run_once(&mut self, timeout: Duration) -> Result<usize, ChannelError> {
        let now = Instant::now();
        let mut pending = false;
        for (i, link) in self.links.iter().enumerate() {
            while let Some(add) = link.adds.pop() {
                pending = true;
                self.owners.insert(add.client, (i, now));
                if self.client.client_add(add.client, add.target) {
                    self.stats.registered += 1;
                } else {
                    self.stats.register_failed += 1;
                }
            }
        }
        let timeout = if pending { Duration::ZERO } else { timeout };
        let (links, owners, stats) = (&self.links, &self.owners, &mut self.stats);
        let n = self.client.poll(timeout, |h| match owners.get(&h.client()) {
            Some(&(w, _)) => {
                stats.routed += 1;
                links[w].deliver(h);
            }
            None => stats.unowned += 1,
        })?;
        if now.duration_since(self.last_sweep) > Duration::from_secs(10) {
            self.last_sweep = now;
            self.owners.retain(|_, (_, at)| now.duration_since(*at) < OWNER_TTL);
        }
        Ok(n)
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
        s.channel = self.client.stats();
        s.connected = self.client.connected() as u64;
        s
    }
}
