//! Element types the copy kernels convert natively, and their conversions.
//!
//! The conversions follow NumPy's casts: integers wrap, floats round to nearest-even,
//! `x -> bool` is `x != 0` (so NaN is true), and float-to-integer casts (only reachable with
//! `casting="unsafe"`) saturate, where NumPy's result is platform-defined.

use super::half_bits;
use half::{bf16, f16};

/// A native-endian element type with a native conversion kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    BF16,
    F32,
    F64,
}

impl Scalar {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Scalar::Bool | Scalar::I8 | Scalar::U8 => 1,
            Scalar::I16 | Scalar::U16 | Scalar::F16 | Scalar::BF16 => 2,
            Scalar::I32 | Scalar::U32 | Scalar::F32 => 4,
            Scalar::I64 | Scalar::U64 | Scalar::F64 => 8,
        }
    }

    /// Whether the native kernel rounds `self -> to` exactly as NumPy (and `ml_dtypes`) do.
    ///
    /// The kernels reach 16-bit floats through float32: a single rounding, as NumPy's and
    /// ml_dtypes' own, only from float32 and narrower types. The wider pairs (float64,
    /// bfloat16 and wide integers into float16 and bfloat16) are left to NumPy, whose cast
    /// is the installed ml_dtypes' own: its releases differ on whether float64 rounds into
    /// bfloat16 once or through float32.
    pub fn casts_natively_to(self, to: Scalar) -> bool {
        let wide = matches!(
            self,
            Scalar::I32 | Scalar::I64 | Scalar::U32 | Scalar::U64 | Scalar::F64 | Scalar::BF16
        );
        !(wide && matches!(to, Scalar::F16 | Scalar::BF16))
    }
}

/// How an element type converts: the class decides the conversion path at compile time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Bool,
    Signed,
    Unsigned,
    Float,
}

/// A NumPy `bool` element: one byte, any non-zero byte is true.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct Bool(u8);

/// An element the kernels can read, convert and write at any (unaligned) address.
pub(crate) trait Element: Copy {
    const CLASS: Class;
    fn as_f32(self) -> f32;
    fn as_f64(self) -> f64;
    fn as_i64(self) -> i64;
    fn as_u64(self) -> u64;
    fn nonzero(self) -> bool;
    fn from_element<S: Element>(s: S) -> Self;
}

fn class_of<S: Element>(_: S) -> Class {
    S::CLASS
}

macro_rules! int_element {
    ($t:ty, $class:expr) => {
        impl Element for $t {
            const CLASS: Class = $class;
            #[inline(always)]
            fn as_f32(self) -> f32 {
                self as f32
            }
            #[inline(always)]
            fn as_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn as_i64(self) -> i64 {
                self as i64
            }
            #[inline(always)]
            fn as_u64(self) -> u64 {
                self as u64
            }
            #[inline(always)]
            fn nonzero(self) -> bool {
                self != 0
            }
            #[inline(always)]
            fn from_element<S: Element>(s: S) -> Self {
                match class_of(s) {
                    Class::Bool => s.nonzero() as $t,
                    // Casting through the 64-bit integer keeps NumPy's wrap-around.
                    Class::Signed => s.as_i64() as $t,
                    Class::Unsigned => s.as_u64() as $t,
                    Class::Float => s.as_f64() as $t,
                }
            }
        }
    };
}

int_element!(i8, Class::Signed);
int_element!(i16, Class::Signed);
int_element!(i32, Class::Signed);
int_element!(i64, Class::Signed);
int_element!(u8, Class::Unsigned);
int_element!(u16, Class::Unsigned);
int_element!(u32, Class::Unsigned);
int_element!(u64, Class::Unsigned);

macro_rules! float_element {
    (
        $t:ty,
        as_f32: $as_f32:expr,
        as_f64: $as_f64:expr,
        from_float: $via:ident => $from_float:expr,
        from_int: $from_int:expr,
    ) => {
        impl Element for $t {
            const CLASS: Class = Class::Float;
            #[inline(always)]
            fn as_f32(self) -> f32 {
                $as_f32(self)
            }
            #[inline(always)]
            fn as_f64(self) -> f64 {
                $as_f64(self)
            }
            #[inline(always)]
            fn as_i64(self) -> i64 {
                $as_f64(self) as i64
            }
            #[inline(always)]
            fn as_u64(self) -> u64 {
                $as_f64(self) as u64
            }
            #[inline(always)]
            fn nonzero(self) -> bool {
                $as_f64(self) != 0.0
            }
            #[inline(always)]
            fn from_element<S: Element>(s: S) -> Self {
                match class_of(s) {
                    Class::Bool => $from_float(s.nonzero() as u8 as _),
                    Class::Signed => $from_int(IntValue::Signed(s.as_i64())),
                    Class::Unsigned => $from_int(IntValue::Unsigned(s.as_u64())),
                    Class::Float => $from_float(s.$via()),
                }
            }
        }
    };
}

/// An integer on its way into a float, signedness kept for a single rounding.
#[derive(Clone, Copy)]
enum IntValue {
    Signed(i64),
    Unsigned(u64),
}

impl IntValue {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        match self {
            IntValue::Signed(v) => v as f32,
            IntValue::Unsigned(v) => v as f32,
        }
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        match self {
            IntValue::Signed(v) => v as f64,
            IntValue::Unsigned(v) => v as f64,
        }
    }
}

// float32 and float64 convert with the hardware, as NumPy's C casts do.
float_element!(
    f32,
    as_f32: |x: f32| x,
    as_f64: |x: f32| x as f64,
    from_float: as_f32 => |x: f32| x,
    from_int: IntValue::to_f32,
);
float_element!(
    f64,
    as_f32: |x: f64| x as f32,
    as_f64: |x: f64| x,
    from_float: as_f64 => |x: f64| x,
    from_int: IntValue::to_f64,
);
// Into 16-bit floats everything goes through float32: exact only from float32 and narrower
// sources (see `Scalar::casts_natively_to`).
float_element!(
    f16,
    as_f32: half_bits::f16_to_f32,
    as_f64: half_bits::f16_to_f64,
    from_float: as_f32 => half_bits::f16_from_f32,
    from_int: |v: IntValue| half_bits::f16_from_f32(v.to_f32()),
);
float_element!(
    bf16,
    as_f32: half_bits::bf16_to_f32,
    as_f64: |x: bf16| half_bits::bf16_to_f32(x) as f64,
    from_float: as_f32 => half_bits::bf16_from_f32,
    from_int: |v: IntValue| half_bits::bf16_from_f32(v.to_f32()),
);

impl Element for Bool {
    const CLASS: Class = Class::Bool;
    #[inline(always)]
    fn as_f32(self) -> f32 {
        self.nonzero() as u8 as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self.nonzero() as u8 as f64
    }
    #[inline(always)]
    fn as_i64(self) -> i64 {
        self.nonzero() as i64
    }
    #[inline(always)]
    fn as_u64(self) -> u64 {
        self.nonzero() as u64
    }
    #[inline(always)]
    fn nonzero(self) -> bool {
        self.0 != 0
    }
    #[inline(always)]
    fn from_element<S: Element>(s: S) -> Self {
        Bool(s.nonzero() as u8)
    }
}

/// Runs `$body` with `$T` bound to the element type of the scalar `$s`.
macro_rules! with_element {
    ($s:expr, $T:ident => $body:expr) => {
        match $s {
            $crate::core::dtype::Scalar::Bool => {
                type $T = $crate::core::dtype::Bool;
                $body
            }
            $crate::core::dtype::Scalar::I8 => {
                type $T = i8;
                $body
            }
            $crate::core::dtype::Scalar::I16 => {
                type $T = i16;
                $body
            }
            $crate::core::dtype::Scalar::I32 => {
                type $T = i32;
                $body
            }
            $crate::core::dtype::Scalar::I64 => {
                type $T = i64;
                $body
            }
            $crate::core::dtype::Scalar::U8 => {
                type $T = u8;
                $body
            }
            $crate::core::dtype::Scalar::U16 => {
                type $T = u16;
                $body
            }
            $crate::core::dtype::Scalar::U32 => {
                type $T = u32;
                $body
            }
            $crate::core::dtype::Scalar::U64 => {
                type $T = u64;
                $body
            }
            $crate::core::dtype::Scalar::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::core::dtype::Scalar::BF16 => {
                type $T = half::bf16;
                $body
            }
            $crate::core::dtype::Scalar::F32 => {
                type $T = f32;
                $body
            }
            $crate::core::dtype::Scalar::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}
pub(crate) use with_element;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_casts_wrap_like_numpy() {
        assert_eq!(i8::from_element(300_i32), 44);
        assert_eq!(u8::from_element(-1_i64), 255);
        assert_eq!(i64::from_element(u64::MAX), -1);
    }

    #[test]
    fn float_to_bool_treats_nan_as_true() {
        assert!(Bool::from_element(f32::NAN).nonzero());
        assert!(!Bool::from_element(0.0_f64).nonzero());
        assert!(!Bool::from_element(-0.0_f32).nonzero());
    }

    #[test]
    fn half_precision_rounds_to_nearest_even() {
        // 1 + 2^-11 lies halfway between two f16 values; ties go to the even one (1.0).
        let halfway = 1.0_f32 + f32::powi(2.0, -11);
        assert_eq!(f16::from_element(halfway), f16::from_f32(1.0));
        assert_eq!(bf16::from_element(1.0_f64), bf16::ONE);
        assert_eq!(f32::from_element(f16::from_f32(0.5)), 0.5);
    }

    #[test]
    fn wide_types_into_half_floats_are_left_to_numpy() {
        assert!(!Scalar::I64.casts_natively_to(Scalar::F16));
        assert!(!Scalar::U32.casts_natively_to(Scalar::BF16));
        assert!(!Scalar::F64.casts_natively_to(Scalar::BF16));
        assert!(Scalar::F32.casts_natively_to(Scalar::BF16));
        assert!(Scalar::I16.casts_natively_to(Scalar::BF16));
        assert!(Scalar::I64.casts_natively_to(Scalar::F32));
    }
}
