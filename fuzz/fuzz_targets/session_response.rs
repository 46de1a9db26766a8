//! The response-header path of the session engine: any 64-byte channel messages, parsed as the
//! worker does and handed to an engine whose sessions are live, with time passing between them.
//! Never a panic; every frame the engine builds parses; the sessions' bookkeeping holds.
#![no_main]

use std::time::{Duration, Instant};

use dataplane::session::{Config, Engine, ResponseHeader};
use libfuzzer_sys::fuzz_target;
use wire::{parse::parse, tcp::flags};

mod common;
use common::{client_frame, Out, TARGET};

fuzz_target!(|data: &[u8]| {
    let cfg = Config { max_sessions: 8, pool_bytes: 1 << 20, ..Config::default() };
    let mut e = Engine::new(cfg, vec![TARGET]);
    let mut out = Out::default();
    let t0 = Instant::now();
    // Two live sessions (ports 1 and 2) with a request each, waiting for answers.
    for port in [1u16, 2] {
        for (seq, ack, f, body) in [
            (1000, 0, flags::SYN, &b""[..]),
            (1001, 5001, flags::ACK, b""),
            (1001, 5001, flags::PSH | flags::ACK, b"GET / HTTP/1.1\r\n\r\n"),
        ] {
            let frame = client_frame(port, seq, ack, f, body, &[]);
            let p = parse(&frame).unwrap().unwrap();
            e.on_client(t0, 0, &p, &frame, &mut out);
        }
    }
    let mut now = t0;
    for chunk in data.chunks(65) {
        let (tick, msg) = chunk.split_first().unwrap_or((&0, &[]));
        now += Duration::from_micros(u64::from(*tick) * 997);
        let mut m = [0u8; 64];
        m[..msg.len()].copy_from_slice(msg);
        if let Ok(h) = ResponseHeader::parse(&m) {
            e.on_response(now, &h, &mut out);
        }
        e.on_timers(now, &mut out);
        e.check_invariants();
    }
});
