//! Device identifiers (ICCID, IMEI, MSISDN), parsed once at the border and valid by construction.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier was refused; the message names the identifier kind and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} '{value}' must contain digits only")]
    NotDigits { kind: &'static str, value: String },
    #[error("{kind} '{value}' must have {expected} digits, it has {actual}")]
    Length { kind: &'static str, value: String, expected: &'static str, actual: usize },
    #[error("{kind} '{value}' has a wrong check digit (Luhn)")]
    CheckDigit { kind: &'static str, value: String },
}

/// True when the digit string passes the Luhn (mod 10) check, check digit last.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(c.wrapping_sub(b'0'));
        if d > 9 {
            return false;
        }
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// The Luhn check digit that completes `payload`.
pub fn luhn_check_digit(payload: &str) -> u8 {
    (0..=9u8).find(|d| luhn_valid(&format!("{payload}{d}"))).unwrap_or(0)
}

fn digits_only(kind: &'static str, raw: &str) -> Result<String, IdError> {
    let value = raw.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::NotDigits { kind, value: value.to_string() });
    }
    Ok(value.to_string())
}

macro_rules! identifier {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::parse(s)
            }
        }
    };
}

/// A SIM card number: 19 or 20 digits ending in a Luhn check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iccid(String);

impl Iccid {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let value = digits_only("ICCID", raw)?;
        if !(19..=20).contains(&value.len()) {
            return Err(IdError::Length { kind: "ICCID", actual: value.len(), value, expected: "19 or 20" });
        }
        if !luhn_valid(&value) {
            return Err(IdError::CheckDigit { kind: "ICCID", value });
        }
        Ok(Self(value))
    }
}
identifier!(Iccid);

/// A handset identity: 15 digits ending in a Luhn check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Imei(String);

impl Imei {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let value = digits_only("IMEI", raw)?;
        if value.len() != 15 {
            return Err(IdError::Length { kind: "IMEI", actual: value.len(), value, expected: "15" });
        }
        if !luhn_valid(&value) {
            return Err(IdError::CheckDigit { kind: "IMEI", value });
        }
        Ok(Self(value))
    }
}
identifier!(Imei);

/// A phone number in E.164 digits (no '+'): 7 to 15 digits, no check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msisdn(String);

impl Msisdn {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let trimmed = raw.trim().trim_start_matches('+');
        let value = digits_only("MSISDN", trimmed)?;
        if !(7..=15).contains(&value.len()) {
            return Err(IdError::Length { kind: "MSISDN", actual: value.len(), value, expected: "7 to 15" });
        }
        Ok(Self(value))
    }
}
identifier!(Msisdn);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_sample_iccid_is_valid() {
        assert!(Iccid::parse("89148000008245116615").is_ok());
    }

    #[test]
    fn iccid_with_wrong_check_digit_is_refused_with_reason() {
        let err = Iccid::parse("89148000008245116616").unwrap_err();
        assert_eq!(err.to_string(), "ICCID '89148000008245116616' has a wrong check digit (Luhn)");
    }

    #[test]
    fn iccid_length_and_characters_are_checked() {
        assert!(matches!(Iccid::parse("8914800000824511"), Err(IdError::Length { actual: 16, .. })));
        assert!(matches!(Iccid::parse("8914800000824511661A"), Err(IdError::NotDigits { .. })));
        assert!(matches!(Iccid::parse(""), Err(IdError::NotDigits { .. })));
    }

    #[test]
    fn imei_is_fifteen_digits_with_luhn() {
        assert!(Imei::parse("490154203237518").is_ok());
        assert!(matches!(Imei::parse("490154203237519"), Err(IdError::CheckDigit { .. })));
        assert!(matches!(Imei::parse("49015420323751"), Err(IdError::Length { .. })));
    }

    #[test]
    fn msisdn_accepts_plus_and_refuses_short_numbers() {
        assert_eq!(Msisdn::parse("+14155550100").unwrap().as_str(), "14155550100");
        assert!(Msisdn::parse("12345").is_err());
    }

    proptest! {
        #[test]
        fn any_payload_with_its_check_digit_parses(payload in "[0-9]{18,19}") {
            let full = format!("{payload}{}", luhn_check_digit(&payload));
            let parsed = Iccid::parse(&full).unwrap();
            prop_assert_eq!(parsed.as_str(), full.as_str());
        }

        #[test]
        fn changing_one_digit_breaks_the_check(payload in "[0-9]{18}", pos in 0usize..19, delta in 1u8..10) {
            let full = format!("{payload}{}", luhn_check_digit(&payload));
            let mut bytes = full.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let altered = String::from_utf8(bytes).unwrap();
            prop_assert!(Iccid::parse(&altered).is_err());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,30}") {
            let _ = Iccid::parse(&s);
            let _ = Imei::parse(&s);
            let _ = Msisdn::parse(&s);
        }
    }
}
