//! The channel's two incremental decoders — the copier's (header frames, combined and bare) and
//! the intercept's (hello and copier messages) — over any bytes, fed whole and in random chunks:
//! never a panic, and the chunking never changes what is decoded or whether it fails.
#![no_main]

use control::channel::proto::{CopierDecoder, FrameDecoder, Framing};
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
        let mut one = Vec::new();
        let r1 = FrameDecoder::new(framing).feed(whole, |m| one.push(*m.as_bytes()));
        let mut many = Vec::new();
        let mut d = FrameDecoder::new(framing);
        let mut r2 = Ok(Default::default());
        for p in &parts {
            r2 = d.feed(p, |m| many.push(*m.as_bytes()));
            if r2.is_err() {
                break;
            }
        }
        assert_eq!(one, many, "chunking changed the messages");
        assert_eq!(r1.is_err(), r2.is_err(), "chunking changed the outcome");
        // Every message is looked at the way the copier does: never a panic.
        for m in &one {
            let h = control::channel::HeaderMsg::from_bytes(*m);
            let _ = (h.check(), h.payload_len(), h.tcp_options().count(), h.client(), h.target());
        }
    }
    let mut one = Vec::new();
    let r1 = CopierDecoder::new().feed(whole, |e| one.push(e));
    let mut many = Vec::new();
    let mut d = CopierDecoder::new();
    let mut r2 = Ok(());
    for p in &parts {
        r2 = d.feed(p, |e| many.push(e));
        if r2.is_err() {
            break;
        }
    }
    assert_eq!(one, many, "chunking changed the events");
    assert_eq!(r1, r2, "chunking changed the outcome");
});
