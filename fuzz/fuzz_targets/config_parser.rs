//! Fuzz target: `csync::fuzzing::config_parser` (the same function the corpus replay
//! in `cargo test` calls).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    csync::fuzzing::config_parser(data);
});
