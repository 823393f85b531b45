use super::*;

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
struct Demo {
    #[serde(flatten)]
    server: ServerOptions,
    redis_url: String,
    workers: u32,
}

impl Default for Demo {
    fn default() -> Self {
        Self {
            server: ServerOptions::unauthenticated(0),
            redis_url: "redis://127.0.0.1:6379".into(),
            workers: 4,
        }
    }
}

impl Options for Demo {
    const SERVICE: &'static str = "demo";

    fn server(&self) -> &ServerOptions {
        &self.server
    }
    fn validate(&self) -> Vec<String> {
        let mut out = vec![];
        self.server.validate(&mut out);
        if self.workers == 0 {
            out.push("workers: must be at least 1".into());
        }
        out
    }
}

#[derive(Serialize, Default)]
struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<u32>,
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
fn layers_in_order_and_errors_name_the_key() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "demo.toml",
            "workers = 2\nredis_url = \"redis://file:1\"\nlisten = \"127.0.0.1:7000\"\n",
        )?;
        let file = jail.directory().join("demo.toml");

        let d: Demo = load(None, &Flags::default()).map_err(|e| e.to_string())?;
        assert_eq!(d.workers, 4);

        let d: Demo = load(Some(&file), &Flags::default()).map_err(|e| e.to_string())?;
        assert_eq!(d.workers, 2);
        assert_eq!(d.server.listen.port(), 7000);

        jail.set_env("BRIDLE_REDIS_URL", "redis://env:2");
        jail.set_env("BRIDLE_WORKERS", "5");
        jail.set_env("BRIDLE_DEMO_WORKERS", "9");
        jail.set_env("BRIDLE_ROUTER_WORKERS", "77");
        let d: Demo = load(Some(&file), &Flags::default()).map_err(|e| e.to_string())?;
        assert_eq!(d.redis_url, "redis://env:2", "env wins over the file");
        assert_eq!(
            d.workers, 9,
            "service env wins over shared env; other services' env is ignored"
        );
        let d: Demo = load(Some(&file), &Flags { workers: Some(11) }).map_err(|e| e.to_string())?;
        assert_eq!(d.workers, 11, "flags win over env");

        let err = load::<Demo>(Some(&file), &Flags { workers: Some(0) }).unwrap_err();
        assert!(
            err.to_string().contains("workers: must be at least 1"),
            "{err}"
        );

        jail.set_env("BRIDLE_DEMO_WORKERS", "many");
        let err = load::<Demo>(Some(&file), &Flags::default()).unwrap_err();
        assert!(err.to_string().contains("workers"), "{err}");
        assert!(
            err.to_string().contains("BRIDLE_DEMO_"),
            "names the source: {err}"
        );

        let err =
            load::<Demo>(Some(&jail.directory().join("nope.toml")), &Flags::default()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        Ok(())
    });
}
