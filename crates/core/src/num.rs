//! Exact numbers for scoring: rationals inside, two-decimal published figures outside.
//!
//! Every weight, answer and score is an exact rational ([`Exact`]); nothing in scoring
//! ever touches binary floating point. Inputs are written as decimals (`"21.85"`) or
//! fractions (`"1/9"`); outputs are [`Published`] figures rounded half-up (away from
//! zero) to two decimals, once, at the end.

use std::fmt;
use std::str::FromStr;

use num_bigint::BigInt;
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An exact rational number.
///
/// Scoring adds and multiplies small fractions (weights such as `21.85`, answer
/// values, counts of respondents), so a number is kept as a reduced `i128` fraction
/// and only moves to a heap-allocated big rational when an operation would overflow.
/// Every operation is exact either way, and a value always has one representation
/// (a big rational that fits is brought back), so equality and hashing are plain.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Exact(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// `n / d`, reduced, with `d > 0`.
    Small { n: i128, d: i128 },
    /// Only for values that do not fit `Small`.
    Big(BigRational),
}

/// Why a number could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a decimal number or fraction (write e.g. `21.85`, `3` or `1/9`)")]
pub struct ParseExactError {
    /// The text that was rejected.
    pub text: String,
}

/// The greatest common divisor of two magnitudes (binary GCD); `gcd(0, x) = x`.
/// Scores' fractions are nearly always small, and a `u64` loop is about twice as fast
/// as a `u128` one, so that is taken when both fit.
fn gcd(a: u128, b: u128) -> u128 {
    if a == 0 {
        return b;
    }
    if b == 0 {
        return a;
    }
    if a == 1 || b == 1 {
        return 1;
    }
    match (u64::try_from(a), u64::try_from(b)) {
        (Ok(a), Ok(b)) => u128::from(gcd64(a, b)),
        _ => gcd128(a, b),
    }
}

/// Binary GCD of two non-zero magnitudes, written once for each width.
macro_rules! binary_gcd {
    ($name:ident, $t:ty) => {
        fn $name(mut a: $t, mut b: $t) -> $t {
            let shift = (a | b).trailing_zeros();
            a >>= a.trailing_zeros();
            loop {
                b >>= b.trailing_zeros();
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                b -= a;
                if b == 0 {
                    return a << shift;
                }
            }
        }
    };
}
binary_gcd!(gcd64, u64);
binary_gcd!(gcd128, u128);

impl Exact {
    /// `n / d` reduced; `None` when it does not fit (only `i128::MIN` edge cases).
    fn small(n: i128, d: i128) -> Option<Exact> {
        debug_assert!(d != 0);
        let g = gcd(n.unsigned_abs(), d.unsigned_abs());
        let g = i128::try_from(g).ok()?;
        // (An `i128` division is a library call: skipped when there is nothing to divide.)
        let (mut n, mut d) = if g == 1 { (n, d) } else { (n / g, d / g) };
        if d < 0 {
            n = n.checked_neg()?;
            d = d.checked_neg()?;
        }
        Some(Exact(Repr::Small { n, d }))
    }

    /// `n / d` for `d > 0`, reduced, as big a number as it needs.
    fn fraction(n: i128, d: i128) -> Exact {
        Exact::small(n, d).unwrap_or_else(|| Exact::from_big(BigRational::new(BigInt::from(n), BigInt::from(d))))
    }

    /// A big rational, brought back to `Small` when it fits.
    fn from_big(r: BigRational) -> Exact {
        match (r.numer().to_i128(), r.denom().to_i128()) {
            // BigRational is kept reduced with a positive denominator.
            (Some(n), Some(d)) => Exact(Repr::Small { n, d }),
            _ => Exact(Repr::Big(r)),
        }
    }

    /// The value as a big rational.
    fn to_big(&self) -> BigRational {
        match &self.0 {
            Repr::Small { n, d } => BigRational::new_raw(BigInt::from(*n), BigInt::from(*d)),
            Repr::Big(r) => r.clone(),
        }
    }

    /// Zero.
    pub fn zero() -> Exact {
        Exact(Repr::Small { n: 0, d: 1 })
    }

    /// One.
    pub fn one() -> Exact {
        Exact(Repr::Small { n: 1, d: 1 })
    }

    /// An integer.
    pub fn from_int(n: i64) -> Exact {
        Exact(Repr::Small { n: i128::from(n), d: 1 })
    }

    /// `num / den`; `den` must not be zero.
    pub fn ratio(num: i64, den: i64) -> Exact {
        assert!(den != 0, "Exact::ratio with a zero denominator");
        Exact::small(i128::from(num), i128::from(den)).expect("an i64 fraction fits")
    }

    /// True when the number is zero.
    pub fn is_zero(&self) -> bool {
        matches!(self.0, Repr::Small { n: 0, .. })
    }

    /// True when the number is below zero.
    pub fn is_negative(&self) -> bool {
        match &self.0 {
            Repr::Small { n, .. } => *n < 0,
            Repr::Big(r) => r.is_negative(),
        }
    }

    /// True when the number is a whole number.
    pub fn is_integer(&self) -> bool {
        match &self.0 {
            Repr::Small { d, .. } => *d == 1,
            Repr::Big(r) => r.is_integer(),
        }
    }

    /// `self / other`, or `None` when `other` is zero.
    pub fn checked_div(&self, other: &Exact) -> Option<Exact> {
        if other.is_zero() {
            return None;
        }
        if let (Repr::Small { n: n1, d: d1 }, Repr::Small { n: n2, d: d2 }) = (&self.0, &other.0) {
            // (n1/d1) / (n2/d2) = (n1/d1) * (d2/n2)
            if let Some(r) = Exact::mul_small(*n1, *d1, *d2, *n2) {
                return Some(r);
            }
        }
        Some(Exact::from_big(self.to_big() / other.to_big()))
    }

    fn add_small(n1: i128, d1: i128, n2: i128, d2: i128) -> Option<Exact> {
        if d1 == d2 {
            return Exact::small(n1.checked_add(n2)?, d1);
        }
        let g = i128::try_from(gcd(d1.unsigned_abs(), d2.unsigned_abs())).ok()?;
        let (q1, q2) = if g == 1 { (d1, d2) } else { (d1 / g, d2 / g) };
        let n = n1.checked_mul(q2)?.checked_add(n2.checked_mul(q1)?)?;
        Exact::small(n, q1.checked_mul(d2)?)
    }

    /// `(n1/d1) * (n2/d2)` for `d1 > 0` and `d2 != 0`, cross-reduced first.
    fn mul_small(n1: i128, d1: i128, n2: i128, d2: i128) -> Option<Exact> {
        let g1 = i128::try_from(gcd(n1.unsigned_abs(), d2.unsigned_abs())).ok()?.max(1);
        let g2 = i128::try_from(gcd(n2.unsigned_abs(), d1.unsigned_abs())).ok()?.max(1);
        let div = |x: i128, g: i128| if g == 1 { x } else { x / g };
        let n = div(n1, g1).checked_mul(div(n2, g2))?;
        let d = div(d1, g2).checked_mul(div(d2, g1))?;
        Exact::small(n, d)
    }

    fn add_ref(&self, rhs: &Exact) -> Exact {
        if let (Repr::Small { n: n1, d: d1 }, Repr::Small { n: n2, d: d2 }) = (&self.0, &rhs.0) {
            // Sums in scoring start from zero (a weighted mean's running totals): adding
            // to or of zero needs no gcd. `Small` is reduced, so the other side is the sum.
            if *n1 == 0 {
                return rhs.clone();
            }
            if *n2 == 0 {
                return self.clone();
            }
            if let Some(r) = Exact::add_small(*n1, *d1, *n2, *d2) {
                return r;
            }
        }
        Exact::from_big(self.to_big() + rhs.to_big())
    }

    fn sub_ref(&self, rhs: &Exact) -> Exact {
        if let (Repr::Small { n: n1, d: d1 }, Repr::Small { n: n2, d: d2 }) = (&self.0, &rhs.0) {
            if let Some(r) = n2.checked_neg().and_then(|m| Exact::add_small(*n1, *d1, m, *d2)) {
                return r;
            }
        }
        Exact::from_big(self.to_big() - rhs.to_big())
    }

    fn mul_ref(&self, rhs: &Exact) -> Exact {
        if let (Repr::Small { n: n1, d: d1 }, Repr::Small { n: n2, d: d2 }) = (&self.0, &rhs.0) {
            // Weights of one and attainments of zero or one are the common factors.
            if *n1 == 0 || (*n2, *d2) == (1, 1) {
                return self.clone();
            }
            if *n2 == 0 || (*n1, *d1) == (1, 1) {
                return rhs.clone();
            }
            if let Some(r) = Exact::mul_small(*n1, *d1, *n2, *d2) {
                return r;
            }
        }
        Exact::from_big(self.to_big() * rhs.to_big())
    }

    /// The smaller of two numbers.
    pub fn min_of(self, other: Exact) -> Exact {
        if other < self {
            other
        } else {
            self
        }
    }

    /// The larger of two numbers.
    pub fn max_of(self, other: Exact) -> Exact {
        if other > self {
            other
        } else {
            self
        }
    }

    /// Rounds half away from zero to two decimals: the published figure.
    pub fn publish(&self) -> Published {
        if let Repr::Small { n, d } = self.0 {
            if let Some(p) = Published::of_fraction(n.unsigned_abs(), d, n < 0) {
                return p;
            }
        }
        let scaled = self.to_big() * BigRational::from_integer(BigInt::from(100));
        let half = BigRational::new(BigInt::from(1), BigInt::from(2));
        let rounded = if scaled.is_negative() { -((-scaled) + half).floor() } else { (scaled + half).floor() };
        let hundredths = rounded.to_integer().to_i64().expect("published figures fit in i64 hundredths");
        Published { hundredths }
    }

    /// `(min + self × span).publish()`, for a figure on a result scale: the same
    /// rounding, without building the exact scaled number when the scale starts at
    /// zero and spans a whole number (every node of a result tree publishes one, and
    /// only the rounded figure is kept).
    pub fn publish_scaled(&self, min: &Exact, span: &Exact) -> Published {
        if let (Repr::Small { n, d }, Repr::Small { n: 0, .. }, Repr::Small { n: k, d: 1 }) = (&self.0, &min.0, &span.0)
        {
            let published = n
                .unsigned_abs()
                .checked_mul(k.unsigned_abs())
                .and_then(|m| Published::of_fraction(m, *d, (*n < 0) != (*k < 0)));
            if let Some(p) = published {
                return p;
            }
        }
        (min + &(self * span)).publish()
    }

    /// The number of decimal places needed to write the number exactly, or `None`
    /// when it has no finite decimal expansion.
    pub fn decimal_places(&self) -> Option<u32> {
        if let Repr::Small { d, .. } = self.0 {
            let mut den = d as u128;
            let twos = den.trailing_zeros();
            den >>= twos;
            let mut fives = 0;
            while den % 5 == 0 {
                den /= 5;
                fives += 1;
            }
            return (den == 1).then_some(twos.max(fives));
        }
        let r = self.to_big();
        let mut den = r.denom().clone();
        let two = BigInt::from(2);
        let five = BigInt::from(5);
        let (mut twos, mut fives) = (0u32, 0u32);
        while den.is_even() {
            den /= &two;
            twos += 1;
        }
        while (&den % &five).is_zero() {
            den /= &five;
            fives += 1;
        }
        den.is_one().then_some(twos.max(fives))
    }

    /// Writes the number as a decimal when it has a finite expansion, else as `n/d`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out);
        out
    }

    /// [`Exact::to_text`], appended to `out`: result documents write one for every
    /// node's weight, and building each in a `String` of its own (with `format!` for
    /// fractions) showed in the recompute.
    pub fn write_text(&self, out: &mut String) {
        let places = self.decimal_places();
        let mut digits = itoa::Buffer::new();
        if let (Repr::Small { n, d }, Some(p)) = (&self.0, places) {
            // d divides 10^p, so n * (10^p / d) is the number in units of 10^-p.
            let scaled = 10i128.checked_pow(p).and_then(|scale| n.checked_mul(scale / d));
            if let Some(scaled) = scaled {
                write_decimal(out, scaled < 0, digits.format(scaled.unsigned_abs()), p as usize);
                return;
            }
        }
        // A share like 1/11, in every node of every result document: `Small` is kept
        // reduced with a positive denominator, as `BigRational` would write it.
        if let (Repr::Small { n, d }, None) = (&self.0, places) {
            out.push_str(digits.format(*n));
            out.push('/');
            out.push_str(digits.format(*d));
            return;
        }
        let r = self.to_big();
        match places {
            Some(0) => out.push_str(&r.to_integer().to_string()),
            Some(places) => {
                let scale = BigInt::from(10).pow(places);
                let scaled = (&r * BigRational::from_integer(scale)).to_integer();
                write_decimal(out, scaled.is_negative(), &scaled.abs().to_string(), places as usize);
            }
            None => out.push_str(&format!("{}/{}", r.numer(), r.denom())),
        }
    }
}

/// `digits` (a magnitude in units of 10^-places) written as a decimal, appended to
/// `out`. (Built by hand: result documents write thousands of these.)
fn write_decimal(out: &mut String, negative: bool, digits: &str, places: usize) {
    if negative {
        out.push('-');
    }
    if places == 0 {
        out.push_str(digits);
        return;
    }
    if digits.len() > places {
        let (whole, fraction) = digits.split_at(digits.len() - places);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else {
        // Less than one: `0.`, then the zeros that put the digits in their places.
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', places - digits.len()));
        out.push_str(digits);
    }
}

impl PartialOrd for Exact {
    fn partial_cmp(&self, other: &Exact) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Exact {
    fn cmp(&self, other: &Exact) -> std::cmp::Ordering {
        if let (Repr::Small { n: n1, d: d1 }, Repr::Small { n: n2, d: d2 }) = (&self.0, &other.0) {
            if d1 == d2 {
                return n1.cmp(n2);
            }
            if let (Some(a), Some(b)) = (n1.checked_mul(*d2), n2.checked_mul(*d1)) {
                return a.cmp(&b);
            }
        }
        self.to_big().cmp(&other.to_big())
    }
}

impl FromStr for Exact {
    type Err = ParseExactError;

    fn from_str(text: &str) -> Result<Exact, ParseExactError> {
        let err = || ParseExactError { text: text.to_owned() };
        match text.split_once('/') {
            Some((num, den)) => {
                let num = parse_decimal(num.trim()).ok_or_else(err)?;
                let den = parse_decimal(den.trim()).ok_or_else(err)?;
                if den.is_zero() {
                    return Err(err());
                }
                Ok(Exact::from_big(num / den))
            }
            None => parse_decimal(text).map(Exact::from_big).ok_or_else(err),
        }
    }
}

/// Parses `[-]digits[.digits]` exactly.
fn parse_decimal(text: &str) -> Option<BigRational> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits_ok(int) || !digits_ok(frac) || (body.contains('.') && frac.is_empty()) {
        return None;
    }
    let all: BigInt = format!("{int}{frac}").parse().ok()?;
    let scale = BigInt::from(10).pow(frac.len() as u32);
    let value = BigRational::new(all, scale);
    Some(if negative { -value } else { value })
}

impl fmt::Display for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Exact({})", self.to_text())
    }
}

impl Serialize for Exact {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Exact, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        exact_from_json(&value).map_err(serde::de::Error::custom)
    }
}

/// Reads a number written either as a JSON string (`"21.85"`, `"1/9"`) or a JSON
/// number (`21.85`). A JSON number is read from its shortest decimal text, so any
/// literal of up to 15 significant digits is read exactly; write longer ones as strings.
pub fn exact_from_json(value: &serde_json::Value) -> Result<Exact, ParseExactError> {
    match value {
        serde_json::Value::String(s) => s.parse(),
        // Exponent notation (`1e-7`) from the shortest-float writer is refused.
        serde_json::Value::Number(n) => n.to_string().parse(),
        other => Err(ParseExactError { text: other.to_string() }),
    }
}

macro_rules! forward_binop {
    ($trait:ident, $method:ident, $by_ref:ident) => {
        impl std::ops::$trait<&Exact> for &Exact {
            type Output = Exact;
            fn $method(self, rhs: &Exact) -> Exact {
                self.$by_ref(rhs)
            }
        }
        impl std::ops::$trait<Exact> for Exact {
            type Output = Exact;
            fn $method(self, rhs: Exact) -> Exact {
                self.$by_ref(&rhs)
            }
        }
        impl std::ops::$trait<&Exact> for Exact {
            type Output = Exact;
            fn $method(self, rhs: &Exact) -> Exact {
                self.$by_ref(rhs)
            }
        }
    };
}
forward_binop!(Add, add, add_ref);
forward_binop!(Sub, sub, sub_ref);
forward_binop!(Mul, mul, mul_ref);

impl std::iter::Sum for Exact {
    fn sum<I: Iterator<Item = Exact>>(iter: I) -> Exact {
        iter.fold(Exact::zero(), |acc, x| acc + x)
    }
}

/// An exact sum built term by term without reducing each partial sum, reduced once by
/// [`ExactSum::total`]. The terms of a weighted mean mostly share a denominator, and a
/// gcd (two, for a product) on every addition was most of what scoring spent on
/// arithmetic. A partial sum that would overflow is folded into an [`Exact`] and the
/// sum goes on from the term that did not fit, so the total is always exact and, being
/// reduced, the very value adding term by term gives.
#[derive(Clone, Debug)]
pub struct ExactSum {
    /// The unreduced part, `n / d` with `d > 0`.
    n: i128,
    d: i128,
    /// What was folded in when the unreduced part would have overflowed.
    folded: Exact,
}

impl Default for ExactSum {
    fn default() -> ExactSum {
        ExactSum { n: 0, d: 1, folded: Exact::zero() }
    }
}

impl ExactSum {
    /// Adds `x`.
    pub fn add(&mut self, x: &Exact) {
        match &x.0 {
            Repr::Small { n, d } => self.add_fraction(*n, *d),
            Repr::Big(_) => self.folded = &self.folded + x,
        }
    }

    /// Adds `a × b`.
    pub fn add_product(&mut self, a: &Exact, b: &Exact) {
        if let (Repr::Small { n: an, d: ad }, Repr::Small { n: bn, d: bd }) = (&a.0, &b.0) {
            if let (Some(n), Some(d)) = (an.checked_mul(*bn), ad.checked_mul(*bd)) {
                return self.add_fraction(n, d);
            }
        }
        self.folded = &self.folded + &(a * b);
    }

    /// Adds `n / d` (`d > 0`, not necessarily reduced).
    fn add_fraction(&mut self, n: i128, d: i128) {
        if n == 0 {
            return;
        }
        let next = if self.n == 0 {
            Some((n, d))
        } else if d == self.d {
            self.n.checked_add(n).map(|n| (n, d))
        } else {
            let cross = self.n.checked_mul(d).zip(n.checked_mul(self.d)).and_then(|(a, b)| a.checked_add(b));
            cross.zip(self.d.checked_mul(d))
        };
        match next {
            Some((n, d)) => (self.n, self.d) = (n, d),
            None => {
                self.folded = &self.folded + &Exact::fraction(self.n, self.d);
                (self.n, self.d) = (n, d);
            }
        }
    }

    /// The sum, reduced.
    pub fn total(&self) -> Exact {
        &self.folded + &Exact::fraction(self.n, self.d)
    }
}

/// A published figure: a number rounded half-up to exactly two decimals.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Published {
    hundredths: i64,
}

impl Published {
    /// `±magnitude / d` (`d > 0`) rounded half-up to hundredths:
    /// round(m × 100 / d) = floor((200 m + d) / 2d), with the sign put back. `None` when
    /// the arithmetic would overflow (the caller takes the big-rational way).
    fn of_fraction(magnitude: u128, d: i128, negative: bool) -> Option<Published> {
        let h = magnitude
            .checked_mul(200)
            .and_then(|m| m.checked_add(d as u128))
            .and_then(|m| (d as u128).checked_mul(2).map(|dd| m / dd))
            .and_then(|h| i64::try_from(h).ok())?;
        Some(Published { hundredths: if negative { -h } else { h } })
    }

    /// From a count of hundredths (`8835` is `88.35`).
    pub fn from_hundredths(hundredths: i64) -> Published {
        Published { hundredths }
    }

    /// The count of hundredths.
    pub fn hundredths(self) -> i64 {
        self.hundredths
    }

    /// The figure as published (`88.35`, `-0.50`), appended to `out`: what `Display`
    /// writes, without the formatting machinery, for result documents.
    pub fn write_text(self, out: &mut String) {
        if self.hundredths < 0 {
            out.push('-');
        }
        let abs = self.hundredths.unsigned_abs();
        out.push_str(itoa::Buffer::new().format(abs / 100));
        out.push('.');
        let cents = (abs % 100) as u8;
        out.push(char::from(b'0' + cents / 10));
        out.push(char::from(b'0' + cents % 10));
    }

    /// The figure as an exact number.
    pub fn to_exact(self) -> Exact {
        Exact::ratio(self.hundredths, 100)
    }
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(24);
        self.write_text(&mut text);
        f.write_str(&text)
    }
}

impl fmt::Debug for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Published({self})")
    }
}

/// Why a published figure could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a figure with at most two decimals")]
pub struct ParsePublishedError {
    /// The text that was rejected.
    pub text: String,
}

impl FromStr for Published {
    type Err = ParsePublishedError;

    fn from_str(text: &str) -> Result<Published, ParsePublishedError> {
        let err = || ParsePublishedError { text: text.to_owned() };
        let exact: Exact = text.parse().map_err(|_| err())?;
        match exact.decimal_places() {
            Some(p) if p <= 2 && !text.contains('/') => Ok(exact.publish()),
            _ => Err(err()),
        }
    }
}

impl Serialize for Published {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Published {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Published, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let text = match &value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_publish(input: &str, expected: &str) {
        let exact: Exact = input.parse().unwrap();
        assert_eq!(exact.publish().to_string(), expected, "publishing {input}");
    }

    #[test]
    fn rounds_half_up_to_two_decimals() {
        check_publish("88.345", "88.35");
        check_publish("88.344999", "88.34");
        check_publish("87.995", "88.00");
        check_publish("0.005", "0.01");
        check_publish("0.004", "0.00");
        check_publish("100", "100.00");
        check_publish("-1.005", "-1.01");
        check_publish("1/3", "0.33");
        check_publish("2/3", "0.67");
        check_publish("23875/261", "91.48");
    }

    #[test]
    fn fractions_are_written_as_their_big_rational_would_be() {
        for text in ["1/11", "-1/11", "2/22", "-3/9", "10/7", "1/3", "170141183460469231731687303715884105727/3"] {
            let exact: Exact = text.parse().unwrap();
            let big = exact.to_big();
            assert_eq!(exact.to_text(), format!("{}/{}", big.numer(), big.denom()), "{text}");
            assert_eq!(exact.to_text().parse::<Exact>().unwrap(), exact, "{text} reads back");
        }
        assert_eq!("2/22".parse::<Exact>().unwrap().to_text(), "1/11");
        assert_eq!("6/4".parse::<Exact>().unwrap().to_text(), "1.5", "a finite decimal is written as one");
    }

    #[test]
    fn parses_decimals_and_fractions_exactly() {
        let ninth: Exact = "1/9".parse().unwrap();
        let nine: Exact = (0..9).map(|_| ninth.clone()).sum();
        assert_eq!(nine, Exact::one());
        let sum: Exact = ["21.85", "32.37", "24.24", "21.54"].iter().map(|s| s.parse::<Exact>().unwrap()).sum();
        assert_eq!(sum, Exact::from_int(100));
        assert_eq!("0.1".parse::<Exact>().unwrap() + "0.2".parse::<Exact>().unwrap(), "0.3".parse::<Exact>().unwrap());
        assert_eq!("87.78/14".parse::<Exact>().unwrap().to_text(), "6.27");
    }

    #[test]
    fn rejects_what_is_not_a_number() {
        for bad in ["", "-", "1.", ".5", "1e3", "abc", "1/0", "1//2", "0x10", " 1"] {
            assert!(bad.parse::<Exact>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn writes_numbers_back() {
        for (input, text) in [
            ("21.850", "21.85"),
            ("3", "3"),
            ("1/9", "1/9"),
            ("-0.5", "-0.5"),
            ("0.05", "0.05"),
            ("-0.005", "-0.005"),
            ("1/8", "0.125"),
            ("-7", "-7"),
            ("0", "0"),
            ("100.01", "100.01"),
            ("-123456789012345678901234567890.0625", "-123456789012345678901234567890.0625"),
        ] {
            assert_eq!(input.parse::<Exact>().unwrap().to_text(), text);
        }
    }

    fn reference(e: &Exact) -> BigRational {
        e.to_big()
    }

    /// Numbers near the edges of `i128` as well as everyday fractions, so that the
    /// fallback to big rationals is exercised as much as the fast path.
    fn any_exact() -> impl proptest::strategy::Strategy<Value = Exact> {
        use proptest::prelude::*;
        let part = prop_oneof![
            -1000i128..1000,
            Just(i128::MAX),
            Just(i128::MIN),
            Just(i128::MAX / 3),
            Just(-(1i128 << 100)),
            any::<i64>().prop_map(i128::from),
            any::<i128>(),
        ];
        (part.clone(), part.prop_filter("a denominator", |d| *d != 0))
            .prop_map(|(n, d)| Exact::from_big(BigRational::new(BigInt::from(n), BigInt::from(d))))
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_agrees_with_big_rationals(a in any_exact(), b in any_exact()) {
            let (ra, rb) = (reference(&a), reference(&b));
            let canonical = |e: &Exact, r: BigRational| {
                assert_eq!(reference(e), r, "value");
                assert_eq!(*e, Exact::from_big(r), "one representation per value");
            };
            canonical(&(&a + &b), &ra + &rb);
            canonical(&(&a - &b), &ra - &rb);
            canonical(&(&a * &b), &ra * &rb);
            match a.checked_div(&b) {
                Some(q) => canonical(&q, &ra / &rb),
                None => assert!(rb.is_zero()),
            }
            assert_eq!(a.cmp(&b), ra.cmp(&rb));
            assert_eq!(a == b, ra == rb);
            assert_eq!(a.is_negative(), ra.is_negative());
            assert_eq!(a.is_integer(), ra.is_integer());
            let big = Exact(Repr::Big(ra.clone()));
            assert_eq!(a.decimal_places(), big.decimal_places());
            assert_eq!(a.to_text(), big.to_text());
            if (&ra * BigRational::from_integer(BigInt::from(100))).abs() < BigRational::from_integer(BigInt::from(i64::MAX / 4)) {
                assert_eq!(a.publish(), big.publish());
            }
        }

        #[test]
        fn a_sum_reduced_once_is_the_sum_added_term_by_term(
            terms in proptest::collection::vec((any_exact(), any_exact(), proptest::prelude::any::<bool>()), 0..12),
        ) {
            let mut sum = ExactSum::default();
            let mut added = Exact::zero();
            for (a, b, product) in &terms {
                if *product {
                    sum.add_product(a, b);
                    added = &added + &(a * b);
                } else {
                    sum.add(a);
                    added = &added + a;
                }
            }
            let total = sum.total();
            assert_eq!(reference(&total), reference(&added), "value");
            assert_eq!(total, added, "one representation per value");
        }

        #[test]
        fn publishing_on_a_scale_is_publishing_the_scaled_number(
            x in any_exact(),
            span in proptest::prop_oneof![
                proptest::strategy::Just(100i64),
                proptest::strategy::Just(-100i64),
                -1000i64..1000,
                proptest::prelude::any::<i64>(),
            ],
            min in proptest::prop_oneof![proptest::strategy::Just(0i64), -100i64..100],
        ) {
            let (min, span) = (Exact::from_int(min), Exact::from_int(span));
            let scaled = &min + &(&x * &span);
            let within = (reference(&scaled) * BigRational::from_integer(BigInt::from(100))).abs()
                < BigRational::from_integer(BigInt::from(i64::MAX / 4));
            if within {
                assert_eq!(x.publish_scaled(&min, &span), scaled.publish());
            }
        }

        #[test]
        fn published_figures_write_sign_units_and_two_places(hundredths in proptest::prelude::any::<i64>()) {
            let abs = hundredths.unsigned_abs();
            let sign = if hundredths < 0 { "-" } else { "" };
            let p = Published::from_hundredths(hundredths);
            assert_eq!(p.to_string(), format!("{sign}{}.{:02}", abs / 100, abs % 100));
        }

        #[test]
        fn gcd_agrees_with_num_integer(a in magnitude(), b in magnitude()) {
            use num_integer::Integer as _;
            assert_eq!(super::gcd(a, b), a.gcd(&b), "gcd({a}, {b})");
        }
    }

    /// Magnitudes on both sides of the `u64` boundary, with shared powers of two.
    fn magnitude() -> impl proptest::strategy::Strategy<Value = u128> {
        use proptest::prelude::*;
        prop_oneof![
            0u128..100,
            any::<u64>().prop_map(u128::from),
            (any::<u64>(), 0u32..64).prop_map(|(x, s)| u128::from(x) << s),
            any::<u128>(),
            Just(u128::MAX),
            Just(u128::from(u64::MAX) + 1),
        ]
    }

    #[test]
    fn published_figures_read_and_write() {
        for (input, text) in [("88", "88.00"), ("87.99", "87.99"), ("0.5", "0.50")] {
            assert_eq!(input.parse::<Published>().unwrap().to_string(), text);
        }
        assert!("88.345".parse::<Published>().is_err());
    }
}
