#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ignis::fuzzing::files::wav_file(data));
