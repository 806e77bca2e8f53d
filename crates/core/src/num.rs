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
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Exact(BigRational);

/// Why a number could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a decimal number or fraction (write e.g. `21.85`, `3` or `1/9`)")]
pub struct ParseExactError {
    /// The text that was rejected.
    pub text: String,
}

impl Exact {
    /// Zero.
    pub fn zero() -> Exact {
        Exact(BigRational::zero())
    }

    /// One.
    pub fn one() -> Exact {
        Exact(BigRational::one())
    }

    /// An integer.
    pub fn from_int(n: i64) -> Exact {
        Exact(BigRational::from_integer(BigInt::from(n)))
    }

    /// `num / den`; `den` must not be zero.
    pub fn ratio(num: i64, den: i64) -> Exact {
        assert!(den != 0, "Exact::ratio with a zero denominator");
        Exact(BigRational::new(BigInt::from(num), BigInt::from(den)))
    }

    /// True when the number is zero.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// True when the number is below zero.
    pub fn is_negative(&self) -> bool {
        self.0.is_negative()
    }

    /// True when the number is a whole number.
    pub fn is_integer(&self) -> bool {
        self.0.is_integer()
    }

    /// `self / other`, or `None` when `other` is zero.
    pub fn checked_div(&self, other: &Exact) -> Option<Exact> {
        if other.0.is_zero() {
            None
        } else {
            Some(Exact(&self.0 / &other.0))
        }
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
        let scaled = &self.0 * BigRational::from_integer(BigInt::from(100));
        let half = BigRational::new(BigInt::from(1), BigInt::from(2));
        let rounded = if scaled.is_negative() { -((-scaled) + half).floor() } else { (scaled + half).floor() };
        let hundredths = rounded.to_integer().to_i64().expect("published figures fit in i64 hundredths");
        Published { hundredths }
    }

    /// The number of decimal places needed to write the number exactly, or `None`
    /// when it has no finite decimal expansion.
    pub fn decimal_places(&self) -> Option<u32> {
        let mut den = self.0.denom().clone();
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
        match self.decimal_places() {
            Some(0) => self.0.to_integer().to_string(),
            Some(places) => {
                let scale = BigInt::from(10).pow(places);
                let scaled = (&self.0 * BigRational::from_integer(scale)).to_integer();
                let negative = scaled.is_negative();
                let digits = scaled.abs().to_string();
                let places = places as usize;
                let padded = format!("{digits:0>width$}", width = places + 1);
                let (int, frac) = padded.split_at(padded.len() - places);
                format!("{}{int}.{frac}", if negative { "-" } else { "" })
            }
            None => format!("{}/{}", self.0.numer(), self.0.denom()),
        }
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
                Ok(Exact(num / den))
            }
            None => parse_decimal(text).map(Exact).ok_or_else(err),
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
    ($trait:ident, $method:ident) => {
        impl std::ops::$trait<&Exact> for &Exact {
            type Output = Exact;
            fn $method(self, rhs: &Exact) -> Exact {
                Exact(std::ops::$trait::$method(&self.0, &rhs.0))
            }
        }
        impl std::ops::$trait<Exact> for Exact {
            type Output = Exact;
            fn $method(self, rhs: Exact) -> Exact {
                Exact(std::ops::$trait::$method(self.0, rhs.0))
            }
        }
        impl std::ops::$trait<&Exact> for Exact {
            type Output = Exact;
            fn $method(self, rhs: &Exact) -> Exact {
                Exact(std::ops::$trait::$method(self.0, &rhs.0))
            }
        }
    };
}
forward_binop!(Add, add);
forward_binop!(Sub, sub);
forward_binop!(Mul, mul);

impl std::iter::Sum for Exact {
    fn sum<I: Iterator<Item = Exact>>(iter: I) -> Exact {
        iter.fold(Exact::zero(), |acc, x| acc + x)
    }
}

/// A published figure: a number rounded half-up to exactly two decimals.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Published {
    hundredths: i64,
}

impl Published {
    /// From a count of hundredths (`8835` is `88.35`).
    pub fn from_hundredths(hundredths: i64) -> Published {
        Published { hundredths }
    }

    /// The count of hundredths.
    pub fn hundredths(self) -> i64 {
        self.hundredths
    }

    /// The figure as an exact number.
    pub fn to_exact(self) -> Exact {
        Exact::ratio(self.hundredths, 100)
    }
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.hundredths < 0 { "-" } else { "" };
        let abs = self.hundredths.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
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
        for (input, text) in [("21.850", "21.85"), ("3", "3"), ("1/9", "1/9"), ("-0.5", "-0.5"), ("0.05", "0.05")] {
            assert_eq!(input.parse::<Exact>().unwrap().to_text(), text);
        }
    }

    #[test]
    fn published_figures_read_and_write() {
        for (input, text) in [("88", "88.00"), ("87.99", "87.99"), ("0.5", "0.50")] {
            assert_eq!(input.parse::<Published>().unwrap().to_string(), text);
        }
        assert!("88.345".parse::<Published>().is_err());
    }
}
