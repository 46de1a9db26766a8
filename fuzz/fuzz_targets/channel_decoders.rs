//! The channel's two incremental decoders — the copier's (header frames, combined and bare) and
//! the intercept's (hello and copier messages) — over any bytes, fed whole and in random chunks:
//! never a panic, and the chunking never changes what is decoded, the protocol version the stream
//! ends up speaking, or whether it fails. Both protocols: the copier's decoder plain (6) and
//! negotiating (an acknowledgement may switch it to 7), the intercept's accepting 7 and only 6.
#![no_main]

use control::channel::proto::{CopierDecoder, FrameDecoder, Framing, EXTENDED_VERSION, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

/// Split `data` at the cut points the first bytes describe.
fn chunks(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let (cuts, body) = data.split_at(data.len().min(8));
    let mut out = Vec::new();
    let mut rest = body;
    for c in cuts {
        let n = usize::from(*c).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out.push(rest);
    (out, body)
}

fuzz_target!(|data: &[u8]| {
    let (parts, whole) = chunks(data);
    for framing in [Framing::Combined, Framing::Bare] {
        for make in [FrameDecoder::new, FrameDecoder::negotiating] {
            let mut one = Vec::new();
            let mut d1 = make(framing);
            let r1 = d1.feed(whole, |m| one.push(m));
            let mut many = Vec::new();
            let mut d = make(framing);
            let mut r2 = Ok(Default::default());
            for p in &parts {
                r2 = d.feed(p, |m| many.push(m));
                if r2.is_err() {
                    break;
                }
            }
            assert!(one == many, "chunking changed the messages");
            assert_eq!(r1.is_err(), r2.is_err(), "chunking changed the outcome");
            if r1.is_ok() {
                assert_eq!(d1.version(), d.version(), "chunking changed the version");
            }
            // Every message is looked at the way the copier does: never a panic.
            for m in &one {
                let _ = (m.check(), m.payload_len(), m.tcp_options().count(), m.client(), m.target(), m.as_bytes());
                let _ = dataplane::session::ResponseHeader::from_msg(m);
            }
        }
    }
    for max in [EXTENDED_VERSION, PROTOCOL_VERSION] {
        let mut one = Vec::new();
        let mut d1 = CopierDecoder::with_max_version(max);
        let r1 = d1.feed(whole, |e| one.push(e));
        let mut many = Vec::new();
        let mut d = CopierDecoder::with_max_version(max);
        let mut r2 = Ok(());
        for p in &parts {
            r2 = d.feed(p, |e| many.push(e));
            if r2.is_err() {
                break;
            }
        }
        assert_eq!(one, many, "chunking changed the events");
        assert_eq!(r1, r2, "chunking changed the outcome");
        assert_eq!(d1.version(), d.version(), "chunking changed the version");
        if max == PROTOCOL_VERSION {
            assert_eq!(d1.version(), PROTOCOL_VERSION, "an intercept limited to 6 never upgrades");
        }
    }
});
