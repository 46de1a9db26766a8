//! A bounded per-connection write buffer for non-blocking sockets.
//!
//! Whole messages or frames go in or nothing does (a partial message would corrupt the stream);
//! memory grows with use up to the bound and is then reused.

use std::io::{self, Write};

#[derive(Debug)]
pub(crate) struct OutBuf {
    buf: Vec<u8>,
    start: usize,
    cap: usize,
}

impl OutBuf {
    /// Create an empty buffer that will hold at most `cap` unsent bytes.
    pub(crate) const fn new(cap: usize) -> Self {
        Self { buf: Vec::new(), start: 0, cap }
    }

    /// Return the number of unsent bytes.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Return whether everything has been sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop all unsent bytes.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Append `bytes` whole; returns false (nothing appended) if that would exceed the bound.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> bool {
        if self.len() + bytes.len() > self.cap {
            return false;
        }
        if self.start > 0 && self.buf.len() + bytes.len() > self.buf.capacity() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        true
    }

    /// Append `bytes` whole even past the bound (a connection's one upgrade message, which must
    /// precede everything queued after it).
    pub(crate) fn push_over(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.buf.len() + bytes.len() > self.buf.capacity() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Write until empty or the socket would block; returns the bytes written.
    ///
    /// # Errors
    ///
    /// Any error other than `WouldBlock`/`Interrupted`; a zero-length write is `WriteZero`.
    pub(crate) fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        let mut written = 0;
        while self.start < self.buf.len() {
            match w.write(&self.buf[self.start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.start == self.buf.len() {
            self.clear();
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts `budget` bytes, then would block.
    struct Trickle {
        got: Vec<u8>,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.budget).min(3);
            self.got.extend_from_slice(&b[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bounded_whole_pushes_and_partial_writes() {
        let mut ob = OutBuf::new(10);
        assert!(ob.push(b"abcdef"));
        assert!(!ob.push(b"ghijk"), "11 > 10");
        assert!(ob.push(b"ghij"));
        let mut w = Trickle { got: Vec::new(), budget: 7 };
        assert_eq!(ob.write_to(&mut w).unwrap(), 7);
        assert_eq!(ob.len(), 3);
        assert!(ob.push(b"klmnopq"));
        w.budget = 100;
        assert_eq!(ob.write_to(&mut w).unwrap(), 10);
        assert!(ob.is_empty());
        assert_eq!(w.got, b"abcdefghijklmnopq");
    }
}
