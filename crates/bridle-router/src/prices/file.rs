//! The price table's file format: YAML, `prices:` and one entry per model, each price a
//! decimal string of US dollars per million tokens read exactly into nano-USD (no floating
//! point on the way), each entry with where and when its figures were read.
//!
//! The shipped table (`crates/bridle-router/prices.yaml`) and an operator's `prices_file` are
//! the same format. Whatever is wrong is refused with the file, the entry (`prices[3]`), the
//! field and, where the YAML parser knows it, the line: a price table read wrongly would bill
//! every call wrongly, so nothing in it is guessed or skipped.

use std::sync::Arc;

use bridle_core::manifest::ProviderKind;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::ModelPrice;

/// Nano-USD in one US dollar.
const NANO: i64 = 1_000_000_000;
/// Largest price accepted, in nano-USD per million tokens: a million dollars, as for a
/// target's own `price` (`MAX_PRICE_USD_PER_MTOK`). Far above any model's, and small enough
/// that the cost arithmetic cannot overflow.
const MAX_NANO_USD: i64 = 1_000_000 * NANO;
/// Longest model name accepted; providers' names are far shorter.
const MODEL_MAX: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    prices: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    provider: Provider,
    model: Model,
    input: Usd,
    #[serde(default)]
    cache_read: Option<Usd>,
    #[serde(default)]
    cache_write: Option<Usd>,
    output: Usd,
    source: Source,
    date: Date,
}

/// The providers a table prices; scripted answers cost nothing and are never looked up.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Provider {
    Openai,
    Anthropic,
}

impl From<Provider> for ProviderKind {
    fn from(p: Provider) -> Self {
        match p {
            Provider::Openai => ProviderKind::Openai,
            Provider::Anthropic => ProviderKind::Anthropic,
        }
    }
}

/// Reads the table in `text`; `name` says which file it is in errors. Entries come back in the
/// file's order.
pub fn parse(name: &str, text: &str) -> Result<Vec<ModelPrice>, String> {
    let file: File = bridle_core::yaml::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    let mut out: Vec<ModelPrice> = Vec::with_capacity(file.prices.len());
    for (i, e) in file.prices.into_iter().enumerate() {
        let provider = ProviderKind::from(e.provider);
        if let Some(first) = out
            .iter()
            .position(|p| p.provider == provider && *p.model == *e.model.0)
        {
            return Err(format!(
                "{name}: prices[{i}]: {} model '{}' is already priced by prices[{first}]: give \
                 each provider and model one entry",
                provider.as_str(),
                e.model.0
            ));
        }
        out.push(ModelPrice {
            provider,
            model: e.model.0,
            input: e.input.0,
            cache_read: e.cache_read.map_or(e.input.0, |u| u.0),
            cache_write: e.cache_write.map_or(e.input.0, |u| u.0),
            output: e.output.0,
            source: e.source.0,
            date: e.date.0,
        });
    }
    Ok(out)
}

/// `s`, US dollars written as a decimal ("2.50", "0.075", "15"), in nano-USD.
pub fn nano_usd(s: &str) -> Result<i64, String> {
    let shown = bridle_core::redact::quote(s);
    if s.starts_with('-') {
        return Err(format!("\"{shown}\" is negative: a price is zero or more"));
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (s.contains('.') && !digits(frac)) {
        return Err(format!(
            "\"{shown}\" is not a price: write US dollars per million tokens as a decimal number \
             such as \"2.50\" (digits, one point, no sign, unit or exponent)"
        ));
    }
    if frac.len() > 9 {
        return Err(format!(
            "\"{shown}\" has {} decimals: at most 9 (a nano-dollar per million tokens is the \
             finest price)",
            frac.len()
        ));
    }
    let too_large = || {
        format!(
            "\"{shown}\" is more than the largest price accepted ({} US dollars per million \
             tokens)",
            MAX_NANO_USD / NANO
        )
    };
    let whole = whole.trim_start_matches('0');
    // More digits than the largest price has: refused before they can overflow.
    if whole.len() > 7 {
        return Err(too_large());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    // The decimals padded to nine places: "075" is 075_000_000 nano-dollars.
    let nanos = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0i64, |n, b| n * 10 + i64::from(b - b'0'));
    let value = whole * NANO + nanos;
    if value > MAX_NANO_USD {
        return Err(too_large());
    }
    Ok(value)
}

/// A price in nano-USD per million tokens, from a decimal string (or a whole number).
struct Usd(i64);

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Usd;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("US dollars per million tokens as a quoted decimal, such as \"2.50\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Usd, E> {
                nano_usd(s).map(Usd).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Usd, E> {
                nano_usd(&v.to_string()).map(Usd).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Usd, E> {
                nano_usd(&v.to_string()).map(Usd).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Usd, E> {
                // The parser has already made the text a binary fraction (2.3 is not 2.3 as a
                // float); only the text can be read exactly.
                Err(E::custom(format!(
                    "{v} is written as a bare number: quote it (\"{v}\") so that it is read as \
                     the exact decimal it is, not as a floating-point number"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string field, checked by `check` while the parser is on it, so that an error names the
/// field's path and line.
fn checked<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
    check: fn(&str) -> Result<(), String>,
) -> Result<Arc<str>, D::Error> {
    struct V {
        expecting: &'static str,
        check: fn(&str) -> Result<(), String>,
    }
    impl Visitor<'_> for V {
        type Value = Arc<str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Arc<str>, E> {
            (self.check)(s).map_err(E::custom)?;
            Ok(s.into())
        }
    }
    d.deserialize_str(V { expecting, check })
}

/// A model name as the provider spells it.
struct Model(Arc<str>);

impl<'de> Deserialize<'de> for Model {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "the model's name", |s| {
            if s.is_empty() {
                return Err("the model name is empty".into());
            }
            if s.chars().count() > MODEL_MAX {
                return Err(format!(
                    "the model name is longer than {MODEL_MAX} characters"
                ));
            }
            if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "model \"{}\" holds a space or a control character: write the model as \
                     the provider names it",
                    bridle_core::redact::quote(s)
                ));
            }
            Ok(())
        })
        .map(Model)
    }
}

/// Where the figures were read: the page, and what on it.
struct Source(Arc<str>);

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "where the figures come from", |s| {
            if s.trim().is_empty() {
                return Err(
                    "the source is empty: say where the figures come from (the pricing \
                            page's URL and what on it)"
                        .into(),
                );
            }
            Ok(())
        })
        .map(Source)
    }
}

/// When the figures were read: `YYYY-MM` or `YYYY-MM-DD`.
struct Date(Arc<str>);

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            "the date the figures were read, YYYY-MM or YYYY-MM-DD",
            |s| {
                if is_date(s) {
                    Ok(())
                } else {
                    Err(format!(
                        "\"{}\" is not a date: write when the figures were read as YYYY-MM or \
                     YYYY-MM-DD",
                        bridle_core::redact::quote(s)
                    ))
                }
            },
        )
        .map(Date)
    }
}

/// `2025-06` or `2025-06-30`: a month 01-12 and a day 01-31.
fn is_date(s: &str) -> bool {
    let num = |p: &str, n: usize| {
        (p.len() == n && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    };
    let parts: Vec<&str> = s.split('-').collect();
    let month_ok = |m: &str| num(m, 2).is_some_and(|m| (1..=12).contains(&m));
    match parts.as_slice() {
        [y, m] => num(y, 4).is_some() && month_ok(m),
        [y, m, d] => {
            num(y, 4).is_some() && month_ok(m) && num(d, 2).is_some_and(|d| (1..=31).contains(&d))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
