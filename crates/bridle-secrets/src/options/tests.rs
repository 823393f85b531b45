use serde_json::json;

use super::*;

/// Loads `flags` over the defaults, with the internal token a keys-mode service needs (these
/// tests are about the other options).
fn load(mut flags: serde_json::Value) -> Result<Options, String> {
    if let Some(m) = flags.as_object_mut() {
        m.entry("internal_token")
            .or_insert(json!("a-token-of-enough-length"));
    }
    config::load::<Options>(None, &flags).map_err(|e| e.to_string())
}

#[test]
fn kubernetes_auth_takes_the_helm_chart_option_names() {
    // The chart sets BRIDLE_SECRETS_VAULT_AUTH, _VAULT_KUBERNETES_ROLE, _MOUNT and _TOKEN_FILE;
    // these are the keys those variables become.
    let o = load(json!({
        "vault_auth": "kubernetes",
        "vault_kubernetes_role": "bridle-secrets",
        "vault_kubernetes_mount": "k8s/prod",
        "vault_kubernetes_token_file": "/var/run/secrets/bridle/vault/token",
    }))
    .unwrap();
    assert_eq!(o.vault_auth, VaultAuth::Kubernetes);
    assert_eq!(o.vault_kubernetes_role, "bridle-secrets");
    assert_eq!(o.vault_kubernetes_mount, "k8s/prod");
    assert_eq!(
        o.vault_kubernetes_token_file,
        PathBuf::from("/var/run/secrets/bridle/vault/token")
    );

    let o = load(json!({"vault_auth": "kubernetes", "vault_kubernetes_role": "r"})).unwrap();
    assert_eq!(o.vault_kubernetes_mount, "kubernetes");
    assert_eq!(
        o.vault_kubernetes_token_file,
        PathBuf::from(DEFAULT_KUBERNETES_TOKEN_FILE)
    );

    let e = load(json!({"vault_auth": "kubernetes", "vault_kubernetes_mount": "/x/"})).unwrap_err();
    assert!(
        e.contains("vault_kubernetes_role: required with vault_auth = kubernetes"),
        "{e}"
    );
    assert!(
        e.contains("vault_kubernetes_mount: must be an auth mount path"),
        "{e}"
    );
}

#[test]
fn approle_needs_a_role_id_and_one_secret_id() {
    let o = load(json!({
        "vault_auth": "approle",
        "vault_approle_role_id": "rid",
        "vault_approle_secret_id_file": "/run/secret-id",
    }))
    .unwrap();
    assert_eq!(o.vault_auth, VaultAuth::Approle);
    assert_eq!(o.vault_approle_mount, "approle");

    let e = load(json!({"vault_auth": "approle"})).unwrap_err();
    assert!(e.contains("vault_approle_role_id: required"), "{e}");
    assert!(e.contains("vault_approle_secret_id: set it or"), "{e}");

    let e = load(json!({
        "vault_auth": "approle",
        "vault_approle_role_id": "rid",
        "vault_approle_secret_id": "sid",
        "vault_approle_secret_id_file": "/f",
    }))
    .unwrap_err();
    assert!(e.contains("not both"), "{e}");
    assert!(
        !e.contains("sid"),
        "a secret id must never appear in an error: {e}"
    );
}

#[test]
fn unbound_and_cache_options() {
    let base = json!({"vault_auth": "kubernetes", "vault_kubernetes_role": "r"});
    let o = load(base.clone()).unwrap();
    assert_eq!(o.unbound, Unbound::Deny, "production default");
    assert_eq!(o.cache_ttl, Duration::from_secs(60));

    let mut flags = base.clone();
    flags["unbound"] = json!("convention");
    flags["cache_ttl"] = json!("5s");
    let o = load(flags).unwrap();
    assert_eq!(o.unbound, Unbound::Convention);
    assert_eq!(o.cache_ttl, Duration::from_secs(5));

    let mut flags = base;
    flags["unbound"] = json!("allow");
    flags["vault_auth"] = json!("kubernetes");
    let e = load(flags).unwrap_err();
    assert!(e.contains("unbound"), "{e}");
    let e = load(json!({"vault_auth": "ldap"})).unwrap_err();
    assert!(e.contains("vault_auth"), "{e}");
}

#[test]
fn token_auth_needs_a_token() {
    if std::env::var_os("VAULT_TOKEN").is_some() || std::env::var_os("BAO_TOKEN").is_some() {
        return; // the environment supplies one
    }
    let e = load(json!({})).unwrap_err();
    assert!(e.contains("vault_token: not set"), "{e}");
    let o = load(json!({"vault_token": "t"})).unwrap();
    assert_eq!(o.vault_auth, VaultAuth::Token);
}

#[test]
fn grants_prefix_is_a_folder() {
    let with = |prefix: Option<&str>| {
        let mut f = json!({"vault_token": "t"});
        if let Some(p) = prefix {
            f["grants_prefix"] = json!(p);
        }
        load(f)
    };
    assert_eq!(with(None).unwrap().grants_prefix, "bridle-grants");
    assert_eq!(
        with(Some("teams/oauth")).unwrap().grants_prefix,
        "teams/oauth"
    );
    for bad in ["", "/x", "x/", "a/../b"] {
        let e = with(Some(bad)).unwrap_err();
        assert!(e.contains("grants_prefix"), "{bad}: {e}");
    }
}
