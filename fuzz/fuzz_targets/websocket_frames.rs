#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ignis::fuzzing::agent::websocket_frames(data));
