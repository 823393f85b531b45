use super::*;

const GOOD: &str = r#"
apiVersion: bridle.dev/v1
kind: Tool
metadata:
  name: python
spec:
  description: Runs Python code.
  risk: read_only
  parameters:
    type: object
    properties:
      code: {type: string}
    required: [code]
  container:
    image: bridle-sandbox:python
    command: ["python3", "-c", "{{code}}"]
---
apiVersion: bridle.dev/v1
kind: Agent
metadata:
  name: analyst
spec:
  route: quick
  tools: [python]
  budget:
    maxSteps: 4
---
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: quick
spec:
  targets:
    - provider: openai
      model: gpt-4o-mini
      apiKey: secret://openai-api-key
"#;

fn parse(text: &str) -> Result<Vec<Manifest>, ValidationErrors> {
    parse_all(&split_documents("m.yaml", text), &ParseOptions::default())
}

fn errors(text: &str) -> Vec<String> {
    parse(text)
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn good_set_parses_with_defaults() {
    let ms = parse(GOOD).unwrap();
    assert_eq!(ms.len(), 3);
    assert_eq!(ms[0].kind(), "Tool");
    assert_eq!(ms[0].tenant(), DEFAULT_TENANT);
    let Manifest::ModelRoute(r) = &ms[2] else {
        panic!()
    };
    assert_eq!(
        r.spec.targets[0].name, "openai",
        "target name defaults to the provider"
    );
    let Manifest::Tool(t) = &ms[0] else { panic!() };
    assert_eq!(t.spec.container.as_ref().unwrap().limits.memory, "256Mi");
}

#[test]
fn split_keeps_line_numbers() {
    let docs = split_documents("f.yaml", "a: 1\n---\nb: 2\n\n---\n# only a comment\n");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].first_line, 1);
    assert_eq!(docs[1].first_line, 3);
    assert_eq!(docs[1].source, "f.yaml#2");
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let e = errors(
        "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata:\n  name: a\nspec:\n  route: r\n  budget:\n    maxStep: 3\n",
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("m.yaml:8: Agent 'a': spec.budget.maxStep: unknown field `maxStep`, expected one of `maxSteps`"), "{}", e[0]);
}

/// Found by the manifest fuzzer: an unknown key of 340 non-ASCII characters was quoted whole,
/// twice (as the field and in serde's message).
#[test]
fn an_unknown_field_of_any_length_is_quoted_bounded() {
    let key = "\u{fffd}".repeat(340);
    let e = errors(&format!(
        "apiVersion: bridle.dev/v1\nkind: ModelRoute\nmetadata:\n  name: r\n{key}: 1\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].len() < 2048, "{} bytes: {}", e[0].len(), e[0]);
    assert!(e[0].contains("bytes in all)"), "{}", e[0]);
}

/// Found by the manifest fuzzer: a name that is not valid is quoted by the subject of every
/// error of its document, and by the name's own error: each of them bounded.
#[test]
fn a_long_invalid_name_is_quoted_bounded() {
    let name = "\u{fffd}A".repeat(600);
    let e = errors(&format!(
        "apiVersion: bridle.dev/v1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n  cedar: ''\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    for m in &e {
        assert!(m.len() < 2048, "{} bytes: {m}", m.len());
        assert!(m.contains("bytes in all)"), "{m}");
    }
}

#[test]
fn wrong_type_is_located() {
    let e = errors(
        "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata:\n  name: a\nspec:\n  route: r\n  budget:\n    maxSteps: many\n",
    );
    assert!(
        e[0].contains("m.yaml:8") && e[0].contains("spec.budget.maxSteps"),
        "{}",
        e[0]
    );
}

#[test]
fn semantic_errors_are_all_reported() {
    let e = errors(
        "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata:\n  name: Bad_Name\nspec:\n  route: r\n  tools: [a, a]\n  approval:\n    require: [b]\n  budget:\n    maxSteps: 0\n",
    );
    let all = e.join("\n");
    assert!(
        all.contains("m.yaml:4: Agent 'Bad_Name': metadata.name: 'Bad_Name' must start"),
        "{all}"
    );
    assert!(all.contains("spec.tools[1]: 'a' is listed twice"), "{all}");
    assert!(
        all.contains("spec.approval.require[0]: 'b' is not one of the agent's tools (a, a)"),
        "{all}"
    );
    assert!(
        all.contains("m.yaml:11: Agent 'Bad_Name': spec.budget.maxSteps: must be at least 1"),
        "{all}"
    );
}

#[test]
fn literal_keys_are_rejected() {
    let text = GOOD.replace(
        "secret://openai-api-key",
        "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("spec.targets[0].apiKey: holds what looks like an OpenAI API key"),
        "{}",
        e[0]
    );
    assert!(
        !e[0].contains("abcdefghij"),
        "the error must not repeat the key: {}",
        e[0]
    );

    let text = GOOD.replace("secret://openai-api-key", "hunter2hunter2");
    let e = errors(&text);
    assert!(
        e[0].contains("apiKey: is a credential field and must be a secret://<name> reference"),
        "{}",
        e[0]
    );
}

#[test]
fn env_credentials_must_be_references() {
    let text = GOOD.replace(
        "    command: [\"python3\", \"-c\", \"{{code}}\"]",
        "    command: [\"python3\", \"-c\", \"{{code}}\"]\n    env:\n      GITHUB_TOKEN: plain\n      OK_REF: secret://gh",
    )
    .replacen(
        "  risk: read_only\n",
        "  risk: read_only\n  allowSecretsWithModelCode: {reason: a test}\n",
        1,
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("spec.container.env.GITHUB_TOKEN"), "{}", e[0]);
}

#[test]
fn placeholders_must_be_parameters() {
    let text = GOOD.replace("{{code}}", "{{source}}");
    let e = errors(&text);
    assert!(e[0].contains("spec.container.command[2]: uses {{source}} but the parameters schema has no property 'source'"), "{}", e[0]);
}

#[test]
fn an_unknown_placeholder_is_quoted_within_bounds() {
    // Found by fuzzing: a placeholder name of any length was quoted whole, twice.
    let long = "g".repeat(5000);
    let text = GOOD.replace("{{code}}", &format!("{{{{{long}}}}}"));
    let e = errors(&text);
    assert!(
        e[0].contains("spec.container.command[2]: uses {{ggg"),
        "{}",
        e[0]
    );
    assert!(e[0].contains("(5000 bytes in all)"), "{}", e[0]);
    assert!(e[0].len() < 1024, "{} bytes: {}", e[0].len(), e[0]);
}

#[test]
fn bad_schema_is_rejected() {
    let text = GOOD.replace("code: {type: string}", "code: {type: strang}");
    let e = errors(&text);
    assert!(
        e[0].contains("spec.parameters: is not a valid JSON Schema"),
        "{}",
        e[0]
    );
}

#[test]
fn wrong_api_version_and_kind() {
    let e = errors("apiVersion: v2\nkind: Agent\n");
    assert!(
        e[0].contains("m.yaml:1: apiVersion: must be 'bridle.dev/v1', found 'v2'"),
        "{}",
        e[0]
    );
    let e = errors("apiVersion: bridle.dev/v1\nkind: Robot\n");
    assert!(
        e[0].contains("m.yaml:2: kind: 'Robot' is not a kind Bridle knows"),
        "{}",
        e[0]
    );
    let e = errors("apiVersion: bridle.dev/v1\nkind: [\n");
    assert!(e[0].contains("not valid YAML"), "{}", e[0]);
}

#[test]
fn a_long_api_version_or_kind_is_quoted_bounded() {
    // Found by the manifest fuzz target: both were quoted whole.
    let long = "x".repeat(5000);
    for text in [
        format!("apiVersion: {long}\nkind: Agent\n"),
        format!("apiVersion: bridle.dev/v1\nkind: {long}\n"),
    ] {
        let e = errors(&text);
        assert!(e[0].len() < 1000, "{} bytes: {}", e[0].len(), e[0]);
        assert!(e[0].contains("(5000 bytes in all)"), "{}", e[0]);
    }
}

#[test]
fn duplicates_in_a_set() {
    let text = format!("{GOOD}\n---\n{}", GOOD.split("---").next().unwrap());
    let e = errors(&text);
    assert!(
        e.iter()
            .any(|e| e.contains("defined twice (first in m.yaml#1)")),
        "{e:?}"
    );
}

#[test]
fn script_file_is_inlined_by_the_cli_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("turns.yaml"),
        "- toolCalls:\n    - name: python\n      arguments: {code: 'print(1)'}\n- text: done\n",
    )
    .unwrap();
    let text = "apiVersion: bridle.dev/v1\nkind: ModelRoute\nmetadata:\n  name: s\nspec:\n  targets:\n    - provider: scripted\n      scriptFile: turns.yaml\n";
    let docs = split_documents("r.yaml", text);
    let opts = ParseOptions {
        base_dir: Some(dir.path()),
        ..Default::default()
    };
    let ms = parse_all(&docs, &opts).unwrap();
    let Manifest::ModelRoute(r) = &ms[0] else {
        panic!()
    };
    assert_eq!(r.spec.targets[0].script.as_ref().unwrap().len(), 2);
    assert!(r.spec.targets[0].script_file.is_none());

    // The canonical YAML the CLI sends parses on the server, without a base dir.
    let canonical = Document {
        source: "r.yaml".into(),
        first_line: 0,
        yaml: ms[0].to_yaml(),
    };
    assert_eq!(
        parse_document(&canonical, &ParseOptions::default()).unwrap(),
        ms[0]
    );

    // A server never reads files.
    let e = parse_all(&docs, &ParseOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be read by `bridle apply`"), "{e}");
}

#[test]
fn json_round_trip() {
    for m in parse(GOOD).unwrap() {
        let back = from_json(m.kind(), &m.to_json().unwrap()).unwrap();
        assert_eq!(back, m);
    }
}

// --- issue 5: the Policy kind -------------------------------------------------------------

const POLICY: &str = "apiVersion: bridle.dev/v1\nkind: Policy\nmetadata:\n  name: guard\nspec:\n  description: no deletes\n  cedar: |\n    permit(principal, action, resource);\n    forbid(principal, action, resource)\n    when { resource.risk == \"destructive\" };\n";

#[test]
fn policy_shape_is_checked() {
    let ms = parse(POLICY).unwrap();
    let Manifest::Policy(p) = &ms[0] else {
        panic!("{ms:?}")
    };
    assert!(p.spec.cedar.starts_with("permit("));
    assert_eq!(ms[0].owner(), Owner::Approvals);

    let e = errors(&POLICY.replace("  cedar: |\n    permit(principal, action, resource);\n    forbid(principal, action, resource)\n    when { resource.risk == \"destructive\" };\n", "  cedar: \"  \"\n"));
    assert!(
        e.iter()
            .any(|e| e.contains(":7:")
                && e.contains("spec.cedar: must hold at least one Cedar policy")),
        "{e:?}"
    );
    let big = format!(
        "{}  cedar: |\n{}",
        POLICY.split("  cedar:").next().unwrap(),
        "    permit(principal, action, resource);\n".repeat(8000)
    );
    let e = errors(&big);
    assert!(e.iter().any(|e| e.contains("at most 262144")), "{e:?}");
    let e = errors(&POLICY.replace("  description:", "  descriptoin:"));
    assert!(e.iter().any(|e| e.contains("descriptoin")), "{e:?}");
}

#[test]
fn cedar_lines_map_to_the_file() {
    // The document starts at line 10 of its file; `cedar: |` is its line 7, so file line 16.
    assert_eq!(cedar_line(10, POLICY, 1), Some(17));
    assert_eq!(cedar_line(10, POLICY, 3), Some(19));
    // Folded blocks do not keep lines: the field's own line.
    assert_eq!(
        cedar_line(10, &POLICY.replace("cedar: |", "cedar: >"), 3),
        Some(16)
    );
    // Inline values start on the field's line.
    let inline = POLICY.replace(
        "cedar: |\n    permit(principal, action, resource);\n    forbid(principal, action, resource)\n    when { resource.risk == \"destructive\" };\n",
        "cedar: \"permit(principal, action, resource);\"\n",
    );
    assert_eq!(cedar_line(1, &inline, 1), Some(7));
    // Canonical YAML from the CLI has no file lines.
    assert_eq!(cedar_line(0, POLICY, 2), None);
}

// ---- issue 4: code, http and mcp tools, pools, egress allowlists ----

fn tool_doc(spec: &str) -> String {
    format!(
        "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: t\nspec:\n  description: A tool.\n{spec}"
    )
}

fn one_tool(spec: &str) -> Tool {
    match parse(&tool_doc(spec)).unwrap().remove(0) {
        Manifest::Tool(t) => t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn issue4_new_kinds_parse_with_defaults() {
    let t = one_tool(
        "  allowSecretsWithModelCode: {reason: the test reads the token}\n  parameters:\n    type: object\n    properties:\n      code: {type: string}\n  code:\n    language: python\n    pool: {warm: 2}\n    egress: [pypi.org, '*.pythonhosted.org:443', '127.0.0.1:8080']\n    secretFiles:\n      token: secret://gh\n",
    );
    assert_eq!(t.spec.kind(), "code");
    let c = t.spec.code.as_ref().unwrap();
    assert_eq!(c.image(), "bridle-sandbox:python");
    assert_eq!(c.argument, "code");
    assert_eq!(c.pool.warm, 2);
    assert_eq!(c.limits, ContainerLimits::default());

    let t = one_tool(
        "  parameters:\n    type: object\n    properties:\n      id: {type: string}\n  http:\n    url: https://api.example.com/items/{{id}}\n    bearer: secret://api-token\n    headers:\n      Accept: application/json\n",
    );
    let h = t.spec.http.as_ref().unwrap();
    assert_eq!(
        (h.method.as_str(), h.response_limit.as_str()),
        ("GET", "64Ki")
    );

    let t = one_tool(
        "  risk: read_only\n  mcp:\n    stdio:\n      image: bridle-sandbox:mcp\n      command: [mcp-server-time]\n",
    );
    assert_eq!(t.spec.kind(), "mcp");
    assert_eq!(t.spec.mcp.as_ref().unwrap().prefix("t"), "t");

    // Round trip of the canonical form keeps every new field.
    for m in parse(&tool_doc("  mcp:\n    url: http://127.0.0.1:9/mcp\n    prefix: web\n    include: [fetch]\n    riskOverrides: {fetch: read_only}\n")).unwrap() {
        assert_eq!(from_json(m.kind(), &m.to_json().unwrap()).unwrap(), m);
    }
}

#[test]
fn issue4_existing_container_tools_stay_valid() {
    let ms = parse(GOOD).unwrap();
    let Manifest::Tool(t) = &ms[0] else { panic!() };
    let c = t.spec.container.as_ref().unwrap();
    assert!(c.egress.is_empty() && c.pool.warm == 0 && c.secret_files.is_empty());
    assert!(
        !serde_json::to_string(t).unwrap().contains("pool"),
        "defaults are not written out"
    );
}

#[test]
fn issue4_bad_new_kinds_name_their_fields() {
    let all = errors(&tool_doc(
        "  code:\n    language: python\n    argument: src\n    pool: {warm: 999}\n    egress: ['https://x.com', 'a..b', 'h:0']\n    secretFiles:\n      tok: plain\n  http:\n    url: ftp://x\n",
    ))
    .join("\n");
    for want in [
        "spec: has code and http; a tool runs one way only",
        "spec.code.argument: 'src' must be a property of spec.parameters",
        "spec.code.pool.warm: must be at most 64",
        "spec.code.egress[0]: 'https://x.com' must be a host",
        "spec.code.egress[1]: 'a..b': '' is not a valid DNS label",
        "spec.code.egress[2]: 'h:0': '0' is not a port",
        "spec.code.secretFiles.tok: must be a secret://<name> reference",
        "spec.http.url: 'ftp://x' must be an http:// or https:// URL",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }

    let all = errors(&tool_doc(
        "  parameters:\n    type: object\n    properties:\n      host: {type: string}\n  http:\n    method: FETCH\n    url: https://{{host}}/x\n",
    ))
    .join("\n");
    assert!(
        all.contains("spec.http.method: 'FETCH' must be one of GET"),
        "{all}"
    );
    assert!(
        all.contains("spec.http.egress: the URL's host comes from the arguments"),
        "{all}"
    );

    let all = errors(&tool_doc(
        "  mcp:\n    local: time\n    url: http://x/mcp\n    prefix: Bad.Prefix\n",
    ))
    .join("\n");
    assert!(
        all.contains("spec.mcp: must name exactly one server"),
        "{all}"
    );
    assert!(all.contains("spec.mcp.prefix:"), "{all}");

    // A literal credential in a header is refused; `bearer` takes the reference.
    let all = errors(&tool_doc(
        "  http:\n    url: https://x.example/\n    headers:\n      Authorization: Bearer hunter2hunter2\n",
    ))
    .join("\n");
    assert!(
        all.contains("spec.http.headers.Authorization: is a credential field"),
        "{all}"
    );
}

#[test]
fn issue4_egress_rules_match_hosts_and_ports() {
    let r = |s: &str| EgressRule::parse(s).unwrap();
    assert!(r("api.github.com").allows("API.github.com", 443));
    assert!(r("api.github.com").allows("api.github.com.", 80));
    assert!(!r("api.github.com").allows("api.github.com", 8080));
    assert!(!r("api.github.com").allows("evil-api.github.com", 443));
    assert!(r("*.example.com").allows("a.b.example.com", 443));
    assert!(!r("*.example.com").allows("example.com", 443));
    assert!(!r("*.example.com").allows("badexample.com", 443));
    assert!(r("127.0.0.1:8080").allows("127.0.0.1", 8080));
    assert!(!r("127.0.0.1:8080").allows("127.0.0.2", 8080));
    assert!(r("[::1]:*").allows("[::1]", 1));
    // Every spelling of an address is that address, on either side (issue 29 item 3).
    for spelling in [
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "0x7f000001",
        "127.1",
        "[::ffff:127.0.0.1]",
        "127.0.0.1.",
    ] {
        assert!(r("127.0.0.1:80").allows(spelling, 80), "{spelling}");
        assert!(r(&format!("{}:80", spelling.trim_end_matches('.'))).allows("127.0.0.1", 80));
    }
    assert_eq!(
        Host::parse("0x7f.0.0.1"),
        Host::Ip("127.0.0.1".parse().unwrap())
    );
    assert_eq!(Host::parse("1.2.3"), Host::Ip("1.2.0.3".parse().unwrap()));
    assert_eq!(Host::parse("256.1.1.1"), Host::Name("256.1.1.1".into()));
    assert_eq!(Host::parse("08.1.1.1"), Host::Name("08.1.1.1".into()));
    assert_eq!(Host::parse("4294967296"), Host::Name("4294967296".into()));
    assert_eq!(
        Host::parse("Example.COM."),
        Host::Name("example.com".into())
    );
    assert_eq!(r("*.example.com:*").to_string(), "*.example.com:*");
    assert_eq!(r("[::1]:443").to_string(), "[::1]:443");
    assert_eq!(
        secret_tokens("token secret://a, secret://b-c;x"),
        vec!["secret://a", "secret://b-c"]
    );
}

// ---- issue 3: ModelRoute strategies, weights, prices, Azure, limits ----

const ISSUE3_ROUTE: &str = r#"
apiVersion: bridle.dev/v1
kind: ModelRoute
metadata:
  name: mixed
spec:
  strategy: weighted
  limits:
    perTenant: {rpm: 600, tpm: 100000}
    perAgent: {rpm: 60}
  targets:
    - name: claude
      provider: anthropic
      model: claude-sonnet-4-20250514
      apiKey: secret://anthropic-key
      weight: 3
      maxOutputTokens: 2048
    - name: azure
      provider: openai
      model: gpt-4o
      baseUrl: https://acme.openai.azure.com
      apiKey: secret://azure-key
      weight: 1
      azure: {deployment: prod-gpt4o}
      price: {input: 2.5, output: 10, cacheRead: 1.25}
"#;

#[test]
fn issue3_route_settings_parse_with_defaults_and_round_trip() {
    let ms = parse(ISSUE3_ROUTE).unwrap();
    let Manifest::ModelRoute(r) = &ms[0] else {
        panic!()
    };
    assert_eq!(r.spec.strategy, Strategy::Weighted);
    assert_eq!(r.spec.limits.per_tenant.unwrap().tpm, Some(100_000));
    assert_eq!(r.spec.limits.per_agent.unwrap().tpm, None);
    let (claude, azure) = (&r.spec.targets[0], &r.spec.targets[1]);
    assert_eq!(claude.provider, ProviderKind::Anthropic);
    assert_eq!(
        (claude.weight, claude.max_output_tokens),
        (Some(3), Some(2048))
    );
    let az = azure.azure.as_ref().unwrap();
    assert_eq!(
        (az.deployment.as_str(), az.api_version.as_str()),
        ("prod-gpt4o", DEFAULT_AZURE_API_VERSION)
    );
    // Dollars per million tokens become nano-dollars; unset cache prices are the input price.
    assert_eq!(
        azure.price.unwrap().nano_usd(),
        (2_500_000_000, 10_000_000_000, 1_250_000_000, 2_500_000_000)
    );
    for m in &ms {
        assert_eq!(&from_json(m.kind(), &m.to_json().unwrap()).unwrap(), m);
    }
    for (s, name) in [
        (Strategy::Fallback, "fallback"),
        (Strategy::Weighted, "weighted"),
        (Strategy::LeastLatency, "least_latency"),
        (Strategy::Cheapest, "cheapest"),
    ] {
        assert_eq!(s.as_str(), name);
        let text = ISSUE3_ROUTE
            .replace("strategy: weighted", &format!("strategy: {name}"))
            .replace("      weight: 3\n", "")
            .replace("      weight: 1\n", "");
        assert!(parse(&text).is_ok(), "{name}");
    }
}

#[test]
fn issue3_bad_route_settings_are_each_named() {
    let text = ISSUE3_ROUTE
        .replace("strategy: weighted", "strategy: fastest")
        .replace("perAgent: {rpm: 60}", "perAgent: {rpm: 0}");
    let e = errors(&text).join("\n");
    assert!(
        e.contains("spec.strategy: unknown variant `fastest`, expected one of `fallback`, `weighted`, `least_latency`, `cheapest`"),
        "{e}"
    );

    let text = ISSUE3_ROUTE
        .replace("perAgent: {rpm: 60}", "perAgent: {rpm: 0}")
        .replace("perTenant: {rpm: 600, tpm: 100000}", "perTenant: {}")
        .replace(
            "azure: {deployment: prod-gpt4o}",
            "azure: {deployment: \"a/b\", apiVersion: \"\"}",
        )
        .replace("input: 2.5", "input: -1")
        .replace("maxOutputTokens: 2048", "maxOutputTokens: 0")
        .replace("      baseUrl: https://acme.openai.azure.com\n", "");
    let e = errors(&text).join("\n");
    for want in [
        "spec.limits.perTenant: set rpm, tpm or both",
        "spec.limits.perAgent.rpm: must be at least 1",
        "spec.targets[1].azure.deployment: 'a/b' is not a deployment name",
        "spec.targets[1].azure.apiVersion: '' is not an API version",
        "spec.targets[1].baseUrl: is required with azure",
        "spec.targets[1].price.input: -1 is not a price in dollars per million tokens",
        "spec.targets[0].maxOutputTokens: must be at least 1",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }

    // Weights belong to the weighted strategy, and one of them must be above zero.
    let e = errors(&ISSUE3_ROUTE.replace("strategy: weighted", "strategy: cheapest")).join("\n");
    assert!(
        e.contains(
            "spec.targets[0].weight: is only used by strategy weighted (this route's is cheapest)"
        ),
        "{e}"
    );
    let e = errors(
        &ISSUE3_ROUTE
            .replace("weight: 3", "weight: 0")
            .replace("weight: 1", "weight: 0"),
    )
    .join("\n");
    assert!(
        e.contains("at least one target with a weight above 0"),
        "{e}"
    );

    // Anthropic needs a model; Azure settings belong to openai targets.
    let e = errors(&ISSUE3_ROUTE.replace(
        "      model: claude-sonnet-4-20250514\n",
        "      azure: {deployment: x}\n",
    ))
    .join("\n");
    assert!(
        e.contains("spec.targets[0].model: is required for provider anthropic"),
        "{e}"
    );
    assert!(
        e.contains("spec.targets[0].azure: only provider openai takes Azure settings"),
        "{e}"
    );

    // The Responses API is an openai target's, and not with Azure.
    let e = errors(&ISSUE3_ROUTE.replace(
        "      model: claude-sonnet-4-20250514\n",
        "      model: claude-sonnet-4-20250514\n      api: responses\n",
    ))
    .join("\n");
    assert!(
        e.contains("spec.targets[0].api: only provider openai takes an api"),
        "{e}"
    );
    let e = errors(&ISSUE3_ROUTE.replace(
        "      azure: {deployment: prod-gpt4o}\n",
        "      azure: {deployment: prod-gpt4o}\n      api: responses\n",
    ))
    .join("\n");
    assert!(
        e.contains("spec.targets[1].api: responses is not supported with azure"),
        "{e}"
    );
}

// ---- issue 6: SecretBinding (KV v2 and dynamic engines, grants) ----

const ISSUE6_BINDINGS: &str = r#"
apiVersion: bridle.dev/v1
kind: SecretBinding
metadata: {name: openai-api-key, tenant: acme}
spec:
  path: bridle/openai
  grants:
    - {provider: main/openai}
---
apiVersion: bridle.dev/v1
kind: SecretBinding
metadata: {name: web-cert}
spec:
  engine: dynamic
  path: pki/issue/web
  method: POST
  body: {common_name: web.example.com, ttl: 1h}
  key: certificate
  grants:
    - {agent: analyst, tool: deploy}
"#;

fn binding(m: &Manifest) -> &SecretBindingSpec {
    match m {
        Manifest::SecretBinding(b) => &b.spec,
        other => panic!("not a binding: {other:?}"),
    }
}

#[test]
fn issue6_bindings_parse_with_defaults_and_round_trip() {
    let ms = parse(ISSUE6_BINDINGS).unwrap();
    let kv = binding(&ms[0]);
    assert_eq!(kv.engine, Engine::Kv2);
    assert_eq!(kv.key, "value");
    assert_eq!(kv.grants[0].agent, "*");
    assert!(kv.grants_to("any-agent", "", "main/openai"));
    assert!(!kv.grants_to("any-agent", "", "main/anthropic"));
    assert!(
        !kv.grants_to("any-agent", "openai", ""),
        "a tool is not a provider"
    );
    // The default engine is not written out, so bindings stored before it existed compare equal.
    assert!(!ms[0].to_json().unwrap().contains("engine"));

    let dy = binding(&ms[1]);
    assert_eq!(dy.engine, Engine::Dynamic);
    assert_eq!(dy.method, Some(DynamicMethod::Post));
    assert_eq!(dy.body["common_name"], "web.example.com");
    assert!(dy.grants_to("analyst", "deploy", ""));
    assert!(!dy.grants_to("other", "deploy", ""));
    assert!(
        !dy.grants_to("analyst", "deploy", "main/openai"),
        "scope with both"
    );
    for m in &ms {
        let back = from_json(m.kind(), &m.to_json().unwrap()).unwrap();
        assert_eq!(&back, m);
    }
}

#[test]
fn issue6_bad_bindings_name_their_fields() {
    let bad = r#"
apiVersion: bridle.dev/v1
kind: SecretBinding
metadata: {name: a}
spec:
  path: ../etc
  key: ""
  mount: a/b
  method: GET
  body: {x: 1}
  grants:
    - {tool: "has space", agent: "Bad"}
    - {provider: justroute}
    - {tool: t, provider: r/t}
---
apiVersion: bridle.dev/v1
kind: SecretBinding
metadata: {name: b}
spec:
  engine: dynamic
  path: sys/leases/lookup
  mount: secret
  body: {x: 1}
---
apiVersion: bridle.dev/v1
kind: SecretBinding
metadata: {name: c}
spec:
  engine: dynamic
  path: database
  grants: [{tool: t}]
"#;
    let e = errors(bad).join("\n");
    for want in [
        "SecretBinding 'a': spec.path: must be a relative path",
        "SecretBinding 'a': spec.key: must name the field",
        "SecretBinding 'a': spec.mount: must be a single path segment",
        "SecretBinding 'a': spec.method: only dynamic bindings",
        "SecretBinding 'a': spec.body: only dynamic bindings",
        "SecretBinding 'a': spec.grants[0].tool:",
        "SecretBinding 'a': spec.grants[0].agent:",
        "SecretBinding 'a': spec.grants[1].provider: 'justroute' is not \"route/target\"",
        "SecretBinding 'a': spec.grants[2]: must name exactly one of tool",
        "SecretBinding 'b': spec.mount: a dynamic binding's path is the whole API path",
        "SecretBinding 'b': spec.path: 'sys/' is not a secrets engine",
        "SecretBinding 'b': spec.body: is sent only with method: POST",
        "SecretBinding 'b': spec.grants: must grant the secret",
        "SecretBinding 'c': spec.path: must be the engine's mount and the path under it",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let e = errors(&ISSUE6_BINDINGS.replace("engine: dynamic", "engine: database")).join("\n");
    assert!(e.contains("spec.engine: unknown variant `database`"), "{e}");
    // A literal credential in a dynamic body is refused like anywhere else.
    let e = errors(&ISSUE6_BINDINGS.replace("ttl: 1h", "password: hunter2-literal")).join("\n");
    assert!(
        e.contains("spec.body.password: is a credential field"),
        "{e}"
    );
}

#[test]
fn a_first_line_near_the_top_of_u32_gives_no_line_instead_of_overflowing() {
    for yaml in [
        // A YAML error (line from the parser) and a field error (line from `locate`).
        "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata: {name: a\n",
        "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata:\n  name: a\nspec:\n  route: r\n  budget:\n    maxStep: 3\n",
    ] {
        for first_line in [u32::MAX, u32::MAX - 1, u32::MAX - 3] {
            let doc = Document {
                source: "big.yaml".into(),
                first_line,
                yaml: yaml.into(),
            };
            let errs = parse_document(&doc, &ParseOptions::default()).unwrap_err();
            for e in errs {
                assert!(e.line.is_none_or(|l| l >= first_line), "{e}");
            }
        }
    }
    let policy = "apiVersion: bridle.dev/v1\nkind: Policy\nmetadata:\n  name: p\nspec:\n  cedar: |\n    permit(principal, action, resource);\n";
    assert_eq!(cedar_line(u32::MAX - 2, policy, 9), None);
    assert_eq!(cedar_line(10, policy, 1), Some(16));
}

#[test]
fn deep_yaml_is_an_error_that_names_the_limit_not_a_crash() {
    let deep = format!(
        "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata: {{name: t}}\nspec:\n  parameters: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let errs = errors(&deep);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("nest"), "{}", errs[0]);
}

#[test]
fn an_integer_too_large_says_so_in_plain_words() {
    let errs = errors(
        "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  route: r\n  budget:\n    maxSteps: 99999999999999999999999999\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(!errs[0].contains("u128"), "{}", errs[0]);
    assert!(!errs[0].contains("expected any YAML value"), "{}", errs[0]);
    assert!(errs[0].contains("too large"), "{}", errs[0]);
}

// ---- issue 16 item 2: workspace quotas ----

#[test]
fn workspace_quotas_parse_on_tools_and_agents_and_bad_ones_are_located() {
    let text = GOOD
        .replace(
            "    command: [\"python3\", \"-c\", \"{{code}}\"]\n",
            "    command: [\"python3\", \"-c\", \"{{code}}\"]\n    limits:\n      workspace: 64Mi\n",
        )
        .replace(
            "  budget:\n    maxSteps: 4\n",
            "  budget:\n    maxSteps: 4\n  workspace:\n    quota: 2Gi\n",
        );
    let ms = parse(&text).unwrap();
    let Manifest::Tool(t) = &ms[0] else { panic!() };
    assert_eq!(
        t.spec
            .container
            .as_ref()
            .unwrap()
            .limits
            .workspace
            .as_deref(),
        Some("64Mi")
    );
    let Manifest::Agent(a) = &ms[1] else { panic!() };
    assert_eq!(a.spec.workspace.quota_bytes(), Some(2 << 30));

    let bad = text.replace("64Mi", "10Ki").replace("2Gi", "lots");
    let all = errors(&bad).join("\n");
    assert!(
        all.contains("Tool 'python': spec.container.limits.workspace: '10Ki' is less than the smallest workspace quota, 1Mi"),
        "{all}"
    );
    assert!(
        all.contains("Agent 'analyst': spec.workspace.quota: 'lots' is not a size"),
        "{all}"
    );
}

#[test]
fn sizes_show_in_manifest_units() {
    assert_eq!(show_bytes(1 << 30), "1Gi");
    assert_eq!(show_bytes(1536 << 10), "1536Ki");
    assert_eq!(show_bytes(1000), "1000");
}

// ---- issue 27: secrets and model-written code ----

#[test]
fn secrets_on_a_tool_running_model_written_code_are_refused_unless_opted_in_with_a_reason() {
    let with_secret = GOOD.replace(
        "    command: [\"python3\", \"-c\", \"{{code}}\"]",
        "    command: [\"python3\", \"-c\", \"{{code}}\"]\n    env:\n      TOKEN: secret://gh\n    secretFiles:\n      key: secret://key",
    );
    let e = errors(&with_secret);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("spec.container.env.TOKEN: gives secret://gh to code the model writes"),
        "{}",
        e[0]
    );
    assert!(e[0].contains("python3 -c"), "{}", e[0]);
    assert!(
        e[0].contains("spec.allowSecretsWithModelCode.reason"),
        "{}",
        e[0]
    );
    assert!(e[1].contains("spec.container.secretFiles.key"), "{}", e[1]);

    let opted = with_secret.replacen(
        "  risk: read_only\n",
        "  risk: read_only\n  allowSecretsWithModelCode:\n    reason: reads its own API key on purpose\n",
        1,
    );
    assert!(parse(&opted).is_ok());
    let empty_reason = opted.replace("reads its own API key on purpose", "\"\"");
    let e = errors(&empty_reason);
    assert!(
        e[0].contains("spec.allowSecretsWithModelCode.reason: must say why"),
        "{e:?}"
    );

    // The same secret on a fixed program taking data is fine.
    let fixed = with_secret.replace(
        "[\"python3\", \"-c\", \"{{code}}\"]",
        "[\"python3\", \"/app/run.py\", \"{{code}}\"]",
    );
    assert!(parse(&fixed).is_ok(), "{:?}", parse(&fixed).err());
}

#[test]
fn max_use_time_is_for_static_secrets() {
    let doc = |engine: &str, max: &str| {
        format!(
            "apiVersion: bridle.dev/v1\nkind: SecretBinding\nmetadata: {{name: k}}\nspec:\n  engine: {engine}\n  path: a/b\n  maxUseTime: {max}\n  grants: [{{tool: t}}]\n"
        )
    };
    assert!(parse(&doc("kv2", "15m")).is_ok());
    let e = errors(&doc("dynamic", "15m"));
    assert!(
        e[0].contains("spec.maxUseTime: is for static (kv2) secrets"),
        "{e:?}"
    );
    let e = errors(&doc("kv2", "0s"));
    assert!(
        e[0].contains("spec.maxUseTime: must be more than zero"),
        "{e:?}"
    );
}

// ---- issue 27 item 2: credentials bound at the egress boundary ----

#[test]
fn issue27_credentials_name_one_allowed_host_a_header_and_a_reference() {
    let ok = parse(&tool_doc(
        "  parameters: {type: object, properties: {code: {type: string}}}\n  code:\n    language: python\n    egress: [api.github.com]\n    credentials:\n      - host: api.github.com\n        secret: secret://gh\n",
    ));
    assert!(ok.is_ok(), "{ok:?}");
    let all = errors(&tool_doc(
        "  parameters: {type: object, properties: {code: {type: string}}}\n  code:\n    language: python\n    egress: [api.github.com]\n    credentials:\n      - host: '*.github.com'\n        secret: secret://gh\n      - host: other.example\n        secret: secret://gh\n      - host: api.github.com\n        header: Host\n        format: Bearer\n        pathPrefix: repos\n        secret: hunter2\n",
    ))
    .join("\n");
    for want in [
        "spec.code.credentials[0].host: '*.github.com' must be an exact host name",
        "spec.code.credentials[1].host: 'other.example:443' is not in this tool's egress list",
        "spec.code.credentials[2].header: 'Host' is not a header the proxy may set",
        "spec.code.credentials[2].pathPrefix: must start with '/'",
        "spec.code.credentials[2].secret: is a credential field and must be a secret://<name> reference",
    ] {
        assert!(all.contains(want), "{want}\n{all}");
    }
    let all = errors(&tool_doc(
        "  parameters: {type: object, properties: {code: {type: string}}}\n  code:\n    language: python\n    egress: [api.github.com]\n    credentials:\n      - host: api.github.com\n        format: Bearer\n        secret: secret://gh\n",
    ))
    .join("\n");
    assert!(
        all.contains("spec.code.credentials[0].format: must hold '{}'"),
        "{all}"
    );
    let all = errors(&tool_doc(
        "  parameters: {type: object, properties: {code: {type: string}}}\n  code:\n    language: python\n    egress: [api.github.com]\n    credentials:\n      - host: api.github.com\n        header: X-Key\n        query: key\n        secret: secret://gh\n      - host: api.github.com\n        query: 'a b'\n        secret: secret://gh\n",
    ))
    .join("\n");
    assert!(all.contains("spec.code.credentials[0].query: the credential goes in a header or in the query, not both"), "{all}");
    assert!(
        all.contains("spec.code.credentials[1].query: 'a b' is not a query parameter name"),
        "{all}"
    );
    let c: CredentialBinding =
        crate::yaml::from_str("host: api.github.com\npathPrefix: /repos/\nsecret: secret://gh\n")
            .unwrap();
    assert!(c.applies("API.github.com.", 443, "/repos/x"));
    assert!(!c.applies("api.github.com", 443, "/user"));
    assert!(!c.applies("api.github.com", 8443, "/repos/x"));
    assert!(!c.applies("evil.com", 443, "/repos/x"));
    // (The first, model-written code with a bound credential, needed no opt-in: it never
    // holds the value.)
}

#[test]
fn mcp_oauth_is_for_url_servers_and_owns_the_authorization_header() {
    let all = errors(&tool_doc(
        "  mcp:\n    url: https://notes.example.com/mcp\n    bearer: secret://tok\n    oauth:\n      scopes: ['notes read', '']\n      clientId: ' '\n",
    ))
    .join("\n");
    for want in [
        "spec.mcp.oauth: and bearer both set the Authorization header",
        "spec.mcp.oauth.scopes[0]: 'notes read' is not a scope token",
        "spec.mcp.oauth.scopes[1]: '' is not a scope token",
        "spec.mcp.oauth.clientId: must be a non-empty client id",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    let all = errors(&tool_doc(
        "  mcp:\n    url: https://notes.example.com/mcp\n    headers:\n      authorization: secret://other\n    oauth: {}\n",
    ))
    .join("\n");
    assert!(
        all.contains("spec.mcp.oauth: and an Authorization header both set it"),
        "{all}"
    );
    let all = errors(&tool_doc("  mcp:\n    local: time\n    oauth: {}\n")).join("\n");
    assert!(
        all.contains("spec.mcp.oauth: is for 'url' servers only"),
        "{all}"
    );
    let t = one_tool(
        "  mcp:\n    url: https://notes.example.com/mcp\n    oauth: {scopes: [notes], clientId: bridle}\n",
    );
    let o = t.spec.mcp.unwrap().oauth.unwrap();
    assert_eq!(
        (o.scopes, o.client_id.as_deref()),
        (vec!["notes".to_string()], Some("bridle"))
    );
}

// ---- issue 24 item 6: errors at the field's line in every YAML style ----

/// The line of the one error of `text` (a file of one or more documents) that names `field`.
fn line_of_error(text: &str, field: &str) -> Option<u32> {
    let e = parse(text).unwrap_err();
    let found: Vec<&ManifestError> = e.0.iter().filter(|m| m.field == field).collect();
    assert_eq!(found.len(), 1, "{field}: {e}");
    found[0].line
}

#[test]
fn errors_point_at_the_field_in_flow_mappings() {
    // A semantic check (found after parsing), an unknown field (found by the parser) and a
    // literal credential, each in a flow mapping on its own line.
    let text = "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {route: r,\n  budget: {maxSteps: 0}}\n";
    assert_eq!(line_of_error(text, "spec.budget.maxSteps"), Some(5));
    let text = "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {route: r,\n  budget: {maxSteps: 2,\n    maxStep: 3}}\n";
    assert_eq!(line_of_error(text, "spec.budget.maxStep"), Some(6));
    let text = "apiVersion: bridle.dev/v1\nkind: ModelRoute\nmetadata: {name: r}\nspec:\n  targets: [{provider: openai, model: m},\n    {provider: openai, name: b, model: m, apiKey: hunter2hunter2}]\n";
    assert_eq!(line_of_error(text, "spec.targets[1].apiKey"), Some(6));
}

#[test]
fn errors_point_at_the_field_in_a_whole_document_written_as_one_flow_mapping() {
    let text = "{apiVersion: bridle.dev/v1, kind: Agent, metadata: {name: a},\n spec: {route: r, tools: [x,\n   x]}}\n";
    assert_eq!(line_of_error(text, "spec.tools[1]"), Some(3));
    // Nested flow mappings and lists on one line: the line is that line.
    let text = "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec: {route: r, approval: {require: [b]}, tools: [a]}\n";
    assert_eq!(line_of_error(text, "spec.approval.require[0]"), Some(4));
}

#[test]
fn errors_point_at_the_field_in_each_document_of_a_file() {
    let agent = |name: &str, steps: u32| {
        format!(
            "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata:\n  name: {name}\nspec:\n  route: r\n  budget:\n    maxSteps: {steps}\n"
        )
    };
    // Document 2 starts at line 10, document 3 (a flow mapping on the marker's line) at 18,
    // its maxSteps on line 19.
    let text = format!(
        "{}---\n{}--- {{apiVersion: bridle.dev/v1, kind: Agent, metadata: {{name: c}},\n  spec: {{route: r, budget: {{maxSteps: 0}}}}}}\n",
        agent("a", 1),
        agent("b", 0)
    );
    let e = parse(&text).unwrap_err();
    let lines: Vec<(String, Option<u32>)> =
        e.0.iter().map(|m| (m.source.clone(), m.line)).collect();
    assert_eq!(
        lines,
        vec![
            ("m.yaml#2".to_string(), Some(17)),
            ("m.yaml#3".to_string(), Some(19))
        ],
        "{e}"
    );
}

#[test]
fn errors_point_at_quoted_keys_and_through_anchors() {
    let text = "\"apiVersion\": bridle.dev/v1\n'kind': Agent\nmetadata:\n  \"name\": a\nspec:\n  'route': r\n  \"budget\":\n    'maxSteps': 0\n";
    assert_eq!(line_of_error(text, "spec.budget.maxSteps"), Some(8));
    // An alias is located where it is used.
    let text = "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata: {name: &n a}\nspec:\n  route: r\n  tools: [a]\n  approval:\n    require: [*n, b]\n";
    assert_eq!(line_of_error(text, "spec.approval.require[1]"), Some(8));
}

#[test]
fn a_key_written_twice_is_refused_with_its_line() {
    let text = "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata:\n  name: a\nspec:\n  route: r\n  budget: {maxSteps: 1, maxSteps: 2}\n";
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("m.yaml:7: not valid YAML: the key `maxSteps` is written twice"),
        "{}",
        e[0]
    );
}

#[test]
fn yaml_1_1_booleans_are_not_booleans() {
    let text = "apiVersion: bridle.dev/v1\nkind: Tool\nmetadata:\n  name: t\nspec:\n  description: d\n  container:\n    image: i\n    command: [x]\n    stdin: yes\n";
    let e = errors(text);
    assert!(
        e[0].starts_with(
            "m.yaml:10: Tool 't': spec.container.stdin: invalid type: `yes`, expected a boolean"
        ),
        "{}",
        e[0]
    );
}

#[test]
fn an_empty_list_says_how_to_write_one() {
    let e = errors(
        "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata:\n  name: a\nspec:\n  route: r\n  tools:\n",
    );
    assert!(
        e[0].starts_with(
            "m.yaml:7: Agent 'a': spec.tools: expected a list, found nothing (write []"
        ),
        "{}",
        e[0]
    );
}

#[test]
fn an_agents_sampling_controls_are_read_and_checked() {
    let agent = |model: &str| {
        format!(
            "apiVersion: bridle.dev/v1\nkind: Agent\nmetadata:\n  name: a\nspec:\n  route: r\n  model: {model}\n"
        )
    };
    let ok = parse(&agent(r#"{topP: 0.9, stop: ["END", "\n\n"], seed: -4}"#)).unwrap();
    let Manifest::Agent(a) = &ok[0] else {
        panic!("not an agent: {ok:?}")
    };
    assert_eq!(a.spec.model.top_p, Some(0.9));
    assert_eq!(
        a.spec.model.stop,
        vec!["END".to_string(), "\n\n".to_string()]
    );
    assert_eq!(a.spec.model.seed, Some(-4));

    let many = format!("{{stop: [{}]}}", vec!["\"x\""; 17].join(", "));
    let e = errors(&agent(&many)).join("\n");
    assert!(
        e.contains("spec.model.stop: at most 16 stop sequences, not 17"),
        "{e}"
    );
    let e = errors(&agent(r#"{topP: 0, stop: ["a", ""]}"#)).join("\n");
    assert!(
        e.contains("spec.model.topP: must be above 0 and at most 1, not 0"),
        "{e}"
    );
    assert!(
        e.contains("spec.model.stop[1]: a stop sequence is 1 to 1000 bytes"),
        "{e}"
    );

    // Reasoning: a known level, and a thinking budget the providers take.
    let ok = parse(&agent(
        r#"{reasoningEffort: high, thinkingBudgetTokens: 2048, maxOutputTokens: 8192, promptCache: true}"#,
    ))
    .unwrap();
    let Manifest::Agent(a) = &ok[0] else {
        panic!("not an agent: {ok:?}")
    };
    assert_eq!(a.spec.model.reasoning_effort.as_deref(), Some("high"));
    assert_eq!(a.spec.model.thinking_budget_tokens, Some(2048));
    assert!(a.spec.model.prompt_cache);
    let e = errors(&agent(
        r#"{reasoningEffort: extreme, thinkingBudgetTokens: 100}"#,
    ))
    .join("\n");
    assert!(
        e.contains("spec.model.reasoningEffort: 'extreme' is not one of none, minimal, low"),
        "{e}"
    );
    assert!(
        e.contains("spec.model.thinkingBudgetTokens: must be at least 1024, not 100"),
        "{e}"
    );
    let e = errors(&agent(
        r#"{thinkingBudgetTokens: 4096, maxOutputTokens: 4096}"#,
    ))
    .join("\n");
    assert!(
        e.contains("spec.model.thinkingBudgetTokens: must be below maxOutputTokens (4096)"),
        "{e}"
    );
}
