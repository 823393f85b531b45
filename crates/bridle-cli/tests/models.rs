//! `bridle models` against a real `bridle dev` whose router reads an operator's price file
//! (`prices_file`): every target of the tenant's routes with its model, its price and where the
//! price comes from, the file's entries over the shipped table's, and the targets without a
//! known price marked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dev_support;

use dev_support::Dev;

const PRICES: &str = r#"
prices:
  # A negotiated rate over the shipped list price.
  - provider: openai
    model: gpt-4o
    input: "2.00"
    cacheRead: "1.00"
    cacheWrite: "0"
    output: "8.00"
    source: our contract with OpenAI
    date: 2025-09-01
  # A model the shipped table does not know.
  - provider: openai
    model: acme-ft
    input: "0.30"
    output: "1.20"
    source: the fine-tune's hosting contract
    date: 2025-09
"#;

const ROUTE: &str = r#"
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: chat
spec:
  targets:
    - {name: main, provider: openai, model: gpt-4o, apiKey: "secret://openai-api-key"}
    - {name: mini, provider: openai, model: gpt-4o-mini, apiKey: "secret://openai-api-key"}
    - {name: tuned, provider: openai, model: acme-ft, apiKey: "secret://openai-api-key"}
    - name: own
      provider: openai
      model: other-ft
      apiKey: "secret://openai-api-key"
      price: {input: 0.5, output: 1.5}
    - {name: mystery, provider: openai, model: mystery-model, apiKey: "secret://openai-api-key"}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn models_shows_each_targets_price_and_its_source_and_marks_the_unpriced() {
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.yaml");
    std::fs::write(&prices, PRICES).unwrap();
    let route = dir.path().join("route.yaml");
    std::fs::write(&route, ROUTE).unwrap();
    let dev = Dev::start(&[("BRIDLE_ROUTER_PRICES_FILE", prices.display().to_string())]).await;

    let out = dev.cmd().arg("models").output().await.unwrap();
    assert!(out.status.success(), "{out:?}\n{}", dev.log());
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no model routes yet"),
        "{out:?}"
    );

    let out = dev
        .cmd()
        .args(["apply", "-f"])
        .arg(&route)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", dev.log());

    let out = dev.cmd().arg("models").output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}\n{}", dev.log());
    let shipped = "OpenAI API pricing, https://platform.openai.com/docs/pricing (standard tier), \
                   as published in 2025-06";
    let own = "the route's own price for this target (spec.targets[].price)";
    let want = [
        "route chat (fallback)".to_string(),
        "  TARGET   PROVIDER  MODEL          INPUT           OUTPUT  CACHE READ  CACHE WRITE  BREAKER  SOURCE".into(),
        "  main     openai    gpt-4o         $2.00           $8.00   $1.00       $0.00        closed   our contract with OpenAI, as published in 2025-09-01".into(),
        format!("  mini     openai    gpt-4o-mini    $0.15           $0.60   $0.075      $0.00        closed   {shipped}"),
        "  tuned    openai    acme-ft        $0.30           $1.20   $0.30       $0.30        closed   the fine-tune's hosting contract, as published in 2025-09".into(),
        format!("  own      openai    other-ft       $0.50           $1.50   $0.50       $0.50        closed   {own}"),
        "  mystery  openai    mystery-model  no known price  -       -           -            closed   -".into(),
        String::new(),
        "Prices are US dollars per million tokens.".into(),
        "No known price: chat/mystery. Their calls' cost is unknown, and an agent with a cost \
         budget cannot use their routes: declare `price` on the target, or add the model to the \
         router's prices_file."
            .into(),
    ];
    assert_eq!(stdout.lines().collect::<Vec<_>>(), want, "{stdout}");
}
