#![no_main]
// The entry point is sans-IO: the shim reads the clock and hands it in as the virtual origin.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ignis::fuzzing::call::call_session_pipeline(std::time::Instant::now(), data)
});
