//! Starting and stopping the copier's threads: one pinned worker per queue, the control thread
//! (session mode), the offline feed. The stats thread (the caller's) watches them all: a thread
//! that ends before it is told to stops the copier.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use control::{
    copier::{Control, ControlStats},
    counters::CounterSet,
};

use crate::{feed::Feed, stats::Counters, worker::Worker, xsk::Injector};

/// How long one control round blocks in the channel's event loop.
const CONTROL_SLICE: Duration = Duration::from_millis(50);
/// How often the control thread publishes its counters.
const CONTROL_PUBLISH: Duration = Duration::from_millis(100);

/// The control thread and the counters it publishes.
struct ControlThread {
    join: JoinHandle<Result<ControlStats>>,
    stats: Arc<Mutex<ControlStats>>,
}

/// The running threads.
pub(super) struct Threads {
    workers: Vec<JoinHandle<Counters>>,
    control: Option<ControlThread>,
    /// The cores the workers are pinned to.
    worker_cores: Vec<usize>,
}

impl Threads {
    /// Starts every worker (worker i pinned to `cores[i % len]`, all cores when `None`) and the
    /// control thread.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(
        workers: Vec<Worker>,
        control: Option<Control>,
        cores: Option<&[usize]>,
        stop: &Arc<AtomicBool>,
    ) -> Result<Self> {
        let all: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
        let cores = cores.map_or(all, <[usize]>::to_vec);
        let mut threads = Threads { workers: Vec::new(), control: None, worker_cores: Vec::new() };
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
        if let Some(c) = control {
            threads.control = Some(spawn_control(c, stop.clone())?);
        }
        Ok(threads)
    }

    /// No threads (what is left after [`Threads::join`]).
    pub fn none() -> Self {
        Threads { workers: Vec::new(), control: None, worker_cores: Vec::new() }
    }

    /// Whether a worker or the control thread has ended (they run until told to stop).
    pub fn one_ended(&self) -> bool {
        self.workers.iter().any(JoinHandle::is_finished) || self.control.as_ref().is_some_and(|c| c.join.is_finished())
    }

    /// The control thread's latest counters (session mode).
    pub fn control_stats(&self) -> Option<ControlStats> {
        self.control.as_ref().map(|c| *c.stats.lock().unwrap_or_else(|e| e.into_inner()))
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
        if self.control.is_some()
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
    /// the control thread's.
    ///
    /// # Errors
    /// A thread that panicked, or a control thread that failed.
    pub fn join(self) -> Result<(Counters, Option<ControlStats>)> {
        let mut sum = Counters::default();
        for j in self.workers {
            match j.join() {
                Ok(c) => sum.add(&c),
                Err(_) => bail!("a worker thread panicked (see the message above)"),
            }
        }
        let control = match self.control {
            Some(c) => match c.join.join() {
                Ok(Ok(stats)) => Some(stats),
                Ok(Err(e)) => return Err(e.context("the control thread failed")),
                Err(_) => bail!("the control thread panicked (see the message above)"),
            },
            None => None,
        };
        Ok((sum, control))
    }
}

/// Runs the control thread: channel rounds until `stop`, publishing its counters every 100 ms.
fn spawn_control(mut control: Control, stop: Arc<AtomicBool>) -> Result<ControlThread> {
    let stats = Arc::new(Mutex::new(ControlStats::default()));
    let shared = stats.clone();
    let join = thread::Builder::new().name("xdpcopy-control".into()).spawn(move || -> Result<ControlStats> {
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            control.run_once(CONTROL_SLICE)?;
            if last.elapsed() >= CONTROL_PUBLISH {
                last = Instant::now();
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = control.stats();
            }
        }
        Ok(control.stats())
    })?;
    Ok(ControlThread { join, stats })
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
