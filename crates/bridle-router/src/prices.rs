//! What a model call cost, from a price table kept as data, or a target's own prices.
//!
//! The table is `prices.yaml`, shipped inside the router (each entry with where and when its
//! figures were read), with the operator's `prices_file` laid over it: read once at start into
//! [`Prices`], which the engine, the manifests service and `ListModels` share. A bad file stops
//! the router at start; it is never half read.
//!
//! Amounts are integers in nano-USD (billionths of a dollar); prices are nano-USD per million
//! tokens, so a price of $2.50/Mtok is 2_500_000_000. A model missing from the table has no
//! known cost: it is reported as unknown, never as zero.
//!
//! Usage is normalized before it is priced: `input_tokens` counts every input token, and
//! `cache_read_tokens` / `cache_write_tokens` are the parts of it read from and written to the
//! provider's prompt cache. OpenAI reports it that way; Anthropic reports the three apart and
//! its translation adds them up. Each input token is billed once, at exactly one of the three
//! input prices.

use std::path::Path;
use std::sync::Arc;

use bridle_core::manifest::{ProviderKind, Target};
use bridle_proto::{Cost, Price, Usage};

mod file;

/// The table shipped with the router; `prices_file` lays an operator's over it.
pub const SHIPPED: &str = include_str!("../prices.yaml");
/// How errors name the shipped table.
pub const SHIPPED_NAME: &str = "the router's price table (crates/bridle-router/prices.yaml)";
pub const OVERRIDE_SOURCE: &str = "the route's own price for this target (spec.targets[].price)";

/// Prices of one model, in nano-USD per million tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    pub provider: ProviderKind,
    /// The model as the table names it (empty for a target's own price).
    pub model: Arc<str>,
    pub input: i64,
    /// Input tokens served from the provider's prompt cache (a subset of input tokens).
    pub cache_read: i64,
    /// Writing the prompt cache; OpenAI does not bill it separately.
    pub cache_write: i64,
    pub output: i64,
    /// Where the figures come from: the page and what on it.
    pub source: Arc<str>,
    /// When they were read (YYYY-MM or YYYY-MM-DD); empty for a target's own price.
    pub date: Arc<str>,
}

/// The price table of this router process: the shipped table with the operator's
/// `prices_file` laid over it, read once at start. Cheap to share behind an `Arc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prices {
    entries: Vec<ModelPrice>,
}

impl Prices {
    /// The shipped table alone.
    pub fn shipped() -> Result<Self, String> {
        Self::parse(SHIPPED_NAME, SHIPPED)
    }

    /// A table read from `text` (the file format of `prices.yaml`); `name` says which file it
    /// is in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        Ok(Self {
            entries: file::parse(name, text)?,
        })
    }

    /// The shipped table, with the entries of the operator's file at `path` (when set)
    /// replacing those of the same provider and model and adding the others. Whatever is wrong
    /// in either is an error: the router does not start on a table it cannot trust.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let mut table = Self::shipped()?;
        if let Some(path) = path {
            let name = format!("prices_file {}", path.display());
            let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
            table.overlay(Self::parse(&name, &text)?);
        }
        Ok(table)
    }

    /// `other`'s entries over these: the same provider and model replaced, the others added.
    pub fn overlay(&mut self, other: Prices) {
        for p in other.entries {
            match self
                .entries
                .iter_mut()
                .find(|e| e.provider == p.provider && e.model == p.model)
            {
                Some(e) => *e = p,
                None => self.entries.push(p),
            }
        }
    }

    /// Every entry, in the shipped table's order and then the operator's additions.
    pub fn entries(&self) -> &[ModelPrice] {
        &self.entries
    }

    /// The price of `model` as a provider reports it: the exact name, else the entry
    /// followed by a snapshot suffix ("gpt-4o-mini-2024-07-18" is "gpt-4o-mini",
    /// "claude-sonnet-4-20250514" is "claude-sonnet-4").
    pub fn lookup(&self, provider: ProviderKind, model: &str) -> Option<&ModelPrice> {
        let mine = || self.entries.iter().filter(move |p| p.provider == provider);
        if let Some(p) = mine().find(|p| *p.model == *model) {
            return Some(p);
        }
        mine().find(|p| {
            model
                .strip_prefix(&*p.model)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(is_snapshot_suffix)
        })
    }

    /// The price that bills `model` answered by `target`: the target's own `price` when it
    /// has one, else the table's.
    pub fn for_target(&self, target: &Target, model: &str) -> Option<ModelPrice> {
        if let Some(o) = &target.price {
            let (input, output, cache_read, cache_write) = o.nano_usd();
            return Some(ModelPrice {
                provider: target.provider,
                model: Arc::from(""),
                input,
                cache_read,
                cache_write,
                output,
                source: Arc::from(OVERRIDE_SOURCE),
                date: Arc::from(""),
            });
        }
        self.lookup(target.provider, model).cloned()
    }

    /// Whether a call to `target` for `model` (the model it is configured with) can be
    /// priced. The model that answers may be a dated snapshot of it, which the table prices
    /// alike.
    pub fn known_for(&self, target: &Target, model: &str) -> bool {
        target.price.is_some() || self.lookup(target.provider, model).is_some()
    }
}

/// A snapshot suffix: `-2024-07-18` (OpenAI), `-20250514` (Anthropic) or `-latest`. Anything
/// else ("-audio-preview", "-5") names another model, which must not borrow this one's price.
fn is_snapshot_suffix(rest: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if rest == "latest" || digits(rest, 8) {
        return true;
    }
    let parts: Vec<&str> = rest.split('-').collect();
    matches!(parts.as_slice(), [y, m, d] if digits(y, 4) && digits(m, 2) && digits(d, 2))
}

/// Cost of `usage` at `price`; unknown when there is no price.
pub fn cost(price: Option<&ModelPrice>, usage: &Usage) -> Cost {
    let Some(p) = price else {
        return Cost {
            known: false,
            nano_usd: 0,
        };
    };
    // Cache reads and writes are parts of the input count: each input token is billed once.
    // A provider reporting more cached than input tokens never bills negative fresh ones.
    let read = usage.cache_read_tokens.min(usage.input_tokens);
    let written = usage.cache_write_tokens.min(usage.input_tokens - read);
    let fresh = usage.input_tokens - read - written;
    let micro_tokens: i128 = i128::from(fresh) * i128::from(p.input)
        + i128::from(read) * i128::from(p.cache_read)
        + i128::from(written) * i128::from(p.cache_write)
        + i128::from(usage.output_tokens) * i128::from(p.output);
    // Per-million prices: divide once at the end, rounding half up, so no token is lost to
    // truncation along the way.
    let nano = (micro_tokens + 500_000) / 1_000_000;
    Cost {
        known: true,
        nano_usd: i64::try_from(nano).unwrap_or(i64::MAX),
    }
}

/// The price as `ListModels` shows it; its source says when the figures were read.
pub fn to_proto(p: &ModelPrice) -> Price {
    Price {
        input_per_mtok_nano_usd: p.input,
        output_per_mtok_nano_usd: p.output,
        cache_read_per_mtok_nano_usd: p.cache_read,
        cache_write_per_mtok_nano_usd: p.cache_write,
        source: if p.date.is_empty() {
            p.source.to_string()
        } else {
            format!("{}, as published in {}", p.source, p.date)
        },
    }
}

#[cfg(test)]
mod tests;
