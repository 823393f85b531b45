//! The order in which one call tries a route's targets, by the route's strategy. Whatever comes
//! first, every other target follows as a fallback.

use bridle_core::manifest::{ModelRoute, Strategy, Target};
use rand::Rng as _;

use crate::health::Health;
use crate::prices::Prices;

/// The targets of `route` in the order this call tries them.
pub fn order<'a>(
    route: &'a ModelRoute,
    tenant: &str,
    health: &Health,
    prices: &Prices,
) -> Vec<&'a Target> {
    let targets = &route.spec.targets;
    match route.spec.strategy {
        Strategy::Fallback => targets.iter().collect(),
        Strategy::Weighted => {
            let mut rng = rand::rng();
            weighted(targets, |_| rng.random::<f64>())
        }
        Strategy::LeastLatency => {
            let name = route.metadata.name.as_str();
            // Unmeasured targets sort first (latency 0), so each gets measured; ties keep the
            // manifest's order.
            let mut keyed: Vec<(f64, &Target)> = targets
                .iter()
                .map(|t| (health.latency_ms(tenant, name, &t.name).unwrap_or(0.0), t))
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            keyed.into_iter().map(|(_, t)| t).collect()
        }
        Strategy::Cheapest => {
            let mut keyed: Vec<(Option<i128>, &Target)> =
                targets.iter().map(|t| (price_key(prices, t), t)).collect();
            // Known prices ascending, then unknown ones; stable, so ties keep manifest order.
            keyed.sort_by(|a, b| match (a.0, b.0) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            });
            keyed.into_iter().map(|(_, t)| t).collect()
        }
    }
}

/// What one million input plus one million output tokens cost at the target, as configured.
fn price_key(prices: &Prices, t: &Target) -> Option<i128> {
    if t.provider == bridle_core::manifest::ProviderKind::Scripted {
        return Some(0);
    }
    let p = prices.for_target(t, t.model.as_deref().unwrap_or_default())?;
    Some(i128::from(p.input) + i128::from(p.output))
}

/// A weighted random order without replacement (Efraimidis–Spirakis): each target draws
/// `u^(1/w)` and the highest comes first, so a target of weight 3 leads three times as often
/// as one of weight 1. Weight 0 draws nothing and only ever follows.
fn weighted(targets: &[Target], mut uniform: impl FnMut(usize) -> f64) -> Vec<&Target> {
    let mut keyed: Vec<(f64, &Target)> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let w = f64::from(t.weight.unwrap_or(1));
            let k = if w > 0.0 {
                uniform(i).max(f64::MIN_POSITIVE).powf(1.0 / w)
            } else {
                -1.0
            };
            (k, t)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{BreakerConfig, Outcome};
    use std::time::{Duration, Instant};

    fn route(strategy: &str, targets: serde_json::Value) -> ModelRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "bridle.dev/v1", "kind": "ModelRoute",
            "metadata": {"name": "r"},
            "spec": {"strategy": strategy, "targets": targets}
        }))
        .unwrap()
    }

    fn names(v: &[&Target]) -> Vec<String> {
        v.iter().map(|t| t.name.clone()).collect()
    }

    fn shipped() -> Prices {
        Prices::shipped().unwrap()
    }

    fn health() -> Health {
        Health::new(BreakerConfig {
            failures: 3,
            cooldown: Duration::from_secs(1),
        })
    }

    #[test]
    fn weighted_leads_in_proportion_and_zero_only_follows() {
        let r = route(
            "weighted",
            serde_json::json!([
                {"name": "a", "provider": "openai", "model": "m", "weight": 3},
                {"name": "b", "provider": "openai", "model": "m", "weight": 1},
                {"name": "z", "provider": "openai", "model": "m", "weight": 0}
            ]),
        );
        let h = health();
        let prices = shipped();
        let mut first_a = 0;
        let n = 20_000;
        for _ in 0..n {
            let o = order(&r, "t", &h, &prices);
            assert_eq!(o.len(), 3);
            assert_eq!(o[2].name, "z");
            if o[0].name == "a" {
                first_a += 1;
            }
        }
        // Expected 3/4 of the draws; the bound is 10 standard deviations wide.
        let share = f64::from(first_a) / f64::from(n);
        assert!((share - 0.75).abs() < 0.031, "a first in {share} of calls");
        // Deterministic: with equal draws, the heavier target wins.
        let o = weighted(&r.spec.targets, |_| 0.5);
        assert_eq!(names(&o), vec!["a", "b", "z"]);
    }

    #[test]
    fn cheapest_sorts_known_prices_then_unknown() {
        let r = route(
            "cheapest",
            serde_json::json!([
                {"name": "unknown", "provider": "openai", "model": "my-finetune"},
                {"name": "big", "provider": "openai", "model": "gpt-4o"},
                {"name": "own", "provider": "openai", "model": "my-finetune", "price": {"input": 0.01, "output": 0.02}},
                {"name": "mini", "provider": "openai", "model": "gpt-4o-mini"},
                {"name": "claude", "provider": "anthropic", "model": "claude-3-5-haiku-20241022"}
            ]),
        );
        assert_eq!(
            names(&order(&r, "t", &health(), &shipped())),
            vec!["own", "mini", "claude", "big", "unknown"]
        );
        // The operator's table decides too: priced above gpt-4o, gpt-4o-mini sorts after it,
        // and the fine-tune it prices is no longer last.
        let mut prices = shipped();
        prices.overlay(
            Prices::parse(
                "operator.yaml",
                r#"
prices:
  - {provider: openai, model: gpt-4o-mini, input: "20", output: "20", source: s, date: 2025-09}
  - {provider: openai, model: my-finetune, input: "1", output: "1", source: s, date: 2025-09}
"#,
            )
            .unwrap(),
        );
        assert_eq!(
            names(&order(&r, "t", &health(), &prices)),
            vec!["own", "unknown", "claude", "big", "mini"]
        );
    }

    #[test]
    fn least_latency_measures_everyone_then_prefers_the_fastest() {
        let r = route(
            "least_latency",
            serde_json::json!([
                {"name": "a", "provider": "openai", "model": "m"},
                {"name": "b", "provider": "openai", "model": "m"},
                {"name": "c", "provider": "openai", "model": "m"}
            ]),
        );
        let h = health();
        let now = Instant::now();
        h.record(
            "t",
            "r",
            "a",
            Outcome::Success(Duration::from_millis(300)),
            now,
        );
        h.record(
            "t",
            "r",
            "c",
            Outcome::Success(Duration::from_millis(20)),
            now,
        );
        assert_eq!(names(&order(&r, "t", &h, &shipped())), vec!["b", "c", "a"]);
        h.record(
            "t",
            "r",
            "b",
            Outcome::Success(Duration::from_millis(90)),
            now,
        );
        assert_eq!(names(&order(&r, "t", &h, &shipped())), vec!["c", "b", "a"]);
        // Another tenant's measurements are its own.
        assert_eq!(names(&order(&r, "u", &h, &shipped())), vec!["a", "b", "c"]);
    }
}
