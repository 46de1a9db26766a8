//! What the lab's replay tests compare: the test server's access log against the online one, and
//! redis workloads (what each server executed, what each holds). Shared by the test files.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::{
    http::access_log,
    lab::{addr, Lab, Role},
};

/// An access log by (request line, status): how many times each was served.
pub type Log = BTreeMap<(String, u16), u32>;

/// Waits until the test server's log holds `expected` (or the timeout), then a little longer so
/// late duplicates would show; returns what it holds.
pub fn settle_log(lab: &Lab, prefix: &str, expected: &Log, timeout: Duration) -> Log {
    let deadline = Instant::now() + timeout;
    loop {
        let got = access_log(&lab.test_access_log(), prefix).unwrap_or_default();
        if &got == expected || Instant::now() > deadline {
            std::thread::sleep(Duration::from_millis(500));
            return access_log(&lab.test_access_log(), prefix).unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the test server's log has not changed for `quiet` (at most `max`); returns it.
/// For runs where the log is not expected to equal the online one.
pub fn quiet_log(lab: &Lab, prefix: &str, quiet: Duration, max: Duration) -> Log {
    let (mut got, mut since) = (Log::new(), Instant::now());
    let deadline = Instant::now() + max;
    while since.elapsed() < quiet && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = access_log(&lab.test_access_log(), prefix).unwrap_or_default();
        if now != got {
            (got, since) = (now, Instant::now());
        }
    }
    got
}

/// The requests whose counts differ, one line each.
pub fn diff(expected: &Log, got: &Log) -> String {
    let mut out = String::new();
    for (k, n) in expected {
        let g = got.get(k).copied().unwrap_or(0);
        if g != *n {
            out += &format!("  {} {}: online {n}, test {g}\n", k.0, k.1);
        }
    }
    for (k, g) in got {
        if !expected.contains_key(k) {
            out += &format!("  {} {}: online 0, test {g}\n", k.0, k.1);
        }
    }
    out
}

/// Whether the difference between `expected` and `got` is only requests missing, no more of them
/// than frames the lab's mirror veth dropped since `dropped_before` (`Lab::mirror_dropped`):
/// frames lost before the copier's XDP program saw them, which no xdpcopy counter can see and
/// no replay can bring back. Says so loudly when it is the excuse; false when nothing was
/// dropped, when anything is extra or changed, or when more is missing than was dropped.
pub fn mirror_loss_explains(lab: &Lab, dropped_before: u64, expected: &Log, got: &Log) -> bool {
    let dropped = lab.mirror_dropped().unwrap_or(dropped_before).saturating_sub(dropped_before);
    if dropped == 0 || got.iter().any(|(k, g)| expected.get(k).is_none_or(|n| g > n)) {
        return false;
    }
    let missing: u64 = expected.iter().map(|(k, n)| u64::from(n - got.get(k).copied().unwrap_or(0))).sum();
    let explained = missing <= dropped;
    eprintln!(
        "LAB MIRROR LOSS: the mirror veth dropped {dropped} frame(s) before the copier saw them; {missing} \
         request(s) missing from the test server's log{}:\n{}",
        if explained { " — accepted as the lab's loss, not the copier's" } else { "" },
        diff(expected, got)
    );
    explained
}

/// The lab's redis workload of client `c` against `online` (run it in the client namespace):
/// `commands` rounds of SET/INCR/LPUSH/HSET one command at a time (as most clients do), 200
/// pipelined INCRBYs in one write, then `short` one-command sessions.
pub fn redis_workload(online: std::net::SocketAddr, c: usize, commands: usize, short: usize) -> anyhow::Result<()> {
    let cmds: Vec<String> = (0..commands)
        .flat_map(|i| {
            [
                format!("SET key:{c}:{i} value-{c}-{i}"),
                format!("INCR counter:{c}"),
                format!("LPUSH list:{c} {i}"),
                format!("HSET hash:{c} f{i} {}", i * i),
            ]
        })
        .collect();
    let replies = redis_session(TcpStream::connect(online)?, &cmds, false)?;
    anyhow::ensure!(replies.len() == cmds.len(), "{} replies to {} commands", replies.len(), cmds.len());
    let cmds: Vec<String> = (0..200).map(|i| format!("INCRBY pipe:{c} {i}")).collect();
    redis_session(TcpStream::connect(online)?, &cmds, true)?;
    for i in 0..short {
        redis_session(TcpStream::connect(online)?, &[format!("SET short:{c}:{i} {i}")], false)?;
    }
    Ok(())
}

/// Sends `cmds` (inline redis commands) on `stream`, one at a time or all at once, and returns
/// the first line of each reply; a redis error is an error.
pub fn redis_session(stream: TcpStream, cmds: &[String], pipelined: bool) -> anyhow::Result<Vec<String>> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut replies = Vec::new();
    let read = |r: &mut BufReader<TcpStream>| -> anyhow::Result<String> {
        let mut l = String::new();
        r.read_line(&mut l)?;
        anyhow::ensure!(!l.starts_with('-'), "redis error: {l}");
        Ok(l.trim_end().to_owned())
    };
    if pipelined {
        let all: String = cmds.iter().map(|c| format!("{c}\r\n")).collect();
        w.write_all(all.as_bytes())?;
        for _ in cmds {
            replies.push(read(&mut r)?);
        }
    } else {
        for c in cmds {
            w.write_all(format!("{c}\r\n").as_bytes())?;
            replies.push(read(&mut r)?);
        }
    }
    Ok(replies)
}

/// `redis-cli` against the redis at `ip` in `role`'s namespace.
pub fn redis_cli(lab: &Lab, role: Role, ip: IpAddr, args: &[&str]) -> String {
    let ip = ip.to_string();
    let port = addr::REDIS_PORT.to_string();
    let mut all = vec!["redis-cli", "-h", &ip, "-p", &port];
    all.extend_from_slice(args);
    lab.run(role, &all).unwrap()
}

/// Calls per command from `INFO commandstats`, without the commands the checks themselves run.
pub fn command_calls(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(n, _)| {
            !["info", "command", "keys", "dbsize", "lrange", "hgetall", "type", "scan"].contains(&n.as_str())
        })
        .collect()
}

/// Every key of the redis at `ip` with its value (strings, lists, hashes).
pub fn redis_dump(lab: &Lab, role: Role, ip: IpAddr) -> BTreeMap<String, String> {
    let keys = redis_cli(lab, role, ip, &["--scan"]);
    keys.lines()
        .map(|k| {
            let ty = redis_cli(lab, role, ip, &["type", k]);
            let v = match ty.trim() {
                "string" => redis_cli(lab, role, ip, &["get", k]),
                "list" => redis_cli(lab, role, ip, &["lrange", k, "0", "-1"]),
                "hash" => redis_cli(lab, role, ip, &["hgetall", k]),
                other => other.to_owned(),
            };
            (k.to_owned(), v)
        })
        .collect()
}

/// The online redis's command counts, and the test redis's once they match them (or `timeout`
/// passed, then a little longer so late extras would show).
pub fn settle_redis_commands(
    lab: &Lab,
    online: IpAddr,
    test: IpAddr,
    timeout: Duration,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let want = command_calls(&redis_cli(lab, Role::Online, online, &["info", "commandstats"]));
    let deadline = Instant::now() + timeout;
    let mut got = BTreeMap::new();
    while Instant::now() < deadline {
        got = command_calls(&redis_cli(lab, Role::Test, test, &["info", "commandstats"]));
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    (want, got)
}
