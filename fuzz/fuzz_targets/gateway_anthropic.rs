//! The gateway's Anthropic front (`POST /v1/messages`): a request body read as JSON,
//! translated into a Bridle request and checked as the router checks every call.
//!
//! Properties: no panic or stack overflow on a service worker's stack; the error message
//! (what the client reads) bounded.
#![no_main]

use bridle_fuzz::{assert_bounded, on_service_stack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Err(m) = on_service_stack(|| bridle_router::fuzzing::anthropic_request(body)) {
        assert_bounded("Anthropic front", &m);
    }
});
