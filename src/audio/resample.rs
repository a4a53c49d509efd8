//! Streaming sample-rate conversion between 8 kHz (Twilio) and every agent rate.
//!
//! Three engines (docs/dsp.md §2.3, §5.3, §5.5; figures in BENCHMARKS.md):
//! - [`Engine::HalfbandIir`]: a 13th-order elliptic halfband as two parallel allpass chains
//!   (polyphase IIR) for the exact 2:1 / 1:2 pair. 0.2–0.45 ms group delay in the voice band,
//!   flat to 3.4 kHz, ≥ 90 dB rejection from 4.6 kHz, and every input sample's outputs at once:
//!   a caller's onset leaves with its own 20 ms frame (docs/dsp.md §5.5).
//! - [`Engine::Halfband`]: a 71-tap Kaiser halfband polyphase FIR for the exact 2:1 / 1:2 pair
//!   (8 kHz ↔ 16 kHz). 2.19 ms (up) / 2.13 ms (down) linear-phase delay, flat to 3.4 kHz,
//!   ≥ 80 dB rejection from 4.6 kHz. Its pure delay trims exactly, so it stays on the way down,
//!   where the input runs ahead of real time and the delay costs nothing.
//! - [`Engine::Rubato`]: rubato 5 `Fft` with `FixedSync::Both` and a 20 ms chunk, for every other
//!   ratio (22.05/24/44.1/48 kHz). Textbook quality and cheap, but half an FFT block (10 ms) of
//!   delay. No rubato configuration reaches 2.5 ms without cutting into the voice band (§2.3).
//!
//! [`Engine::Auto`] picks identity for equal rates, the IIR halfband for 1:2 (caller audio, where
//! delay is latency), the FIR halfband for 2:1, rubato otherwise (docs/dsp.md §5.5).
//!
//! Streaming contract: state is kept across calls, so feeding a signal in any chunking gives
//! exactly the output of one call over the whole signal. [`Resampler::flush_into`] pushes out what
//! is still inside the filter (end of an agent turn, docs/dsp.md §2.5) and then resets;
//! [`Resampler::reset`] drops it (interruption). No allocation after [`Resampler::new`].

use std::fmt;

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler as _};

/// Halfband filter length. N = 4k + 3 so the outermost taps are non-zero (docs/dsp.md §5.3).
pub const HALFBAND_TAPS: usize = 71;
/// Kaiser β of the halfband. Chosen by measurement (tests below): ≥ 80 dB at 4.6 kHz with
/// the 3.4 kHz point still within 0.1 dB.
const HALFBAND_KAISER_BETA: f64 = 8.2;
/// Non-zero taps of the computed phase: offsets ±1, ±3 … ±35 from the centre.
const PHASE_TAPS: usize = HALFBAND_TAPS.div_ceil(4) * 2; // 36
/// Phase taps padded to a multiple of the 8-lane dot product.
const PADDED: usize = PHASE_TAPS.div_ceil(8) * 8; // 40
/// Centre tap index: the delay in samples at the high rate.
const CENTRE: usize = (HALFBAND_TAPS - 1) / 2; // 35
/// Samples processed per inner block (bounds the history buffers, held for the whole call:
/// 256 cost 1 KiB more per `pcm_16000` call, issue 16 RSS).
const BLOCK: usize = 128;
/// The zeros [`Resampler::flush_into`] feeds in: shared, not a kilobyte per resampler (RSS).
static ZEROS: [f32; BLOCK] = [0.0; BLOCK];

/// Allpass coefficients of the two-path elliptic halfband, H(z) = ½[A0(z²) + z⁻¹·A1(z²)],
/// each Ai a cascade of sections (a + z⁻²)/(1 + a·z⁻²). From `docs/halfband_iir_design.py`:
/// the closed-form elliptic halfband of Valenzuela & Constantinides (1983) for a transition of
/// 1.2 kHz at 16 kHz (3.4 → 4.6 kHz) and ≥ 80 dB, which needs order 13 (six coefficients,
/// alternating between the paths) and gives 92.5 dB (docs/dsp.md §5.5).
pub const IIR_HALFBAND_PATH0: [f64; IIR_SECTIONS] = [
    0.047_267_509_684_947_87,
    0.347_345_969_757_530_74,
    0.717_454_447_932_491_7,
];
/// Path 1 (the odd-phase path, z⁻¹·A1(z²)) of [`IIR_HALFBAND_PATH0`]'s filter.
pub const IIR_HALFBAND_PATH1: [f64; IIR_SECTIONS] = [
    0.174_345_022_681_705_3,
    0.533_874_410_531_109,
    0.901_404_443_585_987_3,
];
/// First-order allpass sections per path.
pub const IIR_SECTIONS: usize = 3;
/// Nominal delay of the IIR interpolator in 16 kHz samples: its group delay at 1 kHz (3.34)
/// rounded. What [`Resampler::delay_frames`] reports for it (docs/dsp.md §5.5).
const IIR_UP_DELAY: usize = 3;
/// Nominal delay of the IIR decimator in 8 kHz samples: (3.34 − 1) / 2 rounded (the output is
/// taken at the odd input sample, one 16 kHz sample later than the even one).
const IIR_DOWN_DELAY: usize = 1;
/// Allpass state below this is set to zero after each call, so that a decaying state never
/// reaches subnormal numbers (slow on x86) during long silences. −400 dB: inaudible.
const IIR_STATE_FLOOR: f64 = 1e-20;

/// Which implementation converts the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Identity for equal rates, the IIR halfband for 1:2, the FIR halfband for 2:1, rubato
    /// `Fft` otherwise.
    #[default]
    Auto,
    /// The 71-tap halfband FIR; only valid for an exact 2:1 or 1:2 ratio.
    Halfband,
    /// The two-path allpass (polyphase IIR) halfband; only valid for an exact 2:1 or 1:2 ratio.
    HalfbandIir,
    /// rubato 5 `Fft`, `FixedSync::Both`, 20 ms chunks; any ratio.
    Rubato,
}

/// Why a resampler could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleSetupError {
    /// A rate was zero or not a whole number of samples per 20 ms.
    BadRate {
        /// The offending rate in Hz.
        rate: u32,
    },
    /// [`Engine::Halfband`] or [`Engine::HalfbandIir`] was asked for a ratio other than 2:1 or
    /// 1:2.
    NotHalfbandRatio,
    /// rubato refused the configuration.
    Rubato,
}

impl fmt::Display for ResampleSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRate { rate } => write!(f, "unsupported sample rate {rate} Hz"),
            Self::NotHalfbandRatio => f.write_str("halfband engine needs a 2:1 or 1:2 ratio"),
            Self::Rubato => f.write_str("rubato rejected the resampler configuration"),
        }
    }
}

impl std::error::Error for ResampleSetupError {}

/// A processing call failed. Both are caller bugs (sizes are known from the size queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResampleError {
    /// The output slice is shorter than [`Resampler::output_frames_max`] said it must be.
    OutputTooSmall {
        /// Frames the call needs room for.
        needed: usize,
        /// Frames the caller provided.
        actual: usize,
    },
    /// rubato reported an error (should not happen with the sizes we pass).
    Engine,
}

impl fmt::Display for ResampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutputTooSmall { needed, actual } => {
                write!(f, "output buffer too small: need {needed}, have {actual}")
            }
            Self::Engine => f.write_str("rubato processing error"),
        }
    }
}

impl std::error::Error for ResampleError {}

/// A streaming mono `f32` resampler (see the module docs).
pub struct Resampler {
    rate_in: u32,
    rate_out: u32,
    kind: Kind,
    /// Whether to drop the leading `delay` output samples after each reset.
    trim_leading: bool,
    /// Leading output samples still to drop.
    to_trim: usize,
    /// Input samples consumed since the last reset.
    in_total: u64,
    /// Output samples produced (before trimming) since the last reset.
    out_total: u64,
}

enum Kind {
    Identity,
    Up2(Box<HalfbandUp>),
    Down2(Box<HalfbandDown>),
    IirUp(IirUp),
    IirDown(IirDown),
    Fft(Box<RubatoFft>),
}

impl Resampler {
    /// Builds a resampler from `rate_in` to `rate_out` Hz.
    ///
    /// With `trim_leading`, the first [`Resampler::delay_frames`] output samples after each reset
    /// are dropped so that output sample 0 lines up with input sample 0. Use it where input
    /// arrives faster than real time (agent audio): the filter delay then costs nothing. For
    /// real-time input (caller audio) trimming cannot remove latency, so leave it off.
    pub fn new(
        rate_in: u32,
        rate_out: u32,
        engine: Engine,
        trim_leading: bool,
    ) -> Result<Self, ResampleSetupError> {
        for rate in [rate_in, rate_out] {
            if rate == 0 || rate % 50 != 0 {
                return Err(ResampleSetupError::BadRate { rate });
            }
        }
        let halfband_ok = rate_out == 2 * rate_in || rate_in == 2 * rate_out;
        let up = rate_out > rate_in;
        let kind = match engine {
            Engine::Auto if rate_in == rate_out => Kind::Identity,
            // Up (caller audio, real time): the IIR, whose delay fits inside the frame. Down
            // (agent audio, faster than real time): the FIR, whose delay is trimmed for free
            // (docs/dsp.md §5.5).
            Engine::Auto | Engine::HalfbandIir if halfband_ok && up => {
                Kind::IirUp(IirUp::default())
            }
            Engine::HalfbandIir if halfband_ok => Kind::IirDown(IirDown::default()),
            Engine::Auto | Engine::Halfband if halfband_ok => {
                if up {
                    Kind::Up2(Box::new(HalfbandUp::new()))
                } else {
                    Kind::Down2(Box::new(HalfbandDown::new()))
                }
            }
            Engine::Halfband | Engine::HalfbandIir => {
                return Err(ResampleSetupError::NotHalfbandRatio);
            }
            Engine::Auto | Engine::Rubato => {
                Kind::Fft(Box::new(RubatoFft::new(rate_in, rate_out)?))
            }
        };
        let mut r = Self {
            rate_in,
            rate_out,
            kind,
            trim_leading,
            to_trim: 0,
            in_total: 0,
            out_total: 0,
        };
        r.reset();
        Ok(r)
    }

    /// Input rate in Hz.
    pub fn rate_in(&self) -> u32 {
        self.rate_in
    }

    /// Output rate in Hz.
    pub fn rate_out(&self) -> u32 {
        self.rate_out
    }

    /// Which engine was chosen, as a short name for logs and benches.
    pub fn engine_name(&self) -> &'static str {
        match self.kind {
            Kind::Identity => "identity",
            Kind::Up2(_) | Kind::Down2(_) => "halfband71",
            Kind::IirUp(_) | Kind::IirDown(_) => "halfband-iir13",
            Kind::Fft(_) => "rubato-fft",
        }
    }

    /// Algorithmic delay in output samples: what `trim_leading` drops and what
    /// [`Resampler::flush_into`] pushes out. The FIRs have a pure delay. The IIR halfband's group
    /// delay varies with frequency (0.2 ms at 300 Hz to 0.6 ms at 3.4 kHz); for it this is the
    /// group delay at 1 kHz, rounded, and its ringing beyond that is dropped by the flush's reset
    /// (docs/dsp.md §5.5).
    pub fn delay_frames(&self) -> usize {
        match &self.kind {
            Kind::Identity => 0,
            Kind::Up2(_) => CENTRE,
            Kind::Down2(_) => HalfbandDown::DELAY,
            Kind::IirUp(_) => IIR_UP_DELAY,
            Kind::IirDown(_) => IIR_DOWN_DELAY,
            Kind::Fft(f) => f.inner.output_delay(),
        }
    }

    /// Exact number of samples the next [`Resampler::process_into`] writes for `input_len`
    /// input samples (an upper bound when leading samples are being trimmed).
    pub fn output_frames_max(&self, input_len: usize) -> usize {
        match &self.kind {
            Kind::Identity => input_len,
            Kind::Up2(_) | Kind::IirUp(_) => 2 * input_len,
            Kind::Down2(d) => (input_len + usize::from(d.carry.is_some())) / 2,
            Kind::IirDown(d) => (input_len + usize::from(d.carry.is_some())) / 2,
            Kind::Fft(f) => (f.fill + input_len) / f.chunk_in * f.chunk_out,
        }
    }

    /// [`Resampler::output_frames_max`] for `input_len` in any state (a carried sample, a
    /// partly filled FFT chunk): the room a caller sizes once for inputs of that length.
    pub fn output_frames_bound(&self, input_len: usize) -> usize {
        match &self.kind {
            Kind::Identity => input_len,
            Kind::Up2(_) | Kind::IirUp(_) => 2 * input_len,
            Kind::Down2(_) | Kind::IirDown(_) => input_len.div_ceil(2),
            Kind::Fft(f) => input_len.div_ceil(f.chunk_in) * f.chunk_out,
        }
    }

    /// Room [`Resampler::flush_into`] needs in its output slice.
    pub fn flush_frames_max(&self) -> usize {
        let chunk = match &self.kind {
            Kind::Fft(f) => f.chunk_out,
            _ => 2,
        };
        self.delay_frames() + 2 * chunk + 2
    }

    /// Resamples `input` into the front of `output`, returning the number of samples written.
    /// `output` must hold at least [`Resampler::output_frames_max`]`(input.len())` samples.
    pub fn process_into(
        &mut self,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<usize, ResampleError> {
        let needed = self.output_frames_max(input.len());
        if output.len() < needed {
            return Err(ResampleError::OutputTooSmall {
                needed,
                actual: output.len(),
            });
        }
        let n = match &mut self.kind {
            Kind::Identity => {
                output[..input.len()].copy_from_slice(input);
                input.len()
            }
            Kind::Up2(u) => u.process(input, output),
            Kind::Down2(d) => d.process(input, output),
            Kind::IirUp(u) => u.process(input, output),
            Kind::IirDown(d) => d.process(input, output),
            Kind::Fft(f) => f.process(input, output)?,
        };
        self.in_total += input.len() as u64;
        self.out_total += n as u64;
        Ok(self.trim(output, n))
    }

    /// Drops leading samples still owed to `to_trim`; returns the samples left at the front.
    fn trim(&mut self, output: &mut [f32], n: usize) -> usize {
        if self.to_trim == 0 {
            return n;
        }
        let t = self.to_trim.min(n);
        output.copy_within(t..n, 0);
        self.to_trim -= t;
        n - t
    }

    /// Ends the stream: writes everything still inside the filter (the last input samples,
    /// delayed by [`Resampler::delay_frames`]) and then resets. The total output since the
    /// previous reset becomes `ceil(inputs · rate_out / rate_in)` (plus the delay when not
    /// trimming). `output` must hold [`Resampler::flush_frames_max`] samples.
    pub fn flush_into(&mut self, output: &mut [f32]) -> Result<usize, ResampleError> {
        let needed = self.flush_frames_max();
        if output.len() < needed {
            return Err(ResampleError::OutputTooSmall {
                needed,
                actual: output.len(),
            });
        }
        let signal = (self.in_total * u64::from(self.rate_out)).div_ceil(u64::from(self.rate_in));
        let target = signal + self.delay_frames() as u64;
        let mut written = 0usize;
        let zeros = &ZEROS;
        while self.out_total < target {
            // Feed just enough zeros to produce the remaining output (rounded up to a chunk).
            let owed = (target - self.out_total) as usize;
            let z = match &self.kind {
                Kind::Identity => 0,
                Kind::Up2(_) | Kind::IirUp(_) => owed.div_ceil(2),
                Kind::Down2(_) | Kind::IirDown(_) => 2 * owed,
                Kind::Fft(f) => f.chunk_in - f.fill,
            }
            .clamp(1, zeros.len());
            let n = match &mut self.kind {
                Kind::Identity => 0,
                Kind::Up2(u) => u.process(&zeros[..z], &mut output[written..]),
                Kind::Down2(d) => d.process(&zeros[..z], &mut output[written..]),
                Kind::IirUp(u) => u.process(&zeros[..z], &mut output[written..]),
                Kind::IirDown(d) => d.process(&zeros[..z], &mut output[written..]),
                Kind::Fft(f) => f.process(&zeros[..z], &mut output[written..])?,
            };
            if n == 0 && matches!(self.kind, Kind::Identity) {
                break;
            }
            self.out_total += n as u64;
            let kept = self.trim(&mut output[written..], n);
            written += kept;
        }
        // The last chunk may overshoot the signal end: keep only what belongs to the stream.
        let overshoot = (self.out_total.saturating_sub(target)) as usize;
        written = written.saturating_sub(overshoot);
        self.reset();
        Ok(written)
    }

    /// Forgets all state (interruption): the next input starts a fresh stream.
    pub fn reset(&mut self) {
        match &mut self.kind {
            Kind::Identity => {}
            Kind::Up2(u) => u.reset(),
            Kind::Down2(d) => d.reset(),
            Kind::IirUp(u) => *u = IirUp::default(),
            Kind::IirDown(d) => *d = IirDown::default(),
            Kind::Fft(f) => f.reset(),
        }
        self.in_total = 0;
        self.out_total = 0;
        self.to_trim = if self.trim_leading {
            self.delay_frames()
        } else {
            0
        };
    }
}

impl fmt::Debug for Resampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resampler")
            .field("rate_in", &self.rate_in)
            .field("rate_out", &self.rate_out)
            .field("engine", &self.engine_name())
            .finish()
    }
}

/// Modified Bessel function of the first kind, order 0 (power series; for the Kaiser window).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// The full 71-tap halfband impulse response (cutoff fs/4, Kaiser window), unity DC gain.
pub fn halfband_taps() -> [f64; HALFBAND_TAPS] {
    let mut h = [0.0f64; HALFBAND_TAPS];
    let c = CENTRE as f64;
    let i0_beta = bessel_i0(HALFBAND_KAISER_BETA);
    let mut odd_sum = 0.0;
    for (n, tap) in h.iter_mut().enumerate() {
        let k = n as f64 - c;
        let offset = n.abs_diff(CENTRE);
        if offset == 0 {
            *tap = 0.5;
        } else if offset % 2 == 1 {
            let x = std::f64::consts::PI * k / 2.0;
            let r = k / c;
            let w = bessel_i0(HALFBAND_KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            *tap = 0.5 * x.sin() / x * w;
            odd_sum += *tap;
        }
    }
    // Scale the odd taps so they sum to 0.5: unity DC gain while the centre stays exactly 0.5,
    // which keeps the pure-delay phase exact.
    for (n, tap) in h.iter_mut().enumerate() {
        if n.abs_diff(CENTRE) % 2 == 1 {
            *tap *= 0.5 / odd_sum;
        }
    }
    h
}

/// The computed-phase coefficients, oldest sample first, front-padded with zeros to `PADDED`:
/// `c[j]` multiplies the sample `PADDED - 1 - j` steps before the newest one.
fn phase_coefficients(gain: f64) -> [f32; PADDED] {
    let h = halfband_taps();
    let mut c = [0.0f32; PADDED];
    for (j, cj) in c.iter_mut().enumerate() {
        let age = PADDED - 1 - j;
        if age < PHASE_TAPS {
            *cj = (gain * h[2 * age]) as f32;
        }
    }
    c
}

/// 8-lane dot product of the padded coefficients with `x[..PADDED]` (vectorises on SSE2).
#[inline(always)]
fn dot(c: &[f32; PADDED], x: &[f32]) -> f32 {
    let x = &x[..PADDED];
    let mut acc = [0.0f32; 8];
    for (cc, xx) in c.chunks_exact(8).zip(x.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += cc[l] * xx[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// 1:2 halfband interpolator. Per input x[m] it emits y[2m] = Σ 2h[2i]·x[m−i] and
/// y[2m+1] = x[m−17] (the centre tap: the odd phase is a pure delay, docs/dsp.md §5.3).
struct HalfbandUp {
    coeffs: [f32; PADDED],
    /// `PADDED - 1` samples of history followed by the current block.
    buf: Vec<f32>,
}

impl HalfbandUp {
    const HIST: usize = PADDED - 1;

    fn new() -> Self {
        Self {
            coeffs: phase_coefficients(2.0),
            buf: vec![0.0; Self::HIST + BLOCK],
        }
    }

    fn reset(&mut self) {
        self.buf.fill(0.0);
    }

    fn process(&mut self, input: &[f32], output: &mut [f32]) -> usize {
        let mut written = 0;
        for block in input.chunks(BLOCK) {
            let n = block.len();
            self.buf[Self::HIST..Self::HIST + n].copy_from_slice(block);
            let out = &mut output[written..written + 2 * n];
            for (m, pair) in out.chunks_exact_mut(2).enumerate() {
                pair[0] = dot(&self.coeffs, &self.buf[m..]);
                pair[1] = self.buf[m + Self::HIST - CENTRE / 2];
            }
            self.buf.copy_within(n..n + Self::HIST, 0);
            written += 2 * n;
        }
        written
    }
}

/// 2:1 halfband decimator. Per input pair (x[2m], x[2m+1]) it emits
/// y[m] = Σ h[2i]·x[2m+1−2i] + ½·x[2m−34]: a 17-output-sample (2.125 ms) delay.
struct HalfbandDown {
    coeffs: [f32; PADDED],
    /// Odd-indexed inputs: history then block.
    odd: Vec<f32>,
    /// Even-indexed inputs: history then block.
    even: Vec<f32>,
    /// First sample of an incomplete pair.
    carry: Option<f32>,
}

impl HalfbandDown {
    const HIST: usize = PADDED - 1;
    const EVEN_HIST: usize = CENTRE / 2; // 17
    const DELAY: usize = CENTRE / 2; // 17 output samples

    fn new() -> Self {
        Self {
            coeffs: phase_coefficients(1.0),
            odd: vec![0.0; Self::HIST + BLOCK],
            even: vec![0.0; Self::EVEN_HIST + BLOCK],
            carry: None,
        }
    }

    fn reset(&mut self) {
        self.odd.fill(0.0);
        self.even.fill(0.0);
        self.carry = None;
    }

    fn process(&mut self, mut input: &[f32], output: &mut [f32]) -> usize {
        let mut written = 0;
        if let Some(first) = self.carry {
            let Some((&second, rest)) = input.split_first() else {
                return 0;
            };
            self.carry = None;
            written += self.run(&[first, second], &mut output[written..]);
            input = rest;
        }
        let whole = input.len() & !1;
        for block in input[..whole].chunks(2 * BLOCK) {
            written += self.run(block, &mut output[written..]);
        }
        if whole < input.len() {
            self.carry = Some(input[whole]);
        }
        written
    }

    /// Processes an even-length block of at most `2 * BLOCK` samples.
    fn run(&mut self, block: &[f32], output: &mut [f32]) -> usize {
        let n = block.len() / 2;
        for (i, pair) in block.chunks_exact(2).enumerate() {
            self.even[Self::EVEN_HIST + i] = pair[0];
            self.odd[Self::HIST + i] = pair[1];
        }
        for (m, y) in output[..n].iter_mut().enumerate() {
            *y = dot(&self.coeffs, &self.odd[m..]) + 0.5 * self.even[m];
        }
        self.odd.copy_within(n..n + Self::HIST, 0);
        self.even.copy_within(n..n + Self::EVEN_HIST, 0);
        n
    }
}

/// One path of the IIR halfband: [`IIR_SECTIONS`] first-order allpass sections in series, each
/// y[n] = a·(x[n] − y[n−1]) + x[n−1] at the low rate (= (a + z⁻²)/(1 + a·z⁻²) at the high
/// rate). Computed in f64: a recursive chain gains nothing from SIMD, so f64 costs the same as
/// f32 and leaves no rounding floor to argue about (docs/dsp.md §5.5).
#[derive(Debug, Clone, Copy, Default)]
struct AllpassPath {
    x1: [f64; IIR_SECTIONS],
    y1: [f64; IIR_SECTIONS],
}

impl AllpassPath {
    #[inline(always)]
    fn step(&mut self, coeffs: &[f64; IIR_SECTIONS], mut x: f64) -> f64 {
        for ((a, x1), y1) in coeffs.iter().zip(&mut self.x1).zip(&mut self.y1) {
            // a·x + x1 first: only a·y1 and one subtraction stay on the recursion.
            let y = (a * x + *x1) - a * *y1;
            *x1 = x;
            *y1 = y;
            x = y;
        }
        x
    }

    /// Zeroes state that has decayed below [`IIR_STATE_FLOOR`] (no subnormals in silence).
    fn settle(&mut self) {
        for v in self.x1.iter_mut().chain(self.y1.iter_mut()) {
            if v.abs() < IIR_STATE_FLOOR {
                *v = 0.0;
            }
        }
    }
}

/// 1:2 IIR halfband interpolator: per input x[m], y[2m] = A0(x)[m] and y[2m+1] = A1(x)[m]
/// (the polyphase form of ½[A0(z²) + z⁻¹·A1(z²)] with the interpolation gain of 2). Both
/// outputs exist as soon as x[m] does: nothing waits for later input.
#[derive(Debug, Clone, Copy, Default)]
struct IirUp {
    p0: AllpassPath,
    p1: AllpassPath,
}

impl IirUp {
    fn process(&mut self, input: &[f32], output: &mut [f32]) -> usize {
        // State in locals so that it stays in registers across samples.
        let (mut p0, mut p1) = (self.p0, self.p1);
        for (&x, pair) in input.iter().zip(output.chunks_exact_mut(2)) {
            let x = f64::from(x);
            pair[0] = p0.step(&IIR_HALFBAND_PATH0, x) as f32;
            pair[1] = p1.step(&IIR_HALFBAND_PATH1, x) as f32;
        }
        p0.settle();
        p1.settle();
        (self.p0, self.p1) = (p0, p1);
        2 * input.len()
    }
}

/// 2:1 IIR halfband decimator: per input pair (x[2m], x[2m+1]) it emits
/// y[m] = ½[A0(x[2m+1]) + A1(x[2m])], the filter's output at the odd sample 2m+1.
#[derive(Debug, Clone, Copy, Default)]
struct IirDown {
    p0: AllpassPath,
    p1: AllpassPath,
    /// First sample of an incomplete pair.
    carry: Option<f32>,
}

impl IirDown {
    fn process(&mut self, mut input: &[f32], output: &mut [f32]) -> usize {
        let mut written = 0;
        if let Some(first) = self.carry {
            let Some((&second, rest)) = input.split_first() else {
                return 0;
            };
            self.carry = None;
            output[0] = Self::pair(&mut self.p0, &mut self.p1, first, second);
            written = 1;
            input = rest;
        }
        let pairs = input.chunks_exact(2);
        if let [last] = pairs.remainder() {
            self.carry = Some(*last);
        }
        // State in locals so that it stays in registers across samples.
        let (mut p0, mut p1) = (self.p0, self.p1);
        for (pair, y) in pairs.zip(&mut output[written..]) {
            *y = Self::pair(&mut p0, &mut p1, pair[0], pair[1]);
            written += 1;
        }
        p0.settle();
        p1.settle();
        (self.p0, self.p1) = (p0, p1);
        written
    }

    #[inline(always)]
    fn pair(p0: &mut AllpassPath, p1: &mut AllpassPath, even: f32, odd: f32) -> f32 {
        let a0 = p0.step(&IIR_HALFBAND_PATH0, f64::from(odd));
        let a1 = p1.step(&IIR_HALFBAND_PATH1, f64::from(even));
        (0.5 * (a0 + a1)) as f32
    }
}

/// rubato `Fft` with `FixedSync::Both` and 20 ms chunks, fed from an accumulator so callers may
/// pass any length.
struct RubatoFft {
    inner: Fft<f32>,
    chunk_in: usize,
    chunk_out: usize,
    pending: Vec<f32>,
    fill: usize,
}

impl RubatoFft {
    fn new(rate_in: u32, rate_out: u32) -> Result<Self, ResampleSetupError> {
        let chunk = rate_in as usize / 50;
        let inner = Fft::<f32>::new(
            rate_in as usize,
            rate_out as usize,
            chunk,
            1,
            FixedSync::Both,
        )
        .map_err(|_| ResampleSetupError::Rubato)?;
        let chunk_in = inner.input_frames_next();
        let chunk_out = inner.output_frames_next();
        if chunk_in == 0 || chunk_out == 0 {
            return Err(ResampleSetupError::Rubato);
        }
        Ok(Self {
            inner,
            chunk_in,
            chunk_out,
            pending: vec![0.0; chunk_in],
            fill: 0,
        })
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.fill = 0;
    }

    fn process(&mut self, mut input: &[f32], output: &mut [f32]) -> Result<usize, ResampleError> {
        let mut written = 0;
        while !input.is_empty() {
            let take = (self.chunk_in - self.fill).min(input.len());
            self.pending[self.fill..self.fill + take].copy_from_slice(&input[..take]);
            self.fill += take;
            input = &input[take..];
            if self.fill == self.chunk_in {
                let out = &mut output[written..written + self.chunk_out];
                let src = SequentialSlice::new(&self.pending[..], 1, self.chunk_in)
                    .map_err(|_| ResampleError::Engine)?;
                let mut dst = SequentialSlice::new_mut(out, 1, self.chunk_out)
                    .map_err(|_| ResampleError::Engine)?;
                let (_, n) = self
                    .inner
                    .process_into_buffer(&src, &mut dst, None)
                    .map_err(|_| ResampleError::Engine)?;
                written += n;
                self.fill = 0;
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (i as f32 * 0.37).sin() * 0.4 + (i as f32 * 0.011).cos() * 0.3)
            .collect()
    }

    fn run_chunked(r: &mut Resampler, x: &[f32], sizes: &[usize]) -> Vec<f32> {
        let mut out = Vec::new();
        let mut buf = vec![0.0f32; 8192];
        let mut rest = x;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            i += 1;
            let w = r.process_into(&rest[..n], &mut buf).unwrap();
            out.extend_from_slice(&buf[..w]);
            rest = &rest[n..];
        }
        let w = r.flush_into(&mut buf).unwrap();
        out.extend_from_slice(&buf[..w]);
        out
    }

    const PAIRS: &[(u32, u32)] = &[
        (8000, 16000),
        (16000, 8000),
        (8000, 22050),
        (22050, 8000),
        (8000, 24000),
        (48000, 8000),
        (8000, 8000),
    ];

    /// Any chunking gives the one-shot output, whose length is exact (plus the delay untrimmed).
    fn streams_exactly(a: u32, b: u32, engine: Engine, trim: bool, x: &[f32]) {
        let mut r = Resampler::new(a, b, engine, trim).unwrap();
        let one = run_chunked(&mut r, x, &[x.len()]);
        let chunked = run_chunked(&mut r, x, &[1, 160, 7, 333, 2]);
        assert_eq!(one, chunked, "{engine:?} {a}->{b} trim {trim}");
        let signal_len = (x.len() as u64 * u64::from(b)).div_ceil(u64::from(a)) as usize;
        let expect = signal_len + if trim { 0 } else { r.delay_frames() };
        assert_eq!(one.len(), expect, "{engine:?} {a}->{b} trim {trim}");
    }

    /// `output_frames_bound` is sized once (the inbound path's buffer): it must cover what any
    /// state of the stream asks for, for every engine and ratio.
    #[test]
    fn output_bound_covers_every_state() {
        let x = signal(4000);
        let engines = [
            Engine::Auto,
            Engine::Rubato,
            Engine::Halfband,
            Engine::HalfbandIir,
        ];
        for &(a, b) in PAIRS {
            for engine in engines {
                let Ok(mut r) = Resampler::new(a, b, engine, true) else {
                    continue;
                };
                let mut buf = vec![0.0f32; 8192];
                let mut rest = &x[..];
                for n in [1, 160, 7, 333, 2, 159, 161, 80].iter().cycle() {
                    let n = (*n).min(rest.len());
                    if n == 0 {
                        break;
                    }
                    for len in [1, 7, 160, 161, 320] {
                        assert!(
                            r.output_frames_max(len) <= r.output_frames_bound(len),
                            "{engine:?} {a}->{b} len {len}"
                        );
                    }
                    r.process_into(&rest[..n], &mut buf).unwrap();
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_equals_one_shot_and_flush_lengths_are_exact() {
        for &(a, b) in PAIRS {
            for trim in [false, true] {
                streams_exactly(a, b, Engine::Auto, trim, &signal(a as usize / 10 + 7));
            }
        }
    }

    #[test]
    fn explicit_halfband_engines_stream_exactly_too() {
        for engine in [Engine::Halfband, Engine::HalfbandIir] {
            for (a, b) in [(8000, 16000), (16000, 8000)] {
                for trim in [false, true] {
                    streams_exactly(a, b, engine, trim, &signal(1607));
                }
            }
        }
    }

    #[test]
    fn iir_state_settles_to_zero_in_silence() {
        for (a, b) in [(8000, 16000), (16000, 8000)] {
            let mut r = Resampler::new(a, b, Engine::HalfbandIir, false).unwrap();
            let mut out = vec![0.0f32; 640];
            r.process_into(&signal(320), &mut out).unwrap();
            let paths = |r: &Resampler| match &r.kind {
                Kind::IirUp(u) => [u.p0, u.p1],
                Kind::IirDown(d) => [d.p0, d.p1],
                _ => unreachable!(),
            };
            let state = |r: &Resampler| {
                paths(r)
                    .iter()
                    .flat_map(|p| p.x1.iter().chain(&p.y1).copied().collect::<Vec<_>>())
                    .collect::<Vec<f64>>()
            };
            assert!(state(&r).iter().any(|&v| v != 0.0));
            // 1600 silent samples: the state decays (poles at most 0.90 per step of a section)
            // below the floor within ~450 steps, is then set to exactly zero, and never passes
            // through subnormal numbers.
            for _ in 0..5 {
                r.process_into(&[0.0; 320], &mut out).unwrap();
                assert!(state(&r).iter().all(|&v| v == 0.0 || v.is_normal()));
            }
            assert!(state(&r).iter().all(|&v| v == 0.0), "{a}->{b}");
        }
    }

    #[test]
    fn empty_and_odd_inputs() {
        let mut r = Resampler::new(16000, 8000, Engine::Auto, false).unwrap();
        let mut out = [0.0f32; 64];
        assert_eq!(r.process_into(&[], &mut out), Ok(0));
        assert_eq!(r.process_into(&[0.5], &mut out), Ok(0));
        assert_eq!(r.output_frames_max(1), 1);
        assert_eq!(r.process_into(&[0.5], &mut out), Ok(1));
        assert_eq!(
            r.process_into(&[0.0; 300], &mut out),
            Err(ResampleError::OutputTooSmall {
                needed: 150,
                actual: 64
            })
        );
        let mut empty = Resampler::new(8000, 16000, Engine::Auto, true).unwrap();
        let mut big = vec![0.0; empty.flush_frames_max()];
        assert_eq!(empty.flush_into(&mut big), Ok(0));
    }

    #[test]
    fn engine_selection() {
        let r = |a, b, e| Resampler::new(a, b, e, false).map(|r| r.engine_name());
        assert_eq!(r(8000, 8000, Engine::Auto), Ok("identity"));
        assert_eq!(r(8000, 16000, Engine::Auto), Ok("halfband-iir13"));
        assert_eq!(r(16000, 8000, Engine::Auto), Ok("halfband71"));
        assert_eq!(r(8000, 16000, Engine::Halfband), Ok("halfband71"));
        assert_eq!(r(16000, 8000, Engine::HalfbandIir), Ok("halfband-iir13"));
        assert_eq!(
            r(8000, 22050, Engine::HalfbandIir).unwrap_err(),
            ResampleSetupError::NotHalfbandRatio
        );
        assert_eq!(r(16000, 8000, Engine::Rubato), Ok("rubato-fft"));
        assert_eq!(r(8000, 44100, Engine::Auto), Ok("rubato-fft"));
        assert_eq!(
            r(8000, 24000, Engine::Halfband).unwrap_err(),
            ResampleSetupError::NotHalfbandRatio
        );
        assert!(matches!(
            r(8000, 12345, Engine::Auto),
            Err(ResampleSetupError::BadRate { rate: 12345 })
        ));
    }

    /// Magnitude response of the full halfband in dB at `f` Hz (fs = 16 kHz).
    fn response_db(f: f64) -> f64 {
        let h = halfband_taps();
        let w = 2.0 * std::f64::consts::PI * f / 16000.0;
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &t) in h.iter().enumerate() {
            re += t * (w * n as f64).cos();
            im -= t * (w * n as f64).sin();
        }
        20.0 * (re * re + im * im).sqrt().log10()
    }

    /// Complex response of the IIR halfband ½[A0(z²) + z⁻¹·A1(z²)] at `f` Hz (fs = 16 kHz),
    /// from the product's constants.
    fn iir_response(f: f64) -> (f64, f64) {
        let w = 2.0 * std::f64::consts::PI * f / 16000.0;
        let mul = |(a, b): (f64, f64), (c, d): (f64, f64)| (a * c - b * d, a * d + b * c);
        let z2 = ((2.0 * w).cos(), -(2.0 * w).sin());
        let path = |coeffs: &[f64; IIR_SECTIONS]| {
            coeffs.iter().fold((1.0, 0.0), |acc, &a| {
                let (nr, ni) = (a + z2.0, z2.1);
                let (dr, di) = (1.0 + a * z2.0, a * z2.1);
                let den = dr * dr + di * di;
                let q = ((nr * dr + ni * di) / den, (ni * dr - nr * di) / den);
                mul(acc, q)
            })
        };
        let a0 = path(&IIR_HALFBAND_PATH0);
        let a1 = mul(path(&IIR_HALFBAND_PATH1), (w.cos(), -w.sin()));
        (0.5 * (a0.0 + a1.0), 0.5 * (a0.1 + a1.1))
    }

    #[test]
    fn iir_halfband_design_meets_the_mask() {
        let db = |f: f64| {
            let (re, im) = iir_response(f);
            10.0 * (re * re + im * im).log10()
        };
        for f in (0..=3400).step_by(10) {
            assert!(db(f as f64).abs() <= 1e-6, "{f} Hz: {}", db(f as f64));
        }
        for f in (4600..=8000).step_by(10) {
            assert!(db(f as f64) <= -90.0, "{f} Hz: {}", db(f as f64));
        }
        // Group delay (−dφ/dω) under 1 ms (16 samples) across the voice band.
        let phase = |f: f64| {
            let (re, im) = iir_response(f);
            im.atan2(re)
        };
        for f in [300.0, 1000.0, 2000.0, 3000.0] {
            let d = phase(f - 0.5) - phase(f + 0.5);
            let d = (d + std::f64::consts::PI).rem_euclid(2.0 * std::f64::consts::PI)
                - std::f64::consts::PI;
            let samples = d / (2.0 * std::f64::consts::PI / 16000.0);
            assert!(samples > 2.0 && samples < 8.0, "{f} Hz: {samples}");
        }
    }

    #[test]
    fn halfband_design_meets_the_mask() {
        assert!(response_db(0.0).abs() < 1e-9);
        for f in [300.0, 1000.0, 2000.0, 3000.0, 3400.0] {
            assert!(response_db(f).abs() <= 0.1, "{f} Hz: {}", response_db(f));
        }
        for f in (4600..=8000).step_by(50) {
            assert!(response_db(f as f64) <= -80.0, "{f} Hz");
        }
    }
}
