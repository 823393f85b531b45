//! The SSE parser both providers' streams go through (`bridle-router`'s `provider/sse.rs`).
//! Input: one byte choosing how the stream is cut into network reads, then the stream.
//!
//! Properties: no panic; the events do not depend on where the reads were cut (a UTF-8
//! character or a line split across reads is reassembled).
#![no_main]

use bridle_router::fuzzing::SseParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = SseParser::default().push(stream);
    // Reads of 1 to 32 bytes.
    let size = usize::from(cut % 32) + 1;
    let mut parser = SseParser::default();
    let mut pieces = Vec::new();
    let mut failed = None;
    for chunk in stream.chunks(size) {
        match parser.push(chunk) {
            Ok(events) => pieces.extend(events),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    match (whole, failed) {
        (Ok(events), None) => assert_eq!(
            events, pieces,
            "the same stream read {size} bytes at a time gives other events"
        ),
        // The line-length limit (8 MiB) is far above any input the fuzzer makes.
        (whole, failed) => panic!("the stream was refused: {whole:?} / {failed:?}"),
    }
});
