//! G.711 μ-law codec, bit-exact with the ITU-T G.191 reference (`ulaw_compress`/`ulaw_expand`).
//!
//! - Decode is a 256-entry table (docs/dsp.md §1.2, §1.6): every implementation agrees on it.
//! - Encode is the branchless "ITU-exact" form of docs/dsp.md §1.4: the classic bias-0x84 algorithm
//!   with the one's-complement magnitude `x ^ (x >> 15)` for negative inputs. The CPython
//!   `audioop` and Sun variants differ from G.191 on 127–508 negative inputs; we follow G.191.
//! - The segment/mantissa search uses the exponent and top mantissa bits of the biased magnitude
//!   converted to `f32` (exact: the biased magnitude is < 2^15). That needs no `lzcnt`, so the loop
//!   auto-vectorises on the baseline x86-64 target (SSE2) as well as on `x86-64-v3`.
//!
//! All functions are slice-in/slice-out and never allocate. Lengths must match: the shorter of
//! the two slices bounds the work and the number of samples written is returned.

/// μ-law code of digital silence (decodes to 0).
pub const SILENCE: u8 = 0xFF;

/// Samples (and bytes) in one 20 ms μ-law frame at 8 kHz (docs/twilio.md §1.5).
pub const FRAME_SAMPLES: usize = 160;

/// Scale between `i16` sample values and the `f32` range `[-1.0, 1.0)` used by the resamplers.
pub const I16_SCALE: f32 = 32768.0;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Decodes one μ-law code by the formula of docs/dsp.md §1.2 (used to build the table).
const fn decode_formula(code: u8) -> i16 {
    let u = !code;
    let exp = ((u >> 4) & 7) as i32;
    let mant = (u & 0x0F) as i32;
    let t = ((mant << 3) + BIAS) << exp;
    if u & 0x80 == 0 {
        (t - BIAS) as i16
    } else {
        (BIAS - t) as i16
    }
}

const fn build_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_formula(i as u8);
        i += 1;
    }
    table
}

const fn build_decode_table_f32() -> [f32; 256] {
    let mut table = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = DECODE_TABLE[i] as f32 / I16_SCALE;
        i += 1;
    }
    table
}

/// The 256-entry decode table: `DECODE_TABLE[code]` is the linear `i16` value of `code`.
pub static DECODE_TABLE: [i16; 256] = build_decode_table();

/// The decode table pre-scaled to `f32` in `[-1.0, 1.0)` (value / 32768).
static DECODE_TABLE_F32: [f32; 256] = build_decode_table_f32();

/// Decodes one μ-law code to a linear 16-bit sample.
#[inline]
pub fn decode_sample(code: u8) -> i16 {
    DECODE_TABLE[code as usize]
}

/// Encodes one linear 16-bit sample to μ-law, exactly as ITU-T G.191 `ulaw_compress`.
#[inline(always)]
pub fn encode_sample(x: i16) -> u8 {
    encode_i32(i32::from(x))
}

/// Decodes μ-law codes into `i16` samples. Returns the number of samples written
/// (`min(input.len(), output.len())`).
#[inline]
pub fn decode_into(input: &[u8], output: &mut [i16]) -> usize {
    let n = input.len().min(output.len());
    for (o, &c) in output[..n].iter_mut().zip(&input[..n]) {
        *o = DECODE_TABLE[c as usize];
    }
    n
}

/// Decodes μ-law codes into `f32` samples scaled to `[-1.0, 1.0)`. Returns the number written.
#[inline]
pub fn decode_f32_into(input: &[u8], output: &mut [f32]) -> usize {
    let n = input.len().min(output.len());
    for (o, &c) in output[..n].iter_mut().zip(&input[..n]) {
        *o = DECODE_TABLE_F32[c as usize];
    }
    n
}

/// Encodes `i16` samples into μ-law codes (ITU-T G.191 exact). Returns the number written.
#[inline]
pub fn encode_into(input: &[i16], output: &mut [u8]) -> usize {
    let n = input.len().min(output.len());
    for (o, &x) in output[..n].iter_mut().zip(&input[..n]) {
        *o = encode_sample(x);
    }
    n
}

/// Converts one `f32` sample in `[-1.0, 1.0)` to `i16`, rounding to nearest and saturating.
#[inline(always)]
pub fn f32_to_i16(x: f32) -> i16 {
    // `as` saturates (and maps NaN to 0); adding ±0.5 before truncation rounds half away from
    // zero without a libm call (docs/dsp.md §1.6: `.round()` is a slow call on the baseline target).
    let v = x * I16_SCALE;
    (v + 0.5f32.copysign(v)) as i16
}

/// Encodes `f32` samples in `[-1.0, 1.0)` into μ-law: each sample is first rounded to the
/// nearest `i16` (saturating; ties to even), then encoded exactly as [`encode_sample`].
/// Returns the number written.
#[inline]
pub fn encode_f32_into(input: &[f32], output: &mut [u8]) -> usize {
    let n = input.len().min(output.len());
    for (o, &x) in output[..n].iter_mut().zip(&input[..n]) {
        *o = encode_i32(round_clamped(x));
    }
    n
}

/// `x · 32768` clamped to the `i16` range and rounded to nearest (ties to even), as `i32`.
///
/// Adding 1.5·2²³ puts the rounded integer in the low mantissa bits (exact for |v| < 2²²), so
/// this is a float add and an integer subtract: the encode loop vectorises, unlike a saturating
/// `as` cast or `round()` (a libm call on the baseline target, docs/dsp.md §1.6). `max`/`min` also
/// map NaN to −32768 instead of propagating it.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` would propagate NaN; `max`/`min` replace it.
fn round_clamped(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    let v = (x * I16_SCALE).max(-32768.0).min(32767.0);
    (v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

/// [`encode_sample`] on an `i32` already in the `i16` range.
#[inline(always)]
fn encode_i32(x: i32) -> u8 {
    let sign = (x >> 8) & 0x80; // 0x80 for negative inputs
    // One's complement for negatives (docs/dsp.md §1.4): this is what makes the result ITU-exact.
    let mag = (x ^ (x >> 31)).min(CLIP) + BIAS;
    // `mag` is in 132..=32767, exact in f32; its float exponent is floor(log2(mag)) + 127 and
    // the top 4 mantissa bits are the μ-law mantissa. So bits >> 19 = ((seg + 7 + 127) << 4) | m.
    let bits = (mag as f32).to_bits() as i32;
    !((sign | ((bits >> 19) - (134 << 4))) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Table of docs/dsp.md §1.5 (ITU G.191 column).
    const ENCODE_VECTORS: &[(i16, u8)] = &[
        (0, 0xFF),
        (1, 0xFF),
        (3, 0xFF),
        (4, 0xFE),
        (8, 0xFE),
        (31, 0xFB),
        (32, 0xFB),
        (-32, 0x7B),
        (100, 0xF2),
        (1000, 0xCE),
        (-1000, 0x4E),
        (8159, 0x9F),
        (16000, 0x90),
        (-16000, 0x10),
        (31611, 0x81),
        (31612, 0x80),
        (32124, 0x80),
        (32767, 0x80),
        (-32767, 0x00),
        (-32768, 0x00),
        (-1, 0x7F),
        (-2, 0x7F),
        (-3, 0x7F),
        (-4, 0x7F),
        (-5, 0x7E),
        (-8, 0x7E),
        (-100, 0x73),
        (-31612, 0x01),
        (-31613, 0x00),
    ];

    const DECODE_VECTORS: &[(u8, i16)] = &[
        (0x00, -32124),
        (0x01, -31100),
        (0x0F, -16764),
        (0x10, -15996),
        (0x1F, -8316),
        (0x20, -7932),
        (0x3F, -1980),
        (0x40, -1884),
        (0x5F, -396),
        (0x70, -120),
        (0x7D, -16),
        (0x7E, -8),
        (0x7F, 0),
        (0x80, 32124),
        (0x8F, 16764),
        (0xBF, 1980),
        (0xEF, 132),
        (0xF0, 120),
        (0xFD, 16),
        (0xFE, 8),
        (0xFF, 0),
    ];

    #[test]
    fn encode_matches_spec_vectors() {
        for &(x, code) in ENCODE_VECTORS {
            assert_eq!(encode_sample(x), code, "input {x}");
        }
    }

    #[test]
    fn decode_matches_spec_vectors() {
        for &(code, x) in DECODE_VECTORS {
            assert_eq!(decode_sample(code), x, "code {code:#04x}");
        }
    }

    #[test]
    fn every_code_round_trips_except_negative_zero() {
        for code in 0..=255u8 {
            let back = encode_sample(decode_sample(code));
            if code == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, code);
            }
        }
    }

    #[test]
    fn f32_paths_agree_with_i16_paths() {
        let codes: Vec<u8> = (0..=255).collect();
        let mut f = vec![0.0f32; 256];
        let mut back = vec![0u8; 256];
        decode_f32_into(&codes, &mut f);
        encode_f32_into(&f, &mut back);
        for (i, (&c, &b)) in codes.iter().zip(&back).enumerate() {
            assert_eq!(f[i] * I16_SCALE, decode_sample(c) as f32);
            assert_eq!(b, encode_sample(decode_sample(c)));
        }
        assert_eq!(f32_to_i16(2.0), i16::MAX);
        assert_eq!(f32_to_i16(-2.0), i16::MIN);
        assert_eq!(f32_to_i16(f32::NAN), 0);
    }

    #[test]
    fn short_output_bounds_the_work() {
        let mut out = [0i16; 2];
        assert_eq!(decode_into(&[0xFF, 0x80, 0x00], &mut out), 2);
        assert_eq!(out, [0, 32124]);
        let mut codes = [0u8; 1];
        assert_eq!(encode_into(&[], &mut codes), 0);
    }
}
