use super::*;

fn usage(input: u64, cached: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cached,
        ..Default::default()
    }
}

fn price(model: &str) -> &'static ModelPrice {
    lookup(ProviderKind::Openai, model).unwrap()
}

#[test]
fn one_million_tokens_cost_the_listed_price() {
    let p = price("gpt-4o");
    assert_eq!(
        cost(Some(p), &usage(1_000_000, 0, 0)).nano_usd,
        2_500_000_000
    );
    assert_eq!(
        cost(Some(p), &usage(0, 0, 1_000_000)).nano_usd,
        10_000_000_000
    );
}

#[test]
fn small_calls_are_exact() {
    // 9 input and 12 output tokens of gpt-4o-mini: 9*150 + 12*600 = 8550 nano-USD.
    let c = cost(Some(price("gpt-4o-mini")), &usage(9, 0, 12));
    assert_eq!(
        c,
        Cost {
            known: true,
            nano_usd: 8_550
        }
    );
}

#[test]
fn cached_tokens_are_billed_once_at_the_cache_price() {
    // 1000 input of which 400 cached, 100 output, gpt-4.1:
    // 600*2000 + 400*500 + 100*8000 = 1_200_000 + 200_000 + 800_000.
    let c = cost(Some(price("gpt-4.1")), &usage(1000, 400, 100));
    assert_eq!(c.nano_usd, 2_200_000);
    // More cached than input (a provider bug) never bills negative fresh tokens.
    let c = cost(Some(price("gpt-4.1")), &usage(10, 50, 0));
    assert_eq!(c.nano_usd, 10 * 500);
}

#[test]
fn fractions_of_a_nano_dollar_round_half_up() {
    let p = ModelPrice {
        model: "x",
        input: 1_500_000,
        cache_read: 0,
        cache_write: 0,
        output: 400_000,
        source: "",
    };
    // 1 input token = 1.5 nano-USD -> 2; 1 output token = 0.4 -> 0.
    assert_eq!(cost(Some(&p), &usage(1, 0, 0)).nano_usd, 2);
    assert_eq!(cost(Some(&p), &usage(0, 0, 1)).nano_usd, 0);
    assert_eq!(cost(Some(&p), &usage(1, 0, 1)).nano_usd, 2);
}

#[test]
fn huge_counts_do_not_overflow() {
    let c = cost(Some(price("gpt-4o")), &usage(u64::MAX, 0, u64::MAX));
    assert!(c.known);
    assert_eq!(c.nano_usd, i64::MAX);
}

#[test]
fn unknown_models_have_unknown_cost() {
    assert_eq!(lookup(ProviderKind::Openai, "my-finetune"), None);
    assert_eq!(
        cost(None, &usage(10, 0, 10)),
        Cost {
            known: false,
            nano_usd: 0
        }
    );
    assert_eq!(lookup(ProviderKind::Scripted, "gpt-4o"), None);
}

#[test]
fn dated_snapshots_match_their_entry() {
    assert_eq!(price("gpt-4o-mini-2024-07-18").model, "gpt-4o-mini");
    assert_eq!(price("gpt-4o-2024-08-06").model, "gpt-4o");
    assert_eq!(price("gpt-4.1-mini-2025-04-14").model, "gpt-4.1-mini");
    assert_eq!(price("o3-mini-2025-01-31").model, "o3-mini");
    assert_eq!(lookup(ProviderKind::Openai, "gpt-4o-audio-preview"), None);
    assert_eq!(lookup(ProviderKind::Openai, "gpt-4o-"), None);
}

#[test]
fn every_entry_has_cache_price_at_most_input() {
    for p in OPENAI_PRICES {
        assert!(
            p.cache_read <= p.input && p.input > 0 && p.output > 0,
            "{p:?}"
        );
    }
}

#[test]
fn anthropic_cache_writes_and_reads_bill_once_each() {
    // As normalized from Anthropic's usage {input_tokens: 21, cache_creation_input_tokens: 188,
    // cache_read_input_tokens: 1800, output_tokens: 393} on claude-sonnet-4:
    // 21*3000 + 188*3750 + 1800*300 + 393*15000 nano-USD.
    let u = Usage {
        input_tokens: 21 + 188 + 1800,
        cache_write_tokens: 188,
        cache_read_tokens: 1800,
        output_tokens: 393,
        reasoning_tokens: 0,
    };
    let p = lookup(ProviderKind::Anthropic, "claude-sonnet-4-20250514").unwrap();
    assert_eq!(p.model, "claude-sonnet-4");
    assert_eq!(
        cost(Some(p), &u).nano_usd,
        21 * 3000 + 188 * 3750 + 1800 * 300 + 393 * 15000
    );
    // Counts that do not add up (a provider bug) never bill a token twice or negatively.
    let odd = Usage {
        input_tokens: 10,
        cache_write_tokens: 8,
        cache_read_tokens: 7,
        ..Default::default()
    };
    assert_eq!(cost(Some(p), &odd).nano_usd, 7 * 300 + 3 * 3750);
}

#[test]
fn only_snapshot_suffixes_share_a_price() {
    let a = |m: &str| lookup(ProviderKind::Anthropic, m).map(|p| p.model);
    assert_eq!(a("claude-opus-4-1-20250805"), Some("claude-opus-4-1"));
    assert_eq!(a("claude-opus-4-20250514"), Some("claude-opus-4"));
    assert_eq!(a("claude-3-5-haiku-latest"), Some("claude-3-5-haiku"));
    assert_eq!(a("claude-sonnet-4-0"), Some("claude-sonnet-4-0"));
    // A newer model is not the older one with a suffix: its price is unknown, not borrowed.
    assert_eq!(a("claude-opus-4-5"), None);
    assert_eq!(a("claude-opus-4-5-20251101"), None);
    assert_eq!(a("claude-sonnet-4-2025"), None);
    assert_eq!(lookup(ProviderKind::Openai, "gpt-4o-2024-8-6"), None);
}

#[test]
fn a_target_price_replaces_the_table() {
    use bridle_core::manifest::PriceOverride;
    let mut t: Target = serde_json::from_value(serde_json::json!({
        "name": "t", "provider": "openai", "model": "gpt-4o"
    }))
    .unwrap();
    assert_eq!(for_target(&t, "gpt-4o").unwrap().input, 2_500_000_000);
    assert_eq!(for_target(&t, "my-finetune"), None);
    t.price = Some(PriceOverride {
        input: 0.1,
        output: 0.3,
        cache_read: None,
        cache_write: Some(0.2),
    });
    let p = for_target(&t, "my-finetune").unwrap();
    assert_eq!(
        (p.input, p.output, p.cache_read, p.cache_write),
        (100_000_000, 300_000_000, 100_000_000, 200_000_000)
    );
    assert_eq!(p.source, OVERRIDE_SOURCE);
}

#[test]
fn every_anthropic_entry_is_consistent() {
    for p in ANTHROPIC_PRICES {
        assert!(
            p.cache_read < p.input && p.cache_write > p.input && p.output > p.input,
            "{p:?}"
        );
    }
}
