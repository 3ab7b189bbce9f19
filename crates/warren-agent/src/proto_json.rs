//! The corners of the proto3 JSON mapping that serde's defaults get wrong: `bytes` as base64
//! (standard or URL-safe, padded or not), integers that may arrive as strings, and `null`
//! meaning "the default value". Everything here is crate-private plumbing for `protocol`.

use std::fmt;
use std::marker::PhantomData;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Decodes proto3 JSON `bytes`: parsers must accept both alphabets, with or without padding.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD
        .decode(text)
        .or_else(|e| URL_SAFE.decode(text).map_err(|_| e))
}

/// A `bytes` field: base64 (standard, padded) on the wire, raw bytes in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct B64(pub Bytes);

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct B64Visitor;
        impl Visitor<'_> for B64Visitor {
            type Value = B64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<B64, E> {
                decode_base64(v)
                    .map(|raw| B64(Bytes::from(raw)))
                    .map_err(|e| E::custom(format!("invalid base64: {e}")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<B64, E> {
                Ok(B64(Bytes::new()))
            }
        }
        deserializer.deserialize_any(B64Visitor)
    }
}

/// An integer field that proto3 JSON allows as a number or a decimal string; `null` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Num<T>(pub T);

impl<'de, T> Deserialize<'de> for Num<T>
where
    T: TryFrom<i64> + TryFrom<u64> + Default,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumVisitor<T>(PhantomData<T>);
        impl<T: TryFrom<i64> + TryFrom<u64> + Default> Visitor<'_> for NumVisitor<T> {
            type Value = Num<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a decimal string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num<T>, E> {
                T::try_from(v)
                    .map(Num)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num<T>, E> {
                T::try_from(v)
                    .map(Num)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num<T>, E> {
                // proto3 JSON allows exponent notation such as 1e3 for integer fields.
                if v.fract() != 0.0 || !v.is_finite() || v.abs() > 9.0e15 {
                    return Err(E::custom(format!("{v} is not an integer")));
                }
                let rounded = format!("{v:.0}");
                self.visit_str(&rounded)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num<T>, E> {
                if let Ok(n) = v.parse::<i64>() {
                    return self.visit_i64(n);
                }
                match v.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("{v:?} is not an integer"))),
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Num<T>, E> {
                Ok(Num(T::default()))
            }
        }
        deserializer.deserialize_any(NumVisitor(PhantomData))
    }
}

impl<T: Serialize> Serialize for Num<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// `deserialize_with` for integer fields (see [`Num`]).
pub(crate) fn num<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64> + Default,
{
    Num::<T>::deserialize(deserializer).map(|n| n.0)
}

/// `deserialize_with` for fields where `null` must read as the type's default.
pub(crate) fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `serialize_with` for 64-bit integers, which proto3 JSON writes as decimal strings.
pub(crate) fn i64_string<S: Serializer>(value: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Defines a proto enum that serializes by name and parses by name or number (unknown numbers
/// and `null` read as the first, unspecified, variant).
macro_rules! proto_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $num:literal, $wire:literal;)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            #[default]
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The proto enum value name.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }

            /// The proto enum number.
            pub fn number(self) -> i32 {
                match self { $($name::$variant => $num,)+ }
            }

            fn from_number(n: i64) -> $name {
                match n { $($num => $name::$variant,)+ _ => $name::default() }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " name or number"))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        match v {
                            $($wire => Ok($name::$variant),)+
                            _ => Err(E::custom(format!("unknown {} {v:?}", stringify!($name)))),
                        }
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        Ok($name::from_number(v))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        Ok($name::from_number(i64::try_from(v).unwrap_or(-1)))
                    }
                    fn visit_unit<E: serde::de::Error>(self) -> Result<$name, E> {
                        Ok($name::default())
                    }
                }
                deserializer.deserialize_any(V)
            }
        }
    };
}
pub(crate) use proto_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_accepts_both_alphabets_and_missing_padding() {
        assert_eq!(decode_base64("aGk=").ok(), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("aGk").ok(), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("-_8").ok(), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64("+/8=").ok(), Some(vec![0xfb, 0xff]));
        assert!(decode_base64("!!").is_err());
    }

    #[test]
    fn numbers_accept_strings_and_reject_out_of_range() {
        let n: Num<u32> = serde_json::from_str("\"42\"").unwrap_or(Num(0));
        assert_eq!(n.0, 42);
        let n: Num<i32> = serde_json::from_str("-3").unwrap_or(Num(0));
        assert_eq!(n.0, -3);
        let n: Num<u32> = serde_json::from_str("1e3").unwrap_or(Num(0));
        assert_eq!(n.0, 1000);
        assert!(serde_json::from_str::<Num<u32>>("-1").is_err());
        assert!(serde_json::from_str::<Num<u32>>("\"x\"").is_err());
        assert!(serde_json::from_str::<Num<u32>>("1.5").is_err());
    }
}
