//! Short-time Fourier transform with the FFT plan and every buffer made once, so that
//! transforming a clip allocates nothing once the output buffer has grown to clip size.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::{FeatureConfig, FeatureError};

/// Power spectrogram maker: Hann window of `window_len` samples, zero-padded to `n_fft`,
/// frames every `hop_len` samples. Frames are not centred: frame `t` covers samples
/// `t*hop .. t*hop + window_len`, so a clip of `n` samples gives `1 + (n - window_len) / hop`
/// frames (none when `n < window_len`).
pub struct Stft {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    hop: usize,
    n_fft: usize,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl Stft {
    pub fn new(cfg: &FeatureConfig) -> Result<Self, FeatureError> {
        cfg.validate()?;
        let n_fft = cfg.n_fft;
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
        let window = hann(cfg.window_len());
        Ok(Self {
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            window,
            hop: cfg.hop_len(),
            n_fft,
        })
    }

    pub fn n_bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    pub fn n_frames(&self, n_samples: usize) -> usize {
        if n_samples < self.window.len() {
            0
        } else {
            1 + (n_samples - self.window.len()) / self.hop
        }
    }

    /// Writes |X|² of every frame into `out` (row-major frames × bins), reusing its
    /// allocation, and returns the number of frames.
    pub fn power_spectrogram(&mut self, samples: &[f32], out: &mut Vec<f32>) -> usize {
        let n_frames = self.n_frames(samples.len());
        let n_bins = self.n_bins();
        out.clear();
        out.resize(n_frames * n_bins, 0.0);
        for t in 0..n_frames {
            let start = t * self.hop;
            let frame = &samples[start..start + self.window.len()];
            for ((dst, &x), &w) in self.input.iter_mut().zip(frame).zip(&self.window) {
                *dst = x * w;
            }
            self.input[self.window.len()..].fill(0.0);
            // The lengths come from the plan itself, so the transform cannot fail.
            if self
                .fft
                .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
                .is_err()
            {
                continue;
            }
            for (dst, c) in out[t * n_bins..(t + 1) * n_bins]
                .iter_mut()
                .zip(&self.spectrum)
            {
                *dst = c.norm_sqr();
            }
        }
        n_frames
    }
}

/// Periodic Hann window (the DFT-even form used for spectral analysis).
pub fn hann(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let x = std::f64::consts::TAU * i as f64 / len as f64;
            (0.5 - 0.5 * x.cos()) as f32
        })
        .collect()
}
