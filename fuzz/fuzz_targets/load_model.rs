//! Arbitrary bytes as a model file: loading must return a model or an error, never panic,
//! abort or allocate without bound; a model that loads must predict (or reject) a window.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    tns_engine::fuzz_check(bytes);
});
