//! A minimal HTTP/1.1 client and access-log reader for the replay tests: real requests over real
//! TCP connections (keep-alive or one per request), each URL distinct so the test server's log
//! can be compared with the online server's request by request.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context, Result};

/// A keep-alive connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects (from the calling thread's network namespace).
    pub fn open(addr: SocketAddr) -> Result<Self> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        Ok(Self { reader: BufReader::new(s) })
    }

    /// Sends `GET path` and reads the whole response; returns the status code.
    pub fn get(&mut self, host: &str, path: &str, close: bool) -> Result<u16> {
        let conn = if close { "close" } else { "keep-alive" };
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xdpcopy-test\r\nConnection: {conn}\r\n\r\n");
        self.reader.get_mut().write_all(req.as_bytes())?;
        self.read_response()
    }

    /// The connection's local address (its client port is what the copier registers).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.reader.get_ref().local_addr()?)
    }

    /// Sends raw bytes (e.g. several pipelined requests, or one large one).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.reader.get_mut().write_all(bytes)?;
        Ok(())
    }

    /// Reads one response; returns the status code.
    pub fn read_response(&mut self) -> Result<u16> {
        let mut line = String::new();
        self.reader.read_line(&mut line).context("reading the status line")?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if self.reader.read_line(&mut h)? == 0 {
                bail!("connection closed in the headers");
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().context("content-length")?;
                }
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}

/// One request on its own connection (`Connection: close`).
pub fn get_once(addr: SocketAddr, path: &str) -> Result<u16> {
    Conn::open(addr)?.get(&host(addr), path, true)
}

/// The Host header's value for `addr`: its address (an IPv6 one in brackets).
pub fn host(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// `(path, status)` → how many times, from an access log written in the lab's format
/// (`$request $status $remote_addr:$remote_port`), for paths starting with `prefix`.
pub fn access_log(path: &Path, prefix: &str) -> Result<BTreeMap<(String, u16), u32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (path, status) in text.lines().filter_map(|l| log_entry(l, prefix)) {
        *out.entry((path.to_owned(), status)).or_insert(0) += 1;
    }
    Ok(out)
}

/// The `(path, status)` of one access-log line in the lab's format (`GET /path HTTP/1.1 200
/// addr:port`), when its path starts with `prefix`.
fn log_entry<'a>(line: &'a str, prefix: &str) -> Option<(&'a str, u16)> {
    let mut w = line.split_whitespace();
    let path = w.nth(1).filter(|p| p.starts_with(prefix))?;
    let status = w.nth(1)?;
    Some((path, status.parse().unwrap_or(0)))
}

/// Counts the requests of an access log whose path starts with a prefix, reading only what was
/// appended since the last call: a benchmark that polls a log growing by tens of thousands of
/// lines (re-parsing it whole each time took a fifth of the lab's CPU) costs next to nothing.
pub struct LogCounter {
    path: std::path::PathBuf,
    prefix: String,
    offset: u64,
    /// A line written in part at the last read.
    partial: Vec<u8>,
    count: u64,
}

impl LogCounter {
    /// Counts from the log's current end (requests already in it are not counted).
    pub fn from_end(path: &Path, prefix: &str) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogCounter { path: path.to_owned(), prefix: prefix.to_owned(), offset, partial: Vec::new(), count: 0 }
    }

    /// Requests counted so far, after reading what was appended.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub fn count(&mut self) -> Result<u64> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut new = std::mem::take(&mut self.partial);
        let n = f.read_to_end(&mut new)?;
        self.offset += n as u64;
        let complete = new.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.partial = new.split_off(complete);
        self.count += String::from_utf8_lossy(&new).lines().filter_map(|l| log_entry(l, &self.prefix)).count() as u64;
        Ok(self.count)
    }
}

/// [`access_log`] once the log has stopped changing: nginx writes a request's line when it
/// finalizes the request, which can be just after the client has read the response. Reads every
/// 100 ms until two reads agree (at most `timeout`).
pub fn settled_access_log(
    path: &Path,
    prefix: &str,
    timeout: std::time::Duration,
) -> Result<BTreeMap<(String, u16), u32>> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = access_log(path, prefix)?;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = access_log(path, prefix)?;
        if now == last || std::time::Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::LogCounter;
    use std::io::Write;

    #[test]
    fn the_log_counter_counts_appended_complete_lines_with_the_prefix_once() {
        let path = std::env::temp_dir().join(format!("xdpc-logcounter-{}.log", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "GET /sess/old HTTP/1.1 200 10.0.0.1:1").unwrap();
        let mut c = LogCounter::from_end(&path, "/sess/");
        assert_eq!(c.count().unwrap(), 0, "what was there before is not counted");
        write!(f, "GET /sess/a HTTP/1.1 200 10.0.0.1:2\nGET /other HTTP/1.1 200 10.0.0.1:3\nGET /sess/b HT").unwrap();
        assert_eq!(c.count().unwrap(), 1, "a line written in part waits for its end");
        writeln!(f, "TP/1.1 200 10.0.0.1:4").unwrap();
        assert_eq!(c.count().unwrap(), 2);
        assert_eq!(c.count().unwrap(), 2, "nothing new, nothing counted twice");
        std::fs::remove_file(&path).unwrap();
    }
}
