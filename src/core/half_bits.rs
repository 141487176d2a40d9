//! 16-bit float conversions with NumPy's and ml_dtypes' exact bits, NaNs included.
//!
//! Rounding is IEEE round-to-nearest-even everywhere; what differs between libraries is
//! NaN payloads. NumPy keeps a float16 NaN's payload bits both ways (a signalling NaN stays
//! signalling); ml_dtypes turns every NaN into a bfloat16 quiet NaN of the same sign.

use half::{bf16, f16};

const F32_EXP: u32 = 0x7f80_0000;
const F32_SIG: u32 = 0x007f_ffff;

/// float32 -> float16 as NumPy casts it.
#[inline(always)]
pub fn f16_from_f32(x: f32) -> f16 {
    if x.is_nan() {
        let bits = x.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        // Keep the top payload bits, but never let them vanish into an infinity.
        let h = 0x7c00u16 + ((bits & F32_SIG) >> 13) as u16;
        let h = if h == 0x7c00 { 0x7c01 } else { h };
        return f16::from_bits(sign | h);
    }
    f16::from_f32(x)
}

/// float16 -> float32 as NumPy casts it (exact; NaN payloads kept).
#[inline(always)]
pub fn f16_to_f32(h: f16) -> f32 {
    let bits = h.to_bits();
    if bits & 0x7c00 == 0x7c00 && bits & 0x03ff != 0 {
        let sign = ((bits & 0x8000) as u32) << 16;
        return f32::from_bits(sign | F32_EXP | (((bits & 0x03ff) as u32) << 13));
    }
    h.to_f32()
}

/// float16 -> float64 as NumPy casts it (exact; NaN payloads kept).
#[inline(always)]
pub fn f16_to_f64(h: f16) -> f64 {
    let bits = h.to_bits();
    if bits & 0x7c00 == 0x7c00 && bits & 0x03ff != 0 {
        let sign = ((bits & 0x8000) as u64) << 48;
        return f64::from_bits(sign | 0x7ff0_0000_0000_0000 | (((bits & 0x03ff) as u64) << 42));
    }
    h.to_f64()
}

/// float32 -> bfloat16 as ml_dtypes casts it: nearest-even, NaN to a quiet NaN.
///
/// Written without branches so that loops over it vectorise.
#[inline(always)]
pub fn bf16_from_f32(x: f32) -> bf16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    let quiet_nan = ((bits >> 16) as u16 & 0x8000) | 0x7fc0;
    let is_nan = bits & 0x7fff_ffff > F32_EXP;
    bf16::from_bits(if is_nan { quiet_nan } else { rounded })
}

/// bfloat16 -> float32: exact, the bits shifted into place.
#[inline(always)]
pub fn bf16_to_f32(b: bf16) -> f32 {
    f32::from_bits((b.to_bits() as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfloat16_rounds_to_nearest_even_above_and_at_halfway() {
        let cases = [
            (0x3f80_8000u32, 0x3f80u16), // halfway, even below: down
            (0x3f80_8001, 0x3f81),       // just above halfway: up
            (0x3f81_8000, 0x3f82),       // halfway, odd below: up
            (0x7f7f_ffff, 0x7f80),       // rounds up into infinity
        ];
        for (input, expected) in cases {
            assert_eq!(bf16_from_f32(f32::from_bits(input)).to_bits(), expected);
        }
        assert_eq!(bf16_from_f32(f32::from_bits(0xff81_2345)).to_bits(), 0xffc0);
    }

    #[test]
    fn float16_nans_keep_numpys_payload_bits() {
        assert_eq!(f16_from_f32(f32::from_bits(0x7f80_0001)).to_bits(), 0x7c01);
        assert_eq!(f16_from_f32(f32::from_bits(0xff81_2345)).to_bits(), 0xfc09);
        assert_eq!(f16_to_f32(f16::from_bits(0x7c01)).to_bits(), 0x7f80_2000);
        assert_eq!(
            f16_to_f64(f16::from_bits(0xfe00)).to_bits(),
            0xfff8_0000_0000_0000
        );
        assert_eq!(f16_from_f32(1.0 + f32::powi(2.0, -11)).to_bits(), 0x3c00);
    }
}
