//! The gateway's OpenAI fronts (`POST /v1/chat/completions` and `POST /v1/responses`): a
//! request body read as JSON, translated into a Bridle request by each and checked as the
//! router checks every call. One target for both: their inputs share most of their shapes.
//!
//! Properties: no panic or stack overflow on a service worker's stack; the error message
//! (what the client reads) bounded.
#![no_main]

use bridle_fuzz::{assert_bounded, on_service_stack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Err(m) = on_service_stack(|| bridle_router::fuzzing::openai_request(body)) {
        assert_bounded("OpenAI front", &m);
    }
    if let Err(m) = on_service_stack(|| bridle_router::fuzzing::responses_request(body)) {
        assert_bounded("Responses front", &m);
    }
});
