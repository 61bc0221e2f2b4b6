//! GELU in its exact erf form and in its tanh form, vectorisable.
//!
//! candle's `gelu_erf` calls libm's scalar `erff` per value: profiled on the acoustic route at
//! one thread it took 16 % of the time (erf over every hidden unit of every encoder frame).
//! Here erf is a rational function of x² on [-4, 4] (the XLA/Eigen single-precision form;
//! outside that range erf is ±1 to f32 precision), which the compiler turns into straight
//! FMA code; a test holds it to libm's erf.
//!
//! The tanh form (Gemma 3's MLP gate) likewise: candle's `gelu` calls libm's `tanhf`, which
//! calls `expm1f`, per value; profiled on `models bench gemma3-270m` at one thread the two
//! took 12 % of the whole run. Here tanh is Eigen's 13/6-degree rational interpolant on
//! [-9, 9] (outside it tanh is ±1 to f32 precision); a test holds it to libm's tanh.

use candle_core::{DType, Result, Tensor};

/// `x · Φ(x)` with Φ the standard normal CDF, for f32 tensors on the CPU (other devices and
/// types use candle's `gelu_erf`).
pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    map_cpu_f32(x, gelu, Tensor::gelu_erf)
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, the tanh approximation of GELU (candle's
/// `gelu`, PyTorch's `gelu(approximate="tanh")`), for f32 tensors on the CPU (other devices
/// and types use candle's `gelu`).
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    map_cpu_f32(x, gelu_tanh_one, Tensor::gelu)
}

/// `f` on every value of an f32 tensor on the CPU, in one pass the compiler vectorises (`f`
/// is inlined per caller); `elsewhere` (candle's own op) for other devices and types.
fn map_cpu_f32(
    x: &Tensor,
    f: impl Fn(f32) -> f32,
    elsewhere: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return elsewhere(x);
    }
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    for e in v.iter_mut() {
        *e = f(*e);
    }
    Tensor::from_vec(v, x.shape(), x.device())
}

#[inline]
fn gelu_tanh_one(x: f32) -> f32 {
    // √(2/π), as candle writes it.
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + tanh(SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x)))
}

/// tanh(x) to within a few f32 ulps (Eigen's `generic_fast_tanh_float` coefficients).
#[inline]
fn tanh(x: f32) -> f32 {
    let x = x.clamp(-9.0, 9.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.760_768_5e-16, 2.000_188e-13);
    p = x2.mul_add(p, -8.604_672e-11);
    p = x2.mul_add(p, 5.122_297e-8);
    p = x2.mul_add(p, 1.485_722_4e-5);
    p = x2.mul_add(p, 6.372_619_3e-4);
    p = x2.mul_add(p, 4.893_524_6e-3);
    let mut q = x2.mul_add(1.198_258_4e-6, 1.185_347_1e-4);
    q = x2.mul_add(q, 2.268_434_6e-3);
    q = x2.mul_add(q, 4.893_525e-3);
    x * p / q
}

#[inline]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf(x) to within a few f32 ulps.
#[inline]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906e-4);
    p = x2.mul_add(p, -2.954_6e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn erf_matches_libm_over_the_range_that_matters() {
        let mut worst = 0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4; // -8 .. 8
            let err = (erf(x) as f64 - libm::erf(x as f64)).abs();
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "erf differs from libm by up to {worst}");
    }

    #[test]
    fn tanh_matches_libm_over_the_whole_range() {
        let mut worst = 0f64;
        for i in -120_000..=120_000 {
            let x = i as f32 * 1e-4; // -12 .. 12
            let err = (tanh(x) as f64 - (x as f64).tanh()).abs();
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "tanh differs from libm by up to {worst}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(50.0), tanh(9.0));
        assert!((tanh(9.0) - 1.0).abs() < 1e-6 && tanh(-9.0) == -tanh(9.0));
    }

    #[test]
    fn gelu_tanh_matches_candles_tanh_form() -> Result<()> {
        let v: Vec<f32> = (-900..900).map(|i| i as f32 * 0.0137).collect();
        let x = Tensor::from_vec(v, (3, 600), &Device::Cpu)?;
        let ours = gelu_tanh(&x)?;
        let candle = x.gelu()?;
        assert_eq!(ours.dims(), candle.dims());
        let diff = (ours - candle)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 2e-6, "tanh-GELU differs from candle's by {diff}");
        Ok(())
    }

    #[test]
    fn gelu_matches_candles_exact_form() -> Result<()> {
        let v: Vec<f32> = (-600..600).map(|i| i as f32 * 0.0137).collect();
        let x = Tensor::from_vec(v, (2, 600), &Device::Cpu)?;
        let ours = gelu_erf(&x)?;
        let candle = x.gelu_erf()?;
        assert_eq!(ours.dims(), candle.dims());
        let diff = (ours - candle)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 2e-6, "GELU differs from candle's by {diff}");
        // A strided input (a transpose) gives the same values as its contiguous copy.
        let t = x.t()?;
        let a = gelu_erf(&t)?.to_vec2::<f32>()?;
        let b = gelu_erf(&t.contiguous()?)?.to_vec2::<f32>()?;
        assert_eq!(a, b);
        Ok(())
    }
}
