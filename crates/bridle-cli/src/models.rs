//! `bridle models`: the tenant's model routes, each target with its model, its price and where
//! the price comes from, as the router sees them (its price table, the operator's
//! `prices_file`, or the target's own `price`); targets without a known price are marked, since
//! their calls cost an unknown amount and a cost budget cannot use them.

use std::process::ExitCode;

use bridle_proto as pb;

use crate::conn::ConnArgs;
use crate::out;
use crate::output::Format;

/// What a target without a price shows in the price columns.
const UNPRICED: &str = "no known price";

/// `nano` nano-USD as exact dollars, at least two decimals: "$2.50", "$0.075".
pub fn usd(nano: i64) -> String {
    let sign = if nano < 0 { "-" } else { "" };
    let n = nano.unsigned_abs();
    let frac = format!("{:09}", n % 1_000_000_000);
    let frac = frac.trim_end_matches('0');
    format!("{sign}${}.{frac:0<2}", n / 1_000_000_000)
}

/// The lines that show `routes`: per route a header and a table of its targets, then which
/// targets have no known price.
pub fn render(routes: &[pb::ModelRouteInfo]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut unpriced = Vec::new();
    for r in routes {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        lines.push(format!(
            "route {} ({})",
            r.name,
            crate::words::strategy(r.strategy)
        ));
        let mut rows = vec![
            [
                "TARGET",
                "PROVIDER",
                "MODEL",
                "INPUT",
                "OUTPUT",
                "CACHE READ",
                "CACHE WRITE",
                "BREAKER",
                "SOURCE",
            ]
            .map(String::from),
        ];
        for t in &r.targets {
            let prices = match &t.price {
                Some(p) => [
                    usd(p.input_per_mtok_nano_usd),
                    usd(p.output_per_mtok_nano_usd),
                    usd(p.cache_read_per_mtok_nano_usd),
                    usd(p.cache_write_per_mtok_nano_usd),
                ],
                None => {
                    unpriced.push(format!("{}/{}", r.name, t.name));
                    [UNPRICED.into(), "-".into(), "-".into(), "-".into()]
                }
            };
            let [input, output, read, write] = prices;
            let source = t.price.as_ref().map_or("-", |p| p.source.as_str());
            rows.push([
                t.name.clone(),
                t.provider.clone(),
                if t.model.is_empty() {
                    "-".into()
                } else {
                    t.model.clone()
                },
                input,
                output,
                read,
                write,
                crate::words::breaker(t.breaker),
                source.into(),
            ]);
        }
        lines.extend(table(&rows).into_iter().map(|l| format!("  {l}")));
    }
    if !routes.is_empty() {
        lines.push(String::new());
        lines.push("Prices are US dollars per million tokens.".into());
    }
    if !unpriced.is_empty() {
        lines.push(format!(
            "No known price: {}. Their calls' cost is unknown, and an agent with a cost budget \
             cannot use their routes: declare `price` on the target, or add the model to the \
             router's prices_file.",
            unpriced.join(", ")
        ));
    }
    lines
}

/// Rows as left-aligned columns; the last column is not padded. Rows may differ in length.
pub fn table<R: AsRef<[String]>>(rows: &[R]) -> Vec<String> {
    let mut width: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            if width.len() <= i {
                width.push(0);
            }
            width[i] = width[i].max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let row = row.as_ref();
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = width[i]));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

pub async fn models(conn: &ConnArgs, format: Format) -> anyhow::Result<ExitCode> {
    let routes = crate::get::list_models(conn).await?;
    if format != Format::Table {
        let l = crate::get::model_listing(routes)?;
        crate::get::print(format, l, false, crate::kind::Kind::Model)?;
        return Ok(ExitCode::SUCCESS);
    }
    if routes.is_empty() {
        out::err("no model routes yet (apply a ModelRoute manifest)");
    }
    for l in render(&routes) {
        out::line(&l);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn dollars_are_exact() {
        assert_eq!(usd(2_500_000_000), "$2.50");
        assert_eq!(usd(75_000_000), "$0.075");
        assert_eq!(usd(15_000_000_000), "$15.00");
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(1), "$0.000000001");
        assert_eq!(usd(1_000_000_000_000_000), "$1000000.00");
    }

    #[test]
    fn unpriced_targets_are_marked_and_listed() {
        let priced = pb::ModelTarget {
            name: "main".into(),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            price: Some(pb::Price {
                input_per_mtok_nano_usd: 2_500_000_000,
                output_per_mtok_nano_usd: 10_000_000_000,
                cache_read_per_mtok_nano_usd: 1_250_000_000,
                cache_write_per_mtok_nano_usd: 0,
                source: "OpenAI".into(),
            }),
            breaker: pb::BreakerState::Closed as i32,
        };
        let unpriced = pb::ModelTarget {
            name: "tuned".into(),
            model: "my-finetune".into(),
            price: None,
            ..priced.clone()
        };
        let lines = render(&[pb::ModelRouteInfo {
            name: "chat".into(),
            tenant: "default".into(),
            strategy: pb::RouteStrategy::Fallback as i32,
            targets: vec![priced, unpriced],
        }]);
        assert_eq!(
            lines,
            [
                "route chat (fallback)",
                "  TARGET  PROVIDER  MODEL        INPUT           OUTPUT  CACHE READ  CACHE WRITE  BREAKER  SOURCE",
                "  main    openai    gpt-4o       $2.50           $10.00  $1.25       $0.00        closed   OpenAI",
                "  tuned   openai    my-finetune  no known price  -       -           -            closed   -",
                "",
                "Prices are US dollars per million tokens.",
                "No known price: chat/tuned. Their calls' cost is unknown, and an agent with a cost budget cannot use their routes: declare `price` on the target, or add the model to the router's prices_file.",
            ]
        );
        assert!(render(&[]).is_empty());
    }
}
