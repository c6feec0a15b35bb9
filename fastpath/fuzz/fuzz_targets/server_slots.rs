//! The daemon's slot parsing against a client that controls every byte of its
//! region: the input is a script of scribbles, well-stamped slots with arbitrary
//! contents, daemon polls and responses (see `trace2e_fastpath::fuzz_support`).
//! The daemon must never panic, loop, or accept a payload outside its geometry.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trace2e_fastpath::fuzz_support::run(data);
});
