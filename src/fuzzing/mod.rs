//! Entry points for the fuzz targets in `fuzz/` and the seed-replay tests in `tests/`.
//!
//! Each function takes arbitrary bytes and must never panic. They are public but hidden so the
//! fuzz crate can reach internals without widening the real API.

pub mod audio;
pub mod front_door;
pub mod practice;
