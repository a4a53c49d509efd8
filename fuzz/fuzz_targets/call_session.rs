#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ignis::fuzzing::call::call_session(data));
