use super::*;

fn shipped() -> Prices {
    Prices::shipped().unwrap()
}

fn lookup(provider: ProviderKind, model: &str) -> Option<ModelPrice> {
    shipped().lookup(provider, model).cloned()
}

fn usage(input: u64, cached: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cached,
        ..Default::default()
    }
}

fn price(model: &str) -> ModelPrice {
    lookup(ProviderKind::Openai, model).unwrap()
}

#[test]
fn one_million_tokens_cost_the_listed_price() {
    let p = &price("gpt-4o");
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
    let c = cost(Some(&price("gpt-4o-mini")), &usage(9, 0, 12));
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
    let c = cost(Some(&price("gpt-4.1")), &usage(1000, 400, 100));
    assert_eq!(c.nano_usd, 2_200_000);
    // More cached than input (a provider bug) never bills negative fresh tokens.
    let c = cost(Some(&price("gpt-4.1")), &usage(10, 50, 0));
    assert_eq!(c.nano_usd, 10 * 500);
}

#[test]
fn fractions_of_a_nano_dollar_round_half_up() {
    let p = ModelPrice {
        provider: ProviderKind::Openai,
        model: "x".into(),
        input: 1_500_000,
        cache_read: 0,
        cache_write: 0,
        output: 400_000,
        source: "".into(),
        date: "".into(),
    };
    // 1 input token = 1.5 nano-USD -> 2; 1 output token = 0.4 -> 0.
    assert_eq!(cost(Some(&p), &usage(1, 0, 0)).nano_usd, 2);
    assert_eq!(cost(Some(&p), &usage(0, 0, 1)).nano_usd, 0);
    assert_eq!(cost(Some(&p), &usage(1, 0, 1)).nano_usd, 2);
}

#[test]
fn huge_counts_do_not_overflow() {
    let c = cost(Some(&price("gpt-4o")), &usage(u64::MAX, 0, u64::MAX));
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
    assert_eq!(&*price("gpt-4o-mini-2024-07-18").model, "gpt-4o-mini");
    assert_eq!(&*price("gpt-4o-2024-08-06").model, "gpt-4o");
    assert_eq!(&*price("gpt-4.1-mini-2025-04-14").model, "gpt-4.1-mini");
    assert_eq!(&*price("o3-mini-2025-01-31").model, "o3-mini");
    assert_eq!(lookup(ProviderKind::Openai, "gpt-4o-audio-preview"), None);
    assert_eq!(lookup(ProviderKind::Openai, "gpt-4o-"), None);
}

#[test]
fn every_entry_has_cache_price_at_most_input() {
    let table = shipped();
    for p in table
        .entries()
        .iter()
        .filter(|p| p.provider == ProviderKind::Openai)
    {
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
    let p = &lookup(ProviderKind::Anthropic, "claude-sonnet-4-20250514").unwrap();
    assert_eq!(&*p.model, "claude-sonnet-4");
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
    let table = shipped();
    let a = |m: &str| table.lookup(ProviderKind::Anthropic, m).map(|p| &*p.model);
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
    let table = shipped();
    assert_eq!(table.for_target(&t, "gpt-4o").unwrap().input, 2_500_000_000);
    assert_eq!(table.for_target(&t, "my-finetune"), None);
    assert!(!table.known_for(&t, "my-finetune"));
    t.price = Some(PriceOverride {
        input: 0.1,
        output: 0.3,
        cache_read: None,
        cache_write: Some(0.2),
    });
    assert!(table.known_for(&t, "my-finetune"));
    let p = table.for_target(&t, "my-finetune").unwrap();
    assert_eq!(
        (p.input, p.output, p.cache_read, p.cache_write),
        (100_000_000, 300_000_000, 100_000_000, 200_000_000)
    );
    assert_eq!(&*p.source, OVERRIDE_SOURCE);
    assert_eq!(to_proto(&p).source, OVERRIDE_SOURCE);
}

#[test]
fn every_anthropic_entry_is_consistent() {
    let table = shipped();
    for p in table
        .entries()
        .iter()
        .filter(|p| p.provider == ProviderKind::Anthropic)
    {
        assert!(
            p.cache_read < p.input && p.cache_write > p.input && p.output > p.input,
            "{p:?}"
        );
    }
}

/// The figures of the table as it was written in Rust before it became `prices.yaml`
/// (dollars per million tokens times 1e9): input, cache read, cache write, output.
#[rustfmt::skip]
const BEFORE: &[(ProviderKind, &str, [i64; 4])] = &[
    (ProviderKind::Openai, "gpt-4o", [2_500_000_000, 1_250_000_000, 0, 10_000_000_000]),
    (ProviderKind::Openai, "gpt-4o-mini", [150_000_000, 75_000_000, 0, 600_000_000]),
    (ProviderKind::Openai, "gpt-4.1", [2_000_000_000, 500_000_000, 0, 8_000_000_000]),
    (ProviderKind::Openai, "gpt-4.1-mini", [400_000_000, 100_000_000, 0, 1_600_000_000]),
    (ProviderKind::Openai, "gpt-4.1-nano", [100_000_000, 25_000_000, 0, 400_000_000]),
    (ProviderKind::Openai, "o3-mini", [1_100_000_000, 550_000_000, 0, 4_400_000_000]),
    (ProviderKind::Openai, "o4-mini", [1_100_000_000, 275_000_000, 0, 4_400_000_000]),
    (ProviderKind::Anthropic, "claude-opus-4-1", [15_000_000_000, 1_500_000_000, 18_750_000_000, 75_000_000_000]),
    (ProviderKind::Anthropic, "claude-opus-4", [15_000_000_000, 1_500_000_000, 18_750_000_000, 75_000_000_000]),
    (ProviderKind::Anthropic, "claude-opus-4-0", [15_000_000_000, 1_500_000_000, 18_750_000_000, 75_000_000_000]),
    (ProviderKind::Anthropic, "claude-sonnet-4", [3_000_000_000, 300_000_000, 3_750_000_000, 15_000_000_000]),
    (ProviderKind::Anthropic, "claude-sonnet-4-0", [3_000_000_000, 300_000_000, 3_750_000_000, 15_000_000_000]),
    (ProviderKind::Anthropic, "claude-3-7-sonnet", [3_000_000_000, 300_000_000, 3_750_000_000, 15_000_000_000]),
    (ProviderKind::Anthropic, "claude-3-5-sonnet", [3_000_000_000, 300_000_000, 3_750_000_000, 15_000_000_000]),
    (ProviderKind::Anthropic, "claude-3-5-haiku", [800_000_000, 80_000_000, 1_000_000_000, 4_000_000_000]),
    (ProviderKind::Anthropic, "claude-3-opus", [15_000_000_000, 1_500_000_000, 18_750_000_000, 75_000_000_000]),
    (ProviderKind::Anthropic, "claude-3-haiku", [250_000_000, 30_000_000, 300_000_000, 1_250_000_000]),
];

#[test]
fn the_shipped_file_holds_exactly_the_figures_and_sources_of_the_table_it_replaced() {
    let table = shipped();
    let got: Vec<(ProviderKind, &str, [i64; 4])> = table
        .entries()
        .iter()
        .map(|p| {
            (
                p.provider,
                &*p.model,
                [p.input, p.cache_read, p.cache_write, p.output],
            )
        })
        .collect();
    assert_eq!(got, BEFORE);
    for p in table.entries() {
        let (source, date) = match p.provider {
            ProviderKind::Openai => (
                "OpenAI API pricing, https://platform.openai.com/docs/pricing (standard tier)",
                "2025-06",
            ),
            _ => (
                "Anthropic pricing, https://docs.anthropic.com/en/docs/about-claude/pricing \
                 (base input, 5-minute cache writes, cache hits, output)",
                "2025-08",
            ),
        };
        assert_eq!((&*p.source, &*p.date), (source, date), "{p:?}");
    }
    assert_eq!(
        to_proto(&price("gpt-4o")).source,
        "OpenAI API pricing, https://platform.openai.com/docs/pricing (standard tier), as \
         published in 2025-06"
    );
}

#[test]
fn no_file_is_the_shipped_table_and_a_file_overrides_and_extends_it() {
    assert_eq!(Prices::load(None).unwrap(), shipped());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.yaml");
    std::fs::write(
        &path,
        r#"
prices:
  # A negotiated rate replaces the list price of gpt-4o.
  - provider: openai
    model: gpt-4o
    input: "2.00"
    cacheRead: "1"
    cacheWrite: "0"
    output: "8.5"
    source: our contract with OpenAI, section 4
    date: 2025-09-01
  # A model the shipped table does not know yet.
  - provider: anthropic
    model: claude-sonnet-4-5
    input: "3"
    cacheRead: "0.30"
    cacheWrite: "3.75"
    output: "15"
    source: https://docs.anthropic.com/en/docs/about-claude/pricing (claude-sonnet-4-5)
    date: 2025-09
"#,
    )
    .unwrap();
    let table = Prices::load(Some(&path)).unwrap();
    assert_eq!(table.entries().len(), shipped().entries().len() + 1);
    let p = table
        .lookup(ProviderKind::Openai, "gpt-4o-2024-08-06")
        .unwrap();
    assert_eq!(
        (p.input, p.cache_read, p.cache_write, p.output),
        (2_000_000_000, 1_000_000_000, 0, 8_500_000_000)
    );
    assert_eq!(
        to_proto(p).source,
        "our contract with OpenAI, section 4, as published in 2025-09-01"
    );
    // Entries it does not name keep the shipped figures.
    assert_eq!(
        table.lookup(ProviderKind::Openai, "gpt-4o-mini"),
        shipped().lookup(ProviderKind::Openai, "gpt-4o-mini")
    );
    // The new model is priced, its dated snapshots too; the one it does not name is not.
    let p = table
        .lookup(ProviderKind::Anthropic, "claude-sonnet-4-5-20250929")
        .unwrap();
    assert_eq!(&*p.model, "claude-sonnet-4-5");
    assert_eq!(p.output, 15_000_000_000);
    assert_eq!(
        table.lookup(ProviderKind::Anthropic, "claude-opus-4-5"),
        None
    );
    // The same name under another provider is another model.
    assert_eq!(table.lookup(ProviderKind::Anthropic, "gpt-4o"), None);
}

#[test]
fn a_file_that_cannot_be_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    let e = Prices::load(Some(&path)).unwrap_err();
    assert!(
        e.starts_with(&format!("prices_file {}: ", path.display())),
        "{e}"
    );
}

#[test]
fn an_entry_for_one_snapshot_prices_that_snapshot_alone() {
    let mut table = shipped();
    table.overlay(
        Prices::parse(
            "operator.yaml",
            r#"
prices:
  - {provider: openai, model: gpt-4o-2024-05-13, input: "5", output: "15", source: s, date: 2024-05}
"#,
        )
        .unwrap(),
    );
    let model = |m: &str| {
        table
            .lookup(ProviderKind::Openai, m)
            .map(|p| p.model.to_string())
    };
    assert_eq!(
        model("gpt-4o-2024-05-13").as_deref(),
        Some("gpt-4o-2024-05-13")
    );
    assert_eq!(model("gpt-4o-2024-08-06").as_deref(), Some("gpt-4o"));
}
