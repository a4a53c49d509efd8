#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ignis::fuzzing::audio::jitter_and_reframer(data));
