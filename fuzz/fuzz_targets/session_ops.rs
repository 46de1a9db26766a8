//! Sequences of session-engine operations decoded from the input — captured client segments of
//! a few sessions (any flags, sequence numbers near each other, payloads, options), response
//! headers of the test server (any flags, seq/ack near the session's), time passing, TX room
//! coming and going, transmit and CLIENT_ADD failures — on an engine with a small table and pool.
//! Never a panic, every frame built parses, and after every step each session's list
//! bookkeeping (segments, buffered and waiting bytes, pointers) matches a walk of its list.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dataplane::session::{CatchUp, Config, Engine, ResponseHeader};
use libfuzzer_sys::fuzz_target;
use wire::parse::parse;

mod common;
use common::{client_frame_in, Out, CLIENT, CLIENT6, TARGET, TARGET6};

/// Reads the input a few bytes at a time; zeros when it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let first = b.u8();
    // Bit 4 of the first byte: IPv6 sessions to an IPv6 target (else IPv4).
    let v6 = first & 0x10 != 0;
    let (target, client) = if v6 { (TARGET6, IpAddr::V6(CLIENT6)) } else { (TARGET, IpAddr::V4(CLIENT)) };
    let catch_up = match first % 3 {
        0 => None,
        1 => Some(CatchUp::default()),
        _ => Some(CatchUp { bytes: 200, lag: Duration::from_millis(3) }),
    };
    let cfg =
        Config { max_sessions: 4, pool_bytes: 16 << 10, catch_up, wait_response: b.u8() % 4 != 0, ..Config::default() };
    let mut e = Engine::new(cfg, vec![target]);
    let mut out = Out::default();
    let t0 = Instant::now();
    let mut now = t0;
    let mut steps = 0;
    while !b.0.is_empty() && steps < 2000 {
        steps += 1;
        match b.u8() % 8 {
            0..=3 => {
                let port = u16::from(b.u8() % 5) + 1;
                let seq = 1000u32.wrapping_add(u32::from(b.u16()));
                let ack = 5000u32.wrapping_add(u32::from(b.u8()) * 16);
                let flags = b.u8();
                let len = match b.u8() % 4 {
                    0 => 0,
                    1 => usize::from(b.u8()),
                    2 => 1460,
                    _ => 3000 + usize::from(b.u8()) * 8,
                };
                let opts: Vec<u8> = (0..usize::from(b.u8() % 3) * 4).map(|_| b.u8()).collect();
                let frame = client_frame_in(v6, port, seq, ack, flags, &vec![b'x'; len], &opts);
                let p = parse(&frame).expect("built frames parse").expect("TCP");
                e.on_client(now, 0, &p, &frame, &mut out);
            }
            4 | 5 => {
                let port = u16::from(b.u8() % 5) + 1;
                let h = ResponseHeader {
                    src: target.addr(),
                    dst: SocketAddr::new(client, port),
                    total_len: 0,
                    payload_len: [0u16, 1, 100, 1460, 65000][usize::from(b.u8() % 5)],
                    seq: 9000u32.wrapping_add(u32::from(b.u16())),
                    ack: 1000u32.wrapping_add(u32::from(b.u16())),
                    flags: b.u8(),
                    window: [0u16, 1, 512, 65535][usize::from(b.u8() % 4)],
                    timestamps: (b.u8() % 2 == 0).then(|| (u32::from(b.u16()), u32::from(b.u16()))),
                    window_scale: (b.u8() % 3 == 0).then(|| b.u8() % 15),
                    mss: None,
                };
                let hdrs = if v6 { 60 } else { 40 };
                let h = ResponseHeader { total_len: hdrs + h.payload_len.min(65495), ..h };
                e.on_response(now, &h, &mut out);
            }
            6 => {
                now += Duration::from_micros(u64::from(b.u16()) * 50);
                e.on_timers(now, &mut out);
            }
            _ => {
                let k = b.u8();
                out.busy = k & 1 != 0;
                out.fail = k & 6 == 6;
            }
        }
        e.check_invariants();
    }
    // Time runs out for every session: the engine empties.
    out.busy = false;
    out.fail = false;
    for _ in 0..8 {
        now += Duration::from_secs(3600);
        e.on_timers(now, &mut out);
    }
    e.check_invariants();
    assert_eq!(e.active_sessions(), 0, "every session ends");
});
