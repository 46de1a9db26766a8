//! The control loop run by the worker itself when there is one worker (one RX queue: veth, a
//! single-queue NIC, most offline runs).
//!
//! With a control thread, a returned header wakes two threads: the control thread (its epoll
//! sees the channel socket), which queues the header and rings the worker's doorbell, then the
//! worker. On a host where each wake-up costs ~20 µs that hop was a third of what a paced request
//! cost the copier. With one worker nothing needs routing between threads, so the worker waits on
//! the channel's event loop beside its AF_XDP socket and drives [`Control`] itself: a header is
//! read by the thread that uses it, and a registration goes out in the round that queued it,
//! before the SYN that needs it is kicked.
//!
//! [`Control`] is the same object the control thread runs (one registry, one reconnect logic,
//! one set of counters); only who calls [`Control::run_once`] changes. Its counters are published
//! the same way as the control thread publishes them.

use std::{
    os::fd::BorrowedFd,
    sync::Arc,
    time::{Duration, Instant},
};

use control::{
    channel::ChannelError,
    copier::{Control, ControlStats},
    counters::Published,
};

/// A busy worker (one that does not sleep, so never sees the event loop's descriptor) drives the
/// channel at least this often.
const POLL_EVERY: Duration = Duration::from_micros(20);
/// How often the channel's counters are published.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The control loop, owned by the only worker.
pub struct InlineControl {
    control: Control,
    published: Arc<Published<ControlStats>>,
    /// The event loop polled readable in the worker's last sleep.
    ready: bool,
    last_run: Instant,
    last_publish: Instant,
}

impl InlineControl {
    /// Takes over `control`, publishing its counters to `published`.
    pub fn new(control: Control, published: Arc<Published<ControlStats>>) -> Self {
        let now = Instant::now();
        Self { control, published, ready: true, last_run: now, last_publish: now }
    }

    /// The channel's event-loop descriptor, for the worker's `poll()`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.control.event_fd()
    }

    /// The worker's sleep ended with the event loop readable.
    pub fn mark_ready(&mut self) {
        self.ready = true;
    }

    /// Runs a round of the control loop without blocking when the event loop is readable, the
    /// worker queued session registrations (`ops_waiting`), a read budget left bytes
    /// ([`pending`](Self::pending)), or [`POLL_EVERY`] has passed (a busy
    /// worker, the channel's own timers: reconnect backoff, connect and negotiation timeouts).
    ///
    /// # Errors
    /// Only when the event loop itself fails (as [`Control::run_once`]).
    pub fn drive(&mut self, now: Instant, ops_waiting: bool) -> Result<(), ChannelError> {
        if !(self.ready || ops_waiting || self.pending() || now.saturating_duration_since(self.last_run) >= POLL_EVERY)
        {
            return Ok(());
        }
        self.ready = false;
        self.last_run = now;
        self.control.run_once(Duration::ZERO)?;
        if now.saturating_duration_since(self.last_publish) >= PUBLISH_EVERY {
            self.publish(now);
        }
        Ok(())
    }

    /// Whether the channel has bytes left to read that no event will announce: the worker runs
    /// another round instead of sleeping.
    pub fn pending(&self) -> bool {
        self.control.has_backlog()
    }

    /// Publishes the counters now (also at exit).
    pub fn publish(&mut self, now: Instant) {
        self.last_publish = now;
        self.published.publish(&self.control.stats());
    }
}
