//! Which OCI runtime a sandbox runs under: the one its Tool names (`runtime:`), else the
//! platform's default (`sandbox_runtime`), unless the platform binds the tenant to one
//! (`sandbox_runtime_tenants`), which then holds for every Tool of that tenant and refuses a
//! Tool that names another. The engine must have the runtime: a sandbox is never started under
//! a weaker one in its place (see [`super::Engine::require_runtime`]).

use std::collections::BTreeMap;

/// The key of `sandbox_runtime_tenants` that binds every tenant.
pub const EVERY_TENANT: &str = "*";

#[derive(Clone, Debug, Default)]
pub struct Runtimes {
    default: Option<String>,
    tenants: BTreeMap<String, String>,
}

impl Runtimes {
    pub fn new(default: Option<String>, tenants: BTreeMap<String, String>) -> Self {
        Self { default, tenants }
    }

    /// The runtime of a sandbox of `tenant` whose Tool asks for `asked`; the error (a Tool
    /// naming another runtime than its tenant is bound to) starts with the field, "runtime: ...".
    pub fn resolve(&self, tenant: &str, asked: Option<&str>) -> Result<Option<String>, String> {
        let forced = self
            .tenants
            .get(tenant)
            .or_else(|| self.tenants.get(EVERY_TENANT));
        match (forced, asked) {
            (Some(f), Some(a)) if a != f => Err(format!(
                "runtime: '{a}' is not allowed for tenant '{tenant}': the platform runs its sandboxes under '{f}' (the tools service's sandbox_runtime_tenants); name '{f}' or no runtime"
            )),
            (Some(f), _) => Ok(Some(f.clone())),
            (None, Some(a)) => Ok(Some(a.to_string())),
            (None, None) => Ok(self.default.clone()),
        }
    }

    /// Whether `sandbox_runtime` is set (then no sandbox runs under the engine's default).
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// Every runtime the options name, with the option that names it (checked against the
    /// engine at start).
    pub fn configured(&self) -> Vec<(String, &str)> {
        let mut out: Vec<(String, &str)> = self
            .default
            .iter()
            .map(|r| ("sandbox_runtime".to_string(), r.as_str()))
            .collect();
        out.extend(
            self.tenants
                .iter()
                .map(|(t, r)| (format!("sandbox_runtime_tenants.{t}"), r.as_str())),
        );
        out
    }
}

/// Runtimes that run a container's processes on the host's kernel, in the host's view of its
/// mounts: a filesystem mounted on the host below a sandbox's bind mount after the sandbox
/// started appears in it (rslave propagation), which warm sandboxes rely on to receive a run's
/// workspace. Any other runtime (gVisor's runsc serves files through its gofer, which holds the
/// folder it opened at start; Kata through a shared filesystem) gets its run's workspace
/// before it starts, so it has no warm pool.
pub fn shares_host_mounts(runtime: Option<&str>) -> bool {
    match runtime {
        None => true,
        Some(r) => matches!(r, "runc" | "crun" | "youki") || r.starts_with("io.containerd.runc."),
    }
}

/// gVisor's runtime (`runsc`, or a name registered for it that starts so).
pub fn is_gvisor(runtime: Option<&str>) -> bool {
    runtime.is_some_and(|r| r.starts_with("runsc") || r.starts_with("gvisor"))
}

/// Host threads gVisor's kernel (the Sentry, a Go program) needs besides the tool's processes:
/// the engine's pids limit counts them, and below about 40 the Sentry cannot start (its Go
/// runtime fails with "newosproc"). A sandbox under gVisor gets this much on top of the
/// Tool's `limits.pids`.
pub const GVISOR_PIDS_OVERHEAD: i64 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn runtimes(default: Option<&str>, tenants: &[(&str, &str)]) -> Runtimes {
        Runtimes::new(
            default.map(str::to_string),
            tenants
                .iter()
                .map(|(t, r)| (t.to_string(), r.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_tools_own_runtime_wins_over_the_default() {
        let r = runtimes(Some("runsc"), &[]);
        assert_eq!(r.resolve("acme", None).unwrap().as_deref(), Some("runsc"));
        assert_eq!(
            r.resolve("acme", Some("kata")).unwrap().as_deref(),
            Some("kata")
        );
        assert_eq!(runtimes(None, &[]).resolve("acme", None).unwrap(), None);
    }

    #[test]
    fn a_bound_tenant_gets_its_runtime_and_cannot_name_another() {
        let r = runtimes(None, &[("acme", "runsc")]);
        assert_eq!(r.resolve("acme", None).unwrap().as_deref(), Some("runsc"));
        assert_eq!(
            r.resolve("acme", Some("runsc")).unwrap().as_deref(),
            Some("runsc")
        );
        assert_eq!(
            r.resolve("acme", Some("runc")).unwrap_err(),
            "runtime: 'runc' is not allowed for tenant 'acme': the platform runs its sandboxes under 'runsc' (the tools service's sandbox_runtime_tenants); name 'runsc' or no runtime"
        );
        assert_eq!(
            r.resolve("other", Some("runc")).unwrap().as_deref(),
            Some("runc")
        );
    }

    #[test]
    fn a_star_binds_every_tenant_and_a_named_tenant_overrides_it() {
        let r = runtimes(None, &[("*", "runsc"), ("lab", "kata")]);
        assert_eq!(r.resolve("acme", None).unwrap().as_deref(), Some("runsc"));
        assert!(r.resolve("acme", Some("runc")).is_err());
        assert_eq!(r.resolve("lab", None).unwrap().as_deref(), Some("kata"));
    }

    #[test]
    fn only_runtimes_on_the_host_kernel_share_its_mounts() {
        for r in [
            None,
            Some("runc"),
            Some("crun"),
            Some("io.containerd.runc.v2"),
        ] {
            assert!(shares_host_mounts(r), "{r:?}");
        }
        for r in [Some("runsc"), Some("kata-qemu"), Some("sysbox-runc")] {
            assert!(!shares_host_mounts(r), "{r:?}");
        }
        assert!(is_gvisor(Some("runsc")) && is_gvisor(Some("runsc-kvm")));
        assert!(!is_gvisor(Some("runc")) && !is_gvisor(None));
    }
}
