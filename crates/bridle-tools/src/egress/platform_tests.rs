use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn platform(everyone: &[&str], acme: &[&str]) -> Platform {
    let tenants = BTreeMap::from([(
        "acme".to_string(),
        acme.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )]);
    let everyone: Vec<String> = everyone.iter().map(|s| s.to_string()).collect();
    Platform::new(false, &everyone, &tenants).unwrap()
}

#[test]
fn entries_parse_blocks_addresses_names_and_ports() {
    let e = |s: &str| Entry::parse(s).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let name = |s: &str| Host::Name(s.into());
    let lit = |s: &str| Host::Ip(ip(s));
    assert!(e("10.0.0.0/8").covers(&lit("10.9.8.7"), ip("10.9.8.7"), 1));
    assert!(!e("10.0.0.0/8").covers(&lit("11.0.0.1"), ip("11.0.0.1"), 1));
    assert!(e("10.1.2.3:6379").covers(&lit("10.1.2.3"), ip("10.1.2.3"), 6379));
    assert!(!e("10.1.2.3:6379").covers(&lit("10.1.2.3"), ip("10.1.2.3"), 6380));
    assert!(e("[fd00::1]:80").covers(&lit("fd00::1"), ip("fd00::1"), 80));
    assert!(e("fd00::/8").covers(&lit("fd12::1"), ip("fd12::1"), 80));
    assert!(e("db.internal:5432").covers(&name("db.internal"), ip("10.0.0.9"), 5432));
    assert!(!e("db.internal:5432").covers(&name("other.internal"), ip("10.0.0.9"), 5432));
    // Host bits of a block are dropped, as `ip route` would.
    assert!(e("10.1.2.3/16").covers(&lit("10.1.200.1"), ip("10.1.200.1"), 1));
    for bad in [
        "",
        "10.0.0.0/33",
        "10.1.2.3:0",
        "10.1.2.3:x",
        "bad_name",
        "[fd00::1",
    ] {
        assert!(Entry::parse(bad).is_err(), "{bad:?}");
    }
    let err = Platform::new(false, &["10.0.0.0/33".into()], &BTreeMap::new()).unwrap_err();
    assert!(
        err.starts_with("egress_private_allow: '10.0.0.0/33'"),
        "{err}"
    );
    let err = Platform::new(
        false,
        &[],
        &BTreeMap::from([("acme".into(), vec!["x:0".into()])]),
    )
    .unwrap_err();
    assert!(
        err.starts_with("egress_private_allow_tenants.acme: 'x:0'"),
        "{err}"
    );
}

#[test]
fn private_addresses_are_the_platforms_to_allow_per_tenant() {
    let p = platform(&["10.20.0.5:8080"], &["192.168.7.0/24"]);
    let host = Host::Name("svc.internal".into());
    // Public: any tenant.
    assert_eq!(
        p.admit("acme", &host, 443, vec![sa("93.184.215.14:443")]),
        Ok(vec![sa("93.184.215.14:443")])
    );
    // The tenant's own private block: acme only.
    let lan = vec![sa("192.168.7.9:443")];
    assert_eq!(p.admit("acme", &host, 443, lan.clone()), Ok(lan.clone()));
    assert_eq!(
        p.admit("globex", &host, 443, lan).unwrap_err(),
        "egress to svc.internal:443 (192.168.7.9) is not allowed for tenant globex: private address, not in the platform's allowlist"
    );
    // Everyone's entry, on its port only.
    let one = vec![sa("10.20.0.5:8080")];
    assert_eq!(
        p.admit("globex", &host, 8080, one),
        Ok(vec![sa("10.20.0.5:8080")])
    );
    assert!(
        p.admit("globex", &host, 8081, vec![sa("10.20.0.5:8081")])
            .is_err()
    );
    // Loopback, whoever asks, by whatever spelling (mapped IPv6 is IPv4).
    let lo = Host::parse("::ffff:127.0.0.1");
    assert_eq!(
        p.admit("acme", &lo, 80, vec![sa("[::ffff:127.0.0.1]:80")])
            .unwrap_err(),
        "egress to 127.0.0.1:80 is not allowed for tenant acme: private address, not in the platform's allowlist"
    );
    // Of a name's addresses, only the allowed ones are used.
    assert_eq!(
        p.admit(
            "globex",
            &host,
            443,
            vec![sa("127.0.0.1:443"), sa("93.184.215.14:443")]
        ),
        Ok(vec![sa("93.184.215.14:443")])
    );
    // egress_allow_private opens every private address, but nothing of the next test's.
    let open = Platform::new(true, &[], &BTreeMap::new()).unwrap();
    assert!(open.admit("x", &host, 80, vec![sa("10.0.0.1:80")]).is_ok());
}

#[test]
fn metadata_own_ports_and_platform_services_are_never_reached() {
    let mut p =
        Platform::new(true, &["0.0.0.0/0".into(), "::/0".into()], &BTreeMap::new()).unwrap();
    p.protect_service(
        "this platform's Redis (redis_url)",
        "redis://10.96.0.10:6379",
        6379,
    );
    p.protect_service(
        "this platform's secrets broker (secrets_url)",
        "http://secrets.bridle:50055",
        80,
    );
    p.protect_own_port(50053);
    let any = Host::Name("x.example".into());
    for (addr, what) in [
        ("169.254.169.254:80", "a cloud metadata endpoint"),
        ("[fd00:ec2::254]:80", "a cloud metadata endpoint"),
        ("[::ffff:169.254.169.254]:80", "a cloud metadata endpoint"),
        ("10.96.0.10:6379", "this platform's Redis (redis_url)"),
        ("127.0.0.1:50053", "this tools service's own port"),
        ("10.1.1.1:50053", "this tools service's own port"),
    ] {
        let err = p
            .admit("acme", &any, sa(addr).port(), vec![sa(addr)])
            .unwrap_err();
        assert!(
            err.ends_with(&format!("{what}, which tools may never reach")),
            "{addr}: {err}"
        );
    }
    // Refused by name before any lookup.
    for (host, port) in [("metadata.google.internal", 80), ("secrets.bridle", 50055)] {
        let err = p
            .admit("acme", &Host::parse(host), port, vec![])
            .unwrap_err();
        assert!(err.contains("which tools may never reach"), "{host}: {err}");
    }
    // Another port of the same hosts is only as private as any other address.
    assert!(
        p.admit("acme", &any, 6380, vec![sa("10.96.0.10:6380")])
            .is_ok()
    );
}

#[test]
fn apply_time_refuses_rules_naming_addresses_the_tenant_may_not_reach() {
    let p = platform(&[], &["10.0.0.5"]);
    let rule = |s: &str| EgressRule::parse(s).unwrap();
    assert_eq!(
        p.check_rule("acme", &rule("127.0.0.1:6379")).unwrap(),
        "egress to 127.0.0.1:6379 is not allowed for tenant acme: private address, not in the platform's allowlist"
    );
    assert!(p.check_rule("acme", &rule("localhost:*")).is_some());
    assert!(p.check_rule("acme", &rule("0x7f.1:80")).is_some());
    assert!(p.check_rule("acme", &rule("10.0.0.5:8080")).is_none());
    assert!(p.check_rule("globex", &rule("10.0.0.5:8080")).is_some());
    assert!(p.check_rule("acme", &rule("169.254.169.254")).is_some());
    assert!(
        p.check_rule("acme", &rule("metadata.google.internal"))
            .is_some()
    );
    // Names are checked where they resolve: at connect time.
    assert!(p.check_rule("acme", &rule("api.github.com")).is_none());
    assert!(p.check_rule("acme", &rule("*.internal:*")).is_none());
}
