use super::*;

fn spec() -> SandboxSpec {
    SandboxSpec {
        image: "bridle-sandbox:python".into(),
        argv: vec!["python3".into(), "-c".into(), "print(1)".into()],
        env: vec![("TOKEN".into(), "s3cret-value".into())],
        workdir: None,
        limits: Limits::from_manifest(&ContainerLimits::default()).unwrap(),
        runtime: None,
        stdin: true,
        labels: BTreeMap::from([("dev.bridle.managed".into(), "true".into())]),
        mounts: vec![],
        privileged: false,
        cap_add: vec![],
    }
}

#[test]
fn every_hardening_field_is_set() {
    let b = build(&spec()).unwrap();
    let h = b.host_config.clone().unwrap();
    assert_eq!(h.network_mode.as_deref(), Some("none"));
    assert_eq!(b.network_disabled, Some(true));
    assert_eq!(h.readonly_rootfs, Some(true));
    let tmpfs = h.tmpfs.unwrap();
    let size = 64 * 1024 * 1024;
    assert_eq!(tmpfs["/tmp"], format!("rw,noexec,nosuid,nodev,size={size}"));
    let ws = &tmpfs["/workspace"];
    assert!(
        ws.contains(&format!("size={size}"))
            && ws.contains("uid=65534")
            && ws.contains("gid=65534"),
        "{ws}"
    );
    assert!(ws.contains("nosuid") && ws.contains("nodev"), "{ws}");
    assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(h.cap_add, None);
    assert_eq!(h.privileged, Some(false));
    assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_string()]));
    assert_eq!(b.user.as_deref(), Some("65534:65534"));
    assert_eq!(h.memory, Some(256 * 1024 * 1024));
    assert_eq!(h.memory_swap, h.memory);
    assert_eq!(h.nano_cpus, Some(1_000_000_000));
    assert_eq!(h.pids_limit, Some(128));
    let u = &h.ulimits.unwrap()[0];
    assert_eq!(
        (u.name.as_deref(), u.soft, u.hard),
        (Some("nofile"), Some(256), Some(256))
    );
    assert_eq!(h.init, Some(true));
    assert_eq!(h.runtime, None);
    assert_eq!(h.binds, None);
    assert_eq!(h.mounts, None);
    assert_eq!(h.auto_remove, Some(false));
    // argv is run as given: the program replaces the image's entrypoint, no shell.
    assert_eq!(b.entrypoint, Some(vec!["python3".to_string()]));
    assert_eq!(b.cmd, Some(vec!["-c".to_string(), "print(1)".to_string()]));
    assert_eq!(b.working_dir.as_deref(), Some("/workspace"));
    assert_eq!(b.env, Some(vec!["TOKEN=s3cret-value".to_string()]));
    assert_eq!(b.open_stdin, Some(true));
    assert_eq!(b.stdin_once, Some(true));
    assert_eq!(b.labels.unwrap()["dev.bridle.managed"], "true");
}

#[test]
fn cpus_and_runtime_come_from_the_spec() {
    let mut s = spec();
    s.limits = Limits::from_manifest(&ContainerLimits {
        cpus: 0.5,
        ..Default::default()
    })
    .unwrap();
    s.runtime = Some("runsc".into());
    s.stdin = false;
    let b = build(&s).unwrap();
    let h = b.host_config.unwrap();
    assert_eq!(h.nano_cpus, Some(500_000_000));
    assert_eq!(h.runtime.as_deref(), Some("runsc"));
    assert_eq!(b.open_stdin, Some(false));
}

#[test]
fn privileged_mode_is_refused() {
    let s = SandboxSpec {
        privileged: true,
        ..spec()
    };
    let e = build(&s).unwrap_err();
    assert!(e.0.contains("privileged"), "{e}");
}

#[test]
fn added_capabilities_are_refused() {
    let s = SandboxSpec {
        cap_add: vec!["NET_ADMIN".into()],
        ..spec()
    };
    let e = build(&s).unwrap_err();
    assert!(e.0.contains("NET_ADMIN"), "{e}");
}

#[test]
fn mounting_the_docker_socket_is_refused_in_every_spelling() {
    for src in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var//run/./docker.sock",
        "/var/run",
        "/run",
        "/",
        "/var",
        "/home/me/.docker/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/var/lib/docker",
        "relative/path",
        "/srv/../var/run/docker.sock",
    ] {
        let s = SandboxSpec {
            mounts: vec![BindMount {
                source: src.into(),
                target: "/x".into(),
                read_only: true,
                follows_host: false,
            }],
            ..spec()
        };
        assert!(build(&s).is_err(), "{src} was accepted");
    }
    let ok = SandboxSpec {
        mounts: vec![BindMount {
            source: "/srv/bridle/runs/r1".into(),
            target: "/workspace/in".into(),
            read_only: false,
            follows_host: true,
        }],
        ..spec()
    };
    let b = build(&ok).unwrap();
    let mounts = b.host_config.clone().unwrap().mounts.unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        mounts[0].bind_options.as_ref().unwrap().propagation,
        Some(MountBindOptionsPropagationEnum::RSLAVE),
        "host mounts reach the sandbox, never the other way"
    );
    let mut shared = b;
    shared
        .host_config
        .as_mut()
        .unwrap()
        .mounts
        .as_mut()
        .unwrap()[0]
        .bind_options = Some(MountBindOptions {
        propagation: Some(MountBindOptionsPropagationEnum::RSHARED),
        ..Default::default()
    });
    assert_eq!(
        verify(&shared).unwrap_err().0,
        "a shared mount would let the sandbox's mounts reach the host"
    );
}

#[test]
fn verify_catches_a_weakened_configuration() {
    let good = build(&spec()).unwrap();
    type Weaken = Box<dyn Fn(&mut HostConfig)>;
    let weaken: Vec<(&str, Weaken)> = vec![
        ("privileged", Box::new(|h| h.privileged = Some(true))),
        (
            "cap_add",
            Box::new(|h| h.cap_add = Some(vec!["SYS_ADMIN".into()])),
        ),
        ("cap_drop", Box::new(|h| h.cap_drop = None)),
        (
            "network",
            Box::new(|h| h.network_mode = Some("bridge".into())),
        ),
        ("rootfs", Box::new(|h| h.readonly_rootfs = Some(false))),
        ("nnp", Box::new(|h| h.security_opt = None)),
        ("swap", Box::new(|h| h.memory_swap = Some(-1))),
        ("pids", Box::new(|h| h.pids_limit = None)),
        ("init", Box::new(|h| h.init = None)),
        ("pid host", Box::new(|h| h.pid_mode = Some("host".into()))),
        (
            "bind",
            Box::new(|h| h.binds = Some(vec!["/var/run/docker.sock:/var/run/docker.sock".into()])),
        ),
        (
            "mount",
            Box::new(|h| {
                h.mounts = Some(vec![Mount {
                    source: Some("/run/docker.sock".into()),
                    target: Some("/d.sock".into()),
                    typ: Some(MountType::BIND),
                    ..Default::default()
                }])
            }),
        ),
    ];
    for (what, f) in weaken {
        let mut b = good.clone();
        f(b.host_config.as_mut().unwrap());
        assert!(verify(&b).is_err(), "{what}: weakened configuration passed");
    }
    let mut root = good.clone();
    root.user = Some("0:0".into());
    assert!(verify(&root).is_err());
    assert!(verify(&good).is_ok());
}

#[test]
fn debug_never_prints_env_values() {
    let text = format!("{:?}", spec());
    assert!(text.contains("TOKEN"));
    assert!(!text.contains("s3cret-value"), "{text}");
}

#[test]
fn limits_reject_bad_sizes() {
    let e = Limits::from_manifest(&ContainerLimits {
        memory: "lots".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.starts_with("limits.memory: "), "{e}");
}
