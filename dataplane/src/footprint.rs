//! The copier's footprint on the host, and how it is taken back whatever way the copier ends.
//!
//! The copier changes the kernel's network configuration only for `--mirror` (tc filters on the
//! production interface, the clsact qdisc when there was none, a veth pair) and offline replay
//! (a veth pair). Each change is marked with the copier's identity, its pid and its process
//! start time, and registered with its undo before it is made:
//!
//! ```text
//!  start ─► sweep(): marks of processes that are gone are removed (said on stderr); a live
//!           copier's are left alone, and --mirror refuses an interface a live copier mirrors
//!        ─► Change::new(what, undo) for each change, then the change itself
//!  end   ─► normal exit: Drop │ panic: the hook, before `panic = "abort"` aborts │ a second
//!           SIGINT/SIGTERM while the shutdown hangs: the signal thread ─► each undo runs once,
//!           newest first
//!  SIGKILL, power loss of the process ─► nothing runs: the next start's sweep removes the marks
//! ```
//!
//! The marks: a veth's `ifalias` reads `xdpcopy pid=P start=T role=mirror of=eth0 qdisc=added`
//! (its name, `xdpcmP`, carries the pid too; `xdpcfP` was the offline feed's veth before the
//! feed wrote into the workers directly, and is still swept); every tc filter action carries the
//! cookie `78647063` ("xdpc") + pid (8 hex digits) + start time (16 hex digits). The start time
//! (`/proc/PID/stat` field 22, clock ticks after boot) tells a live copier from a process that
//! reused a dead one's pid.
//!
//! Liveness is judged in this process's pid namespace: a copier in another pid namespace that
//! shares this network namespace would look dead. Marks are per network namespace, like the
//! interfaces that carry them.
//!
//! Promiscuous mode needs no mark: it is the membership of a packet socket
//! ([`crate::netdev::Promisc`]), which the kernel drops when the socket closes, however the
//! process ends.

use std::{
    fs,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock, TryLockError,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::netdev;

/// The process that made a change: its pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot; 0 when only the pid is known (a veth whose alias
    /// was not set yet: its name carries the pid).
    pub start: u64,
}

/// The cookie's first four bytes: "xdpc".
const COOKIE_MAGIC: &str = "78647063";
/// The first word of a veth's alias mark.
const ALIAS_MAGIC: &str = "xdpcopy";
/// The name every copier process has (`/proc/PID/comm`).
const COMM: &str = "xdpcopy";

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        *ME.get_or_init(|| {
            let pid = std::process::id();
            Owner::of(pid).unwrap_or(Owner { pid, start: 0 })
        })
    }

    /// The running process `pid` (none when there is none, or it is a zombie).
    pub fn of(pid: u32) -> Option<Owner> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
            return None;
        }
        Some(Owner { pid, start: fields.get(19)?.parse().ok()? })
    }

    /// Whether the process still runs (the same process: pid and start time).
    pub fn alive(&self) -> bool {
        match Owner::of(self.pid) {
            Some(now) if self.start != 0 => now == *self,
            Some(_) => fs::read_to_string(format!("/proc/{}/comm", self.pid)).is_ok_and(|c| c.trim() == COMM),
            None => false,
        }
    }

    /// The tc action cookie that marks a filter: 16 bytes as 32 hex digits.
    pub fn cookie(&self) -> String {
        format!("{COOKIE_MAGIC}{:08x}{:016x}", self.pid, self.start)
    }

    /// Reads a cookie written by [`Owner::cookie`] (none for anybody else's).
    pub fn from_cookie(s: &str) -> Option<Owner> {
        let rest = s.strip_prefix(COOKIE_MAGIC)?;
        if rest.len() != 24 {
            return None;
        }
        let pid = u32::from_str_radix(&rest[..8], 16).ok()?;
        let start = u64::from_str_radix(&rest[8..], 16).ok()?;
        Some(Owner { pid, start })
    }
}

/// The mark in the `ifalias` of a veth the copier created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethMark {
    /// Who created it.
    pub owner: Owner,
    /// `mirror`, or `feed` (a veth of the offline feed of earlier versions, left by a crash).
    pub role: String,
    /// The production interface it mirrors (`--mirror`).
    pub of: Option<String>,
    /// Whether the copier also added the clsact qdisc on `of` (remove it with the filters).
    pub qdisc_added: bool,
}

impl VethMark {
    /// The alias text.
    pub fn to_alias(&self) -> String {
        let mut s = format!("{ALIAS_MAGIC} pid={} start={} role={}", self.owner.pid, self.owner.start, self.role);
        if let Some(of) = &self.of {
            s += &format!(" of={of}");
        }
        if self.qdisc_added {
            s += " qdisc=added";
        }
        s
    }

    /// Reads an alias written by [`VethMark::to_alias`] (none for anything else).
    pub fn parse(alias: &str) -> Option<VethMark> {
        let mut words = alias.split_whitespace();
        if words.next()? != ALIAS_MAGIC {
            return None;
        }
        let (mut pid, mut start, mut role, mut of, mut qdisc_added) = (None, None, None, None, false);
        for w in words {
            match w.split_once('=')? {
                ("pid", v) => pid = v.parse().ok(),
                ("start", v) => start = v.parse().ok(),
                ("role", v) => role = Some(v.to_owned()),
                ("of", v) => of = Some(v.to_owned()),
                ("qdisc", v) => qdisc_added = v == "added",
                _ => {}
            }
        }
        Some(VethMark { owner: Owner { pid: pid?, start: start? }, role: role?, of, qdisc_added })
    }

    /// The mark of an unaliased veth named by the copier (`xdpcmPID`, `xdpcfPID`): the pid only.
    fn from_name(name: &str) -> Option<VethMark> {
        let (role, digits) = match name.strip_prefix("xdpc")?.split_at_checked(1)? {
            ("m", d) => ("mirror", d),
            ("f", d) => ("feed", d),
            _ => return None,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(VethMark {
            owner: Owner { pid: digits.parse().ok()?, start: 0 },
            role: role.into(),
            of: None,
            qdisc_added: false,
        })
    }
}

type UndoFn = Box<dyn FnOnce() + Send>;

struct Entry {
    id: u64,
    what: String,
    undo: UndoFn,
}

/// The changes made and not yet undone, oldest first.
pub struct Registry {
    entries: Mutex<Vec<Entry>>,
    next: AtomicU64,
}

static REGISTRY: Registry = Registry::new();

impl Registry {
    /// An empty registry (the process has one; tests make their own).
    pub const fn new() -> Self {
        Registry { entries: Mutex::new(Vec::new()), next: AtomicU64::new(0) }
    }

    /// Registers a change made (or about to be made) in this registry.
    pub fn change(&'static self, what: impl Into<String>, undo: impl FnOnce() + Send + 'static) -> Change {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry { id, what: what.into(), undo: Box::new(undo) };
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
        Change { id, registry: self }
    }

    fn take(&self, id: u64) -> Option<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = entries.iter().position(|e| e.id == id)?;
        Some(entries.remove(i))
    }

    /// Undoes every registered change, newest first, and returns what each was. Waits at most
    /// a second for the registry (a panic hook may run on a thread that holds it).
    pub fn undo_all(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(1);
        let taken = loop {
            match self.entries.try_lock() {
                Ok(mut e) => break std::mem::take(&mut *e),
                Err(TryLockError::Poisoned(p)) => break std::mem::take(&mut *p.into_inner()),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Err(TryLockError::WouldBlock) => return Vec::new(),
            }
        };
        taken
            .into_iter()
            .rev()
            .map(|e| {
                (e.undo)();
                e.what
            })
            .collect()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// A change to the host's network configuration. Dropping it undoes it, unless the panic hook
/// or a second signal already did.
#[must_use = "dropping a Change undoes it at once"]
pub struct Change {
    id: u64,
    registry: &'static Registry,
}

impl Change {
    /// Registers a change made (or about to be made: register first, so a crash in between
    /// still undoes it) with the process's registry.
    pub fn new(what: impl Into<String>, undo: impl FnOnce() + Send + 'static) -> Change {
        REGISTRY.change(what, undo)
    }
}

impl Drop for Change {
    fn drop(&mut self) {
        if let Some(e) = self.registry.take(self.id) {
            (e.undo)();
        }
    }
}

/// Changes undone newest first when dropped (a `Vec` drops oldest first).
#[derive(Default)]
pub struct Changes(Vec<Change>);

impl Changes {
    /// Adds the newest change.
    pub fn push(&mut self, c: Change) {
        self.0.push(c);
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        while let Some(c) = self.0.pop() {
            drop(c);
        }
    }
}

/// Undoes every change of this process, newest first; returns what each was.
pub fn undo_all() -> Vec<String> {
    REGISTRY.undo_all()
}

/// Installs a panic hook that prints the panic as before, then undoes every change: with
/// `panic = "abort"` (the release profile) no destructor runs after a panic.
pub fn install_panic_hook(program: &'static str) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let undone = undo_all();
        if !undone.is_empty() {
            eprintln!("{program}: after the panic, removed {}", undone.join(", "));
        }
    }));
}

/// Handles SIGINT and SIGTERM on a thread of their own: the first sets `stop` (a clean
/// shutdown); the second, while that shutdown is still under way or hangs, undoes every change
/// and exits at once with 128 + the signal's number.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn handle_signals(stop: Arc<AtomicBool>, program: &'static str) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    thread::Builder::new().name(format!("{program}-signals")).spawn(move || {
        for sig in signals.forever() {
            if !stop.swap(true, Ordering::SeqCst) {
                eprintln!("{program}: stopping; a second SIGINT/SIGTERM exits at once");
                continue;
            }
            let undone = undo_all();
            if undone.is_empty() {
                eprintln!("{program}: second signal: exiting now");
            } else {
                eprintln!("{program}: second signal: removed {}; exiting now", undone.join(", "));
            }
            std::process::exit(128 + sig);
        }
    })?;
    Ok(())
}

/// A live copier's mark on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The copier.
    pub owner: Owner,
    /// What carries the mark: `tc ingress filter prio 9 on eth0`, `veth xdpcm1234 (mirror of eth0)`.
    pub what: String,
}

/// Removes every mark in this network namespace whose process is gone, saying so on stderr
/// (prefixed with `program`); returns what it removed. Interfaces are found in sysfs (veths by
/// their alias or name) and through `tc qdisc show` (filters on clsact qdiscs); without `tc`
/// the filters are not looked at.
pub fn sweep(program: &str) -> Vec<String> {
    let mut removed = Vec::new();
    let mut say = |what: String| {
        eprintln!("{program}: removed {what}");
        removed.push(what);
    };
    let dead_veths: Vec<(String, VethMark)> = veth_marks().into_iter().filter(|(_, m)| !m.owner.alive()).collect();
    for dev in clsact_devices() {
        for dir in ["ingress", "egress"] {
            let Ok(text) = netdev::tc(&["filter", "show", "dev", &dev, dir]) else { continue };
            for (prio, owner) in marked_filters(&text) {
                if !owner.alive() && netdev::tc(&["filter", "del", "dev", &dev, dir, "prio", &prio.to_string()]).is_ok()
                {
                    say(format!(
                        "the tc {dir} filter prio {prio} on {dev} of xdpcopy pid {}, which is gone",
                        owner.pid
                    ));
                }
            }
        }
    }
    for (name, mark) in dead_veths {
        if netdev::ip(&["link", "del", &name]).is_ok() {
            let role = match &mark.of {
                Some(of) => format!("{} of {of}", mark.role),
                None => mark.role.clone(),
            };
            say(format!("veth {name} ({role}) of xdpcopy pid {}, which is gone", mark.owner.pid));
        }
        if let (true, Some(of)) = (mark.qdisc_added, &mark.of) {
            if netdev::remove_clsact_if_empty(of) {
                say(format!("the clsact qdisc xdpcopy pid {} added on {of}", mark.owner.pid));
            }
        }
    }
    removed
}

/// A live copier other than this one that mirrors `dev`: its filter on `dev` or its veth.
///
/// # Errors
/// When `dev`'s filters cannot be listed.
pub fn live_holder(dev: &str) -> Result<Option<Held>> {
    let me = Owner::current();
    let live = |o: &Owner| o.pid != me.pid && o.alive();
    if clsact_devices().iter().any(|d| d == dev) {
        for dir in ["ingress", "egress"] {
            let text = netdev::tc(&["filter", "show", "dev", dev, dir])?;
            if let Some((prio, owner)) = marked_filters(&text).into_iter().find(|(_, o)| live(o)) {
                return Ok(Some(Held { owner, what: format!("tc {dir} filter prio {prio} on {dev}") }));
            }
        }
    }
    Ok(veth_marks()
        .into_iter()
        .find(|(_, m)| m.of.as_deref() == Some(dev) && live(&m.owner))
        .map(|(name, m)| Held { owner: m.owner, what: format!("veth {name}, mirror of {dev}") }))
}

/// Every veth of this namespace that carries a copier's mark, with the mark.
fn veth_marks() -> Vec<(String, VethMark)> {
    let Ok(dir) = fs::read_dir("/sys/class/net") else { return Vec::new() };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let alias = fs::read_to_string(e.path().join("ifalias")).unwrap_or_default();
            let mark = match alias.trim() {
                "" => VethMark::from_name(&name),
                a => VethMark::parse(a),
            }?;
            Some((name, mark))
        })
        .collect()
}

/// The interfaces with a clsact qdisc (where tc filters can be), from `tc qdisc show`.
fn clsact_devices() -> Vec<String> {
    let text = netdev::tc(&["qdisc", "show"]).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("qdisc clsact "))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.windows(2).find(|p| p[0] == "dev").map(|p| p[1].to_owned())
        })
        .collect()
}

/// The priorities of `tc filter show` output whose every filter carries one copier's cookie,
/// with that copier. A priority that also holds a filter without the cookie is left out: u32
/// filters share their hash tables across a qdisc's directions, so a listing of one direction
/// also shows the other direction's filters at the same priority; deleting that priority could
/// take somebody else's.
pub fn marked_filters(text: &str) -> Vec<(u32, Owner)> {
    /// Per priority: the owner of its marked filters, whether one is unmarked or foreign.
    struct Prio {
        prio: u32,
        owner: Option<Owner>,
        spoilt: bool,
    }
    let mut prios: Vec<Prio> = Vec::new();
    // The filter being read: its priority's index, and whether its cookie was ours.
    let mut filter: Option<(usize, bool)> = None;
    let close = |filter: &mut Option<(usize, bool)>, prios: &mut Vec<Prio>| {
        if let Some((i, false)) = filter.take() {
            prios[i].spoilt = true;
        }
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["filter", rest @ ..] => {
                close(&mut filter, &mut prios);
                let Some(prio) = rest.windows(2).find(|w| w[0] == "pref").and_then(|w| w[1].parse().ok()) else {
                    continue;
                };
                let i = prios.iter().position(|p| p.prio == prio).unwrap_or_else(|| {
                    prios.push(Prio { prio, owner: None, spoilt: false });
                    prios.len() - 1
                });
                // A filter (u32: `fh H::K`), not the priority's header or a hash table's.
                if rest.windows(2).any(|w| w[0] == "fh" && w[1].contains("::")) {
                    filter = Some((i, false));
                }
            }
            ["cookie", c, ..] => {
                if let (Some((i, ours)), Some(o)) = (filter.as_mut(), Owner::from_cookie(c)) {
                    match prios[*i].owner {
                        None => prios[*i].owner = Some(o),
                        Some(prev) if prev != o => prios[*i].spoilt = true,
                        Some(_) => {}
                    }
                    *ours = true;
                }
            }
            _ => {}
        }
    }
    close(&mut filter, &mut prios);
    prios.into_iter().filter(|p| !p.spoilt).filter_map(|p| Some((p.prio, p.owner?))).collect()
}

/// A veth pair the copier created and marked; dropping it deletes the pair.
pub struct Veth {
    /// The end the copier writes to (`--mirror`'s tc target).
    pub host: String,
    /// The end the copier captures from.
    pub capture: String,
    _change: Change,
}

impl Veth {
    /// Creates `{prefix}{pid}` and its peer `{prefix}{pid}c` with `queues` queues each, marks
    /// the first with `mark`'s alias, and brings both up.
    ///
    /// # Errors
    /// A failed `ip` command (what was created is deleted again).
    pub fn create(prefix: &str, queues: u32, mark: &VethMark) -> Result<Veth> {
        let host = format!("{prefix}{}", mark.owner.pid);
        let capture = format!("{host}c");
        let q = queues.max(1).to_string();
        #[rustfmt::skip]
        netdev::ip(&["link", "add", &host, "numtxqueues", &q, "numrxqueues", &q, "type", "veth",
                     "peer", "name", &capture, "numtxqueues", &q, "numrxqueues", &q])?;
        let name = host.clone();
        let change = Change::new(format!("veth {host}"), move || {
            let _ = netdev::ip(&["link", "del", &name]);
        });
        let veth = Veth { host, capture, _change: change };
        netdev::ip(&["link", "set", "dev", &veth.host, "alias", &mark.to_alias()])?;
        netdev::ip(&["link", "set", &veth.host, "up"])?;
        netdev::ip(&["link", "set", &veth.capture, "up"])?;
        Ok(veth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_aliases_round_trip_and_nothing_else_reads_as_a_mark() {
        let o = Owner { pid: 4_194_304, start: 123_456_789 };
        assert_eq!(o.cookie().len(), 32, "tc takes at most 16 bytes");
        assert_eq!(Owner::from_cookie(&o.cookie()), Some(o));
        assert_eq!(Owner::from_cookie("0123456789abcdef0123456789abcdef"), None);
        assert_eq!(Owner::from_cookie("78647063"), None);
        let m = VethMark { owner: o, role: "mirror".into(), of: Some("eth0".into()), qdisc_added: true };
        assert_eq!(m.to_alias(), "xdpcopy pid=4194304 start=123456789 role=mirror of=eth0 qdisc=added");
        assert_eq!(VethMark::parse(&m.to_alias()), Some(m));
        let f = VethMark { owner: o, role: "feed".into(), of: None, qdisc_added: false };
        assert_eq!(VethMark::parse(&f.to_alias()), Some(f));
        assert_eq!(VethMark::parse("uplink to the core switch"), None);
        assert_eq!(VethMark::parse("xdpcopy pid=12"), None);
        assert_eq!(VethMark::from_name("xdpcm77").map(|m| (m.owner.pid, m.role)), Some((77, "mirror".into())));
        assert_eq!(VethMark::from_name("xdpcf77").map(|m| m.role), Some("feed".into()));
        for other in ["xdpcm77c", "xdpcm", "xdpcx77", "eth0", "xdpc"] {
            assert_eq!(VethMark::from_name(other), None, "{other}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = Owner::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start > 0 && me.alive());
        // Our pid with another start time: a process that reused a dead copier's pid.
        assert!(!Owner { start: me.start + 1, ..me }.alive());
        // A pid alone counts as live only for a process named xdpcopy (this one is not).
        assert!(!Owner { start: 0, ..me }.alive());
        assert!(!Owner { pid: u32::MAX - 1, start: 1 }.alive());
    }

    #[test]
    fn marked_filters_are_found_by_priority() {
        let a = Owner { pid: 1234, start: 99 };
        let text = format!(
            "filter protocol all pref 9 u32 chain 0 \n\
             filter protocol all pref 9 u32 chain 0 fh 801: ht divisor 1 \n\
             filter protocol all pref 9 u32 chain 0 fh 801::800 order 2048 key ht 801 bkt 0 terminal flowid not_in_hw \n\
             \x20 match 45000000/ff000000 at 0\n\
             \taction order 1: mirred (Egress Mirror to device xdpcm1234) continue\n\
             \tindex 2 ref 1 bind 1\n\
             \tcookie {c}\n\
             filter protocol all pref 9 u32 chain 0 fh 801::801 order 2049 key ht 801 bkt 0 terminal flowid not_in_hw \n\
             \tcookie {c}\n\
             filter protocol all pref 10 u32 chain 0 fh 800::800 order 2048 key ht 800 bkt 0 terminal flowid not_in_hw \n\
             \taction order 1: mirred (Egress Mirror to device mir0) pipe\n\
             \tindex 1 ref 1 bind 1\n\
             filter protocol all pref 11 u32 chain 0 fh 802::800 order 2048 key ht 802 bkt 0 terminal flowid not_in_hw \n\
             \tcookie 00112233445566778899aabbccddeeff\n",
            c = a.cookie()
        );
        assert_eq!(marked_filters(&text), vec![(9, a)]);
        assert!(marked_filters("").is_empty());
        // Somebody else's filter at our priority (the other direction's, shown in this listing
        // because u32 shares hash tables), or another copier's: the priority is not ours alone.
        let shared = format!(
            "{text}filter protocol all pref 9 u32 chain 0 fh 802::800 order 2048 key ht 802 bkt 0 terminal flowid \n\
             \taction order 1: mirred (Egress Mirror to device tap0) pipe\n"
        );
        assert!(marked_filters(&shared).is_empty());
        let two = format!(
            "{text}filter protocol all pref 9 u32 chain 0 fh 803::800 order 2048\n\tcookie {}\n",
            Owner { pid: 5, start: 6 }.cookie()
        );
        assert!(marked_filters(&two).is_empty());
    }

    #[test]
    fn changes_are_undone_once_newest_first() {
        let reg: &'static Registry = Box::leak(Box::new(Registry::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let note = |s: &'static str| {
            let log = log.clone();
            move || log.lock().unwrap().push(s)
        };
        let a = reg.change("a", note("a"));
        let b = reg.change("b", note("b"));
        let c = reg.change("c", note("c"));
        drop(b);
        assert_eq!(*log.lock().unwrap(), ["b"]);
        assert_eq!(reg.undo_all(), ["c", "a"]);
        assert_eq!(*log.lock().unwrap(), ["b", "c", "a"]);
        // Already undone (by the hook or the signal): dropping does nothing more.
        drop((a, c));
        assert_eq!(log.lock().unwrap().len(), 3);
        assert!(reg.undo_all().is_empty());
    }

    #[test]
    fn a_change_list_is_undone_newest_first() {
        let reg: &'static Registry = Box::leak(Box::new(Registry::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut changes = Changes::default();
        for s in ["qdisc", "ingress filter", "egress filter"] {
            let log = log.clone();
            changes.push(reg.change(s, move || log.lock().unwrap().push(s)));
        }
        drop(changes);
        assert_eq!(*log.lock().unwrap(), ["egress filter", "ingress filter", "qdisc"]);
    }
}
