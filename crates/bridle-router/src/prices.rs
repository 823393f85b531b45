//! What a model call cost, from a price table kept as data, or a target's own prices.
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

use bridle_core::manifest::{ProviderKind, Target};
use bridle_proto::{Cost, Price, Usage};

/// Where the figures come from, and when they were read.
pub const OPENAI_SOURCE: &str = "OpenAI API pricing, https://platform.openai.com/docs/pricing (standard tier), as published in June 2025";
pub const ANTHROPIC_SOURCE: &str = "Anthropic pricing, https://docs.anthropic.com/en/docs/about-claude/pricing (base input, 5-minute cache writes, cache hits, output), as published in August 2025";
pub const OVERRIDE_SOURCE: &str = "the route's own price for this target (spec.targets[].price)";

/// Prices of one model, in nano-USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    pub model: &'static str,
    pub input: i64,
    /// Input tokens served from the provider's prompt cache (a subset of input tokens).
    pub cache_read: i64,
    /// Writing the prompt cache; OpenAI does not bill it separately.
    pub cache_write: i64,
    pub output: i64,
    pub source: &'static str,
}

const fn openai(model: &'static str, input: i64, cache_read: i64, output: i64) -> ModelPrice {
    ModelPrice {
        model,
        input,
        cache_read,
        cache_write: 0,
        output,
        source: OPENAI_SOURCE,
    }
}

/// OpenAI models, dollars per million tokens times 1e9: input, cached input, output.
/// Source: OpenAI's pricing page (see [`OPENAI_SOURCE`]); re-check before relying on them.
pub const OPENAI_PRICES: &[ModelPrice] = &[
    openai("gpt-4o", 2_500_000_000, 1_250_000_000, 10_000_000_000),
    openai("gpt-4o-mini", 150_000_000, 75_000_000, 600_000_000),
    openai("gpt-4.1", 2_000_000_000, 500_000_000, 8_000_000_000),
    openai("gpt-4.1-mini", 400_000_000, 100_000_000, 1_600_000_000),
    openai("gpt-4.1-nano", 100_000_000, 25_000_000, 400_000_000),
    openai("o3-mini", 1_100_000_000, 550_000_000, 4_400_000_000),
    openai("o4-mini", 1_100_000_000, 275_000_000, 4_400_000_000),
];

const fn anthropic(
    model: &'static str,
    input: i64,
    cache_write: i64,
    cache_read: i64,
    output: i64,
) -> ModelPrice {
    ModelPrice {
        model,
        input,
        cache_read,
        cache_write,
        output,
        source: ANTHROPIC_SOURCE,
    }
}

/// Anthropic models, dollars per million tokens times 1e9: base input, 5-minute cache writes,
/// cache hits, output. Source: [`ANTHROPIC_SOURCE`]. Models published after it (or 1-hour
/// cache writes, billed higher) need a `price` on the target.
pub const ANTHROPIC_PRICES: &[ModelPrice] = &[
    anthropic(
        "claude-opus-4-1",
        15_000_000_000,
        18_750_000_000,
        1_500_000_000,
        75_000_000_000,
    ),
    anthropic(
        "claude-opus-4",
        15_000_000_000,
        18_750_000_000,
        1_500_000_000,
        75_000_000_000,
    ),
    anthropic(
        "claude-opus-4-0",
        15_000_000_000,
        18_750_000_000,
        1_500_000_000,
        75_000_000_000,
    ),
    anthropic(
        "claude-sonnet-4",
        3_000_000_000,
        3_750_000_000,
        300_000_000,
        15_000_000_000,
    ),
    anthropic(
        "claude-sonnet-4-0",
        3_000_000_000,
        3_750_000_000,
        300_000_000,
        15_000_000_000,
    ),
    anthropic(
        "claude-3-7-sonnet",
        3_000_000_000,
        3_750_000_000,
        300_000_000,
        15_000_000_000,
    ),
    anthropic(
        "claude-3-5-sonnet",
        3_000_000_000,
        3_750_000_000,
        300_000_000,
        15_000_000_000,
    ),
    anthropic(
        "claude-3-5-haiku",
        800_000_000,
        1_000_000_000,
        80_000_000,
        4_000_000_000,
    ),
    anthropic(
        "claude-3-opus",
        15_000_000_000,
        18_750_000_000,
        1_500_000_000,
        75_000_000_000,
    ),
    anthropic(
        "claude-3-haiku",
        250_000_000,
        300_000_000,
        30_000_000,
        1_250_000_000,
    ),
];

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

/// The price of `model` as a provider reports it: the exact name, else the table entry
/// followed by a snapshot suffix ("gpt-4o-mini-2024-07-18" is "gpt-4o-mini",
/// "claude-sonnet-4-20250514" is "claude-sonnet-4").
pub fn lookup(provider: ProviderKind, model: &str) -> Option<&'static ModelPrice> {
    let table = match provider {
        ProviderKind::Openai => OPENAI_PRICES,
        ProviderKind::Anthropic => ANTHROPIC_PRICES,
        ProviderKind::Scripted => return None,
    };
    if let Some(p) = table.iter().find(|p| p.model == model) {
        return Some(p);
    }
    table.iter().find(|p| {
        model
            .strip_prefix(p.model)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(is_snapshot_suffix)
    })
}

/// The price that bills `model` answered by `target`: the target's own `price` when it has
/// one, else the table's. Owned, because an override is not static.
pub fn for_target(target: &Target, model: &str) -> Option<ModelPrice> {
    if let Some(o) = &target.price {
        let (input, output, cache_read, cache_write) = o.nano_usd();
        return Some(ModelPrice {
            model: "",
            input,
            cache_read,
            cache_write,
            output,
            source: OVERRIDE_SOURCE,
        });
    }
    lookup(target.provider, model).copied()
}

/// Whether a call to `target` for `model` (the model it is configured with) can be priced.
/// The model that answers may be a dated snapshot of it, which the table prices alike.
pub fn known_for(target: &Target, model: &str) -> bool {
    for_target(target, model).is_some()
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

pub fn to_proto(p: &ModelPrice) -> Price {
    Price {
        input_per_mtok_nano_usd: p.input,
        output_per_mtok_nano_usd: p.output,
        cache_read_per_mtok_nano_usd: p.cache_read,
        cache_write_per_mtok_nano_usd: p.cache_write,
        source: p.source.to_string(),
    }
}

#[cfg(test)]
mod tests;
