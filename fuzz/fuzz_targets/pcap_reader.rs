//! The capture file reader (pcap and pcapng, every link type it knows) over any bytes: never a
//! panic, every packet it yields is an Ethernet frame of at least the header, and it ends.
#![no_main]

use dataplane::offline::PcapSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut src) = PcapSource::from_reader("fuzz.pcap", std::io::Cursor::new(data.to_vec())) else { return };
    let mut frame = Vec::new();
    for _ in 0..10_000 {
        match src.next_into(&mut frame) {
            Ok(Some(_)) => assert!(frame.len() >= 14, "an Ethernet frame"),
            Ok(None) | Err(_) => return,
        }
    }
});
