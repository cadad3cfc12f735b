//! Fuzz target: `csync::fuzzing::frame_decoder` (the same function the corpus replay
//! in `cargo test` calls).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    csync::fuzzing::frame_decoder(data);
});
