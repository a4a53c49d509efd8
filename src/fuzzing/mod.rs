//! Entry points for the fuzz targets in `fuzz/` and the seed-replay tests in `tests/`.
//!
//! Each function takes arbitrary bytes and must never panic. They are public but hidden so the
//! fuzz crate can reach internals without widening the real API, and compiled only with the
//! test-only `fuzzing` feature (as str0m's `_internal_test_exports`), so no release binary
//! carries them. Like the code they exercise they are sans-IO: the stateful ones take a `start`
//! instant from the caller and move time only as the input says.

pub mod agent;
pub mod audio;
pub mod call;
pub mod files;
pub mod front_door;
pub mod practice;

/// A byte cursor that yields zeros once the input is exhausted, for the operation-sequence
/// targets.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl Bytes<'_> {
    pub(crate) fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    pub(crate) fn u64(&mut self) -> u64 {
        (0..4).fold(0, |acc, i| acc | (u64::from(self.u16()) << (16 * i)))
    }

    /// Up to `max` raw bytes, the count taken from the input.
    pub(crate) fn slice(&mut self, max: usize) -> &[u8] {
        let n = usize::from(self.u8()).min(max).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
