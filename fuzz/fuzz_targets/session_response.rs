//! The response-header path of the session engine: any channel messages, 64-byte (IPv4) or
//! 84-byte (IPv6) as the tick byte's low bit says, parsed as the worker does and handed to an
//! engine whose sessions of both families are live, with time passing between them.
//! Never a panic; every frame the engine builds parses; the sessions' bookkeeping holds.
#![no_main]

use std::time::{Duration, Instant};

use control::channel::proto::{HeaderMsg, HEADER_MSG6_LEN};
use dataplane::session::{Config, Engine, ResponseHeader};
use libfuzzer_sys::fuzz_target;
use wire::{parse::parse, tcp::flags};

mod common;
use common::{client_frame_in, Out, TARGET, TARGET6};

fuzz_target!(|data: &[u8]| {
    let cfg = Config { max_sessions: 8, pool_bytes: 1 << 20, ..Config::default() };
    let mut e = Engine::new(cfg, vec![TARGET, TARGET6]);
    let mut out = Out::default();
    let t0 = Instant::now();
    // Four live sessions (ports 1 and 2 of each family) with a request each, waiting for answers.
    for (v6, port) in [(false, 1u16), (false, 2), (true, 1), (true, 2)] {
        for (seq, ack, f, body) in [
            (1000, 0, flags::SYN, &b""[..]),
            (1001, 5001, flags::ACK, b""),
            (1001, 5001, flags::PSH | flags::ACK, b"GET / HTTP/1.1\r\n\r\n"),
        ] {
            let frame = client_frame_in(v6, port, seq, ack, f, body, &[]);
            let p = parse(&frame).unwrap().unwrap();
            e.on_client(t0, usize::from(v6), &p, &frame, &mut out);
        }
    }
    let mut now = t0;
    for chunk in data.chunks(1 + HEADER_MSG6_LEN) {
        let (tick, msg) = chunk.split_first().unwrap_or((&0, &[]));
        now += Duration::from_micros(u64::from(*tick >> 1) * 997);
        let mut m = [0u8; HEADER_MSG6_LEN];
        m[..msg.len()].copy_from_slice(msg);
        let msg = if tick & 1 == 0 {
            HeaderMsg::from_bytes(m[..64].try_into().unwrap())
        } else {
            HeaderMsg::from_bytes6(m)
        };
        if let Ok(h) = ResponseHeader::from_msg(&msg) {
            e.on_response(now, &h, &mut out);
        }
        e.on_timers(now, &mut out);
        e.check_invariants();
    }
});
