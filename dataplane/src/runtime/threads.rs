//! Starting and stopping the copier's threads: one pinned worker per queue, the control thread
//! (session mode with more than one worker: with one, the worker runs the control loop itself,
//! [`crate::worker::inline`]), the offline feed. The stats thread (the caller's) watches them
//! all: a thread that ends before it is told to stops the copier.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use control::{
    copier::{Control, ControlStats},
    counters::{CounterSet, Published},
};

use crate::{feed::Feed, stats::Counters, worker::Worker, xsk::Injector};

/// How long one control round blocks in the channel's event loop.
const CONTROL_SLICE: Duration = Duration::from_millis(50);
/// How often the control thread publishes its counters.
const CONTROL_PUBLISH: Duration = crate::worker::inline::PUBLISH_EVERY;

/// The running threads.
pub(super) struct Threads {
    workers: Vec<JoinHandle<Result<Counters, control::channel::ChannelError>>>,
    /// The control thread (more than one worker).
    control: Option<JoinHandle<Result<()>>>,
    /// The control loop's counters, published by the control thread or the worker running it.
    control_stats: Option<Arc<Published<ControlStats>>>,
    /// The cores the workers are pinned to.
    worker_cores: Vec<usize>,
}

impl Threads {
    /// Starts every worker (worker i pinned to `cores[i % len]`, all cores when `None`) and the
    /// control loop: in the only worker, or on a thread of its own that routes the headers
    /// between several.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(
        mut workers: Vec<Worker>,
        mut control: Option<Control>,
        cores: Option<&[usize]>,
        stop: &Arc<AtomicBool>,
    ) -> Result<Self> {
        let all: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
        let cores = cores.map_or(all, <[usize]>::to_vec);
        let control_stats = control.as_ref().map(|_| Arc::new(Published::<ControlStats>::default()));
        if let (Some(stats), [only]) = (&control_stats, workers.as_mut_slice()) {
            control = control.and_then(|c| only.run_control(c, stats.clone()));
            if control.is_none() {
                eprintln!("xdpcopy: one worker: it runs the channel itself (no control thread)");
            }
        }
        let mut threads = Threads { workers: Vec::new(), control: None, control_stats, worker_cores: Vec::new() };
        for (i, w) in workers.into_iter().enumerate() {
            let core = cores.get(i % cores.len().max(1)).copied();
            threads.worker_cores.extend(core);
            let name = format!("xdpcopy-q{}", w.queue);
            threads.workers.push(thread::Builder::new().name(name).spawn(move || {
                if let Some(id) = core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                w.run()
            })?);
        }
        if let (Some(c), Some(stats)) = (control, &threads.control_stats) {
            threads.control = Some(spawn_control(c, stats.clone(), stop.clone())?);
        }
        Ok(threads)
    }

    /// No threads (what is left after [`Threads::join`]).
    pub fn none() -> Self {
        Threads { workers: Vec::new(), control: None, control_stats: None, worker_cores: Vec::new() }
    }

    /// Whether a worker or the control thread has ended (they run until told to stop).
    pub fn one_ended(&self) -> bool {
        self.workers.iter().any(JoinHandle::is_finished) || self.control.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// The control loop's latest counters (session mode).
    pub fn control_stats(&self) -> Option<ControlStats> {
        self.control_stats.as_ref().map(|p| p.snapshot())
    }

    /// Offline: starts the feed into the workers' injectors once the workers have posted their
    /// fill rings and (session mode) an intercept is connected, on a core no worker uses when
    /// there is one.
    ///
    /// # Errors
    /// When the feed cannot start.
    pub fn start_feed(
        &self,
        feed: &mut Feed,
        injectors: Vec<Injector>,
        ready: &dyn Fn() -> bool,
        stop: &Arc<AtomicBool>,
    ) -> Result<()> {
        wait_until(Duration::from_secs(2), stop, ready);
        if self.control_stats.is_some()
            && !wait_until(Duration::from_secs(10), stop, &|| self.control_stats().is_some_and(|c| c.connected > 0))
        {
            eprintln!("xdpcopy: warning: no intercept connected after 10 s; replaying anyway (sessions will fail)");
        }
        let spare = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .find(|c| !self.worker_cores.contains(c));
        feed.start(injectors, stop.clone(), spare)
    }

    /// Joins every thread (set the stop flag first): the workers' final counters, summed, and
    /// the control loop's.
    ///
    /// # Errors
    /// A thread that panicked, or a control loop that failed.
    pub fn join(self) -> Result<(Counters, Option<ControlStats>)> {
        let mut sum = Counters::default();
        for j in self.workers {
            match j.join() {
                Ok(Ok(c)) => sum.add(&c),
                Ok(Err(e)) => return Err(e).context("the control loop (run by the worker) failed"),
                Err(_) => bail!("a worker thread panicked (see the message above)"),
            }
        }
        if let Some(c) = self.control {
            match c.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.context("the control thread failed")),
                Err(_) => bail!("the control thread panicked (see the message above)"),
            }
        }
        // Both publish a last time before they end.
        Ok((sum, self.control_stats.map(|p| p.snapshot())))
    }
}

/// Runs the control thread: channel rounds until `stop`, publishing its counters every 100 ms
/// and when it ends.
fn spawn_control(
    mut control: Control,
    stats: Arc<Published<ControlStats>>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<()>>> {
    let join = thread::Builder::new().name("xdpcopy-control".into()).spawn(move || -> Result<()> {
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            control.run_once(CONTROL_SLICE)?;
            if last.elapsed() >= CONTROL_PUBLISH {
                last = Instant::now();
                stats.publish(&control.stats());
            }
        }
        stats.publish(&control.stats());
        Ok(())
    })?;
    Ok(join)
}

/// Waits up to `limit` for `cond`, returning early when `stop` is set; returns whether `cond`
/// held.
fn wait_until(limit: Duration, stop: &AtomicBool, cond: &dyn Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}
