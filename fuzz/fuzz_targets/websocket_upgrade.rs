#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ignis::fuzzing::front_door::websocket_upgrade(data));
