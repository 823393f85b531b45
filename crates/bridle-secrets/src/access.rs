//! Who may ask for what: a tool scope only from the tools service, a provider scope only from
//! the router, EndRun only from the orchestrator, and nothing from anyone else.
//!
//! The caller is the authenticated service principal: the common name of its mTLS client
//! certificate when mTLS is configured, else (auth on) the holder of the internal token, named
//! by `x-bridle-service`. With neither, the broker can only take the `x-bridle-service`
//! header's word for it: a guard against mistakes, not an enforcement. Only mTLS or auth makes
//! it one.

pub use bridle_core::auth::Caller;
use bridle_proto::Scope;

use crate::Error;

/// What a scope asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tool,
    Provider,
}

/// Checks the scope is one the caller may resolve for, and says which kind it is.
pub fn check_resolve(caller: &Caller, scope: &Scope) -> Result<Kind, Error> {
    let kind = match (scope.tool.is_empty(), scope.provider.is_empty()) {
        (false, false) => {
            return Err(Error::Core(bridle_core::Error::InvalidArgument(
                "scope: names both a tool and a provider; a secret is resolved for one of them"
                    .into(),
            )));
        }
        (true, true) => {
            return Err(Error::WrongCaller(format!(
                "{} asked for secrets of agent '{}' without a tool or a provider: secrets are resolved only for a tool call (by the tools service) or a model call (by the router)",
                caller.describe(),
                scope.agent
            )));
        }
        (false, true) => Kind::Tool,
        (true, false) => Kind::Provider,
    };
    let (service, what) = match kind {
        Kind::Tool => ("tools", format!("tool '{}'", scope.tool)),
        Kind::Provider => ("router", format!("provider '{}'", scope.provider)),
    };
    if caller.is(service) {
        Ok(kind)
    } else {
        Err(Error::WrongCaller(format!(
            "{} may not resolve secrets for {what}: only the {service} service may",
            caller.describe()
        )))
    }
}

/// EndRun revokes a run's leases: the orchestrator's call.
pub fn check_end_run(caller: &Caller) -> Result<(), Error> {
    if caller.is("orchestrator") {
        Ok(())
    } else {
        Err(Error::WrongCaller(format!(
            "{} may not end runs: only the orchestrator may",
            caller.describe()
        )))
    }
}

/// OAuth grants are the tools service's: it keeps them and uses them for its MCP calls.
pub fn check_grants(caller: &Caller) -> Result<(), Error> {
    if caller.is("tools") {
        Ok(())
    } else {
        Err(Error::WrongCaller(format!(
            "{} may not read or write OAuth grants: only the tools service may",
            caller.describe()
        )))
    }
}

/// The scope in words, for PERMISSION_DENIED.
pub fn describe_scope(tenant: &str, scope: &Scope) -> String {
    let target = if scope.tool.is_empty() {
        format!("provider '{}'", scope.provider)
    } else {
        format!("tool '{}'", scope.tool)
    };
    format!("agent '{}' using {target} (tenant '{tenant}')", scope.agent)
}

/// A run id goes into a Redis key and a cache key: it must be a plain id.
pub fn check_run_id(run: &str) -> Result<(), Error> {
    let ok = run.len() <= 128
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Core(bridle_core::Error::InvalidArgument(
            "scope.run_id: must be letters, digits, '-' or '_' (at most 128)".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(tool: &str, provider: &str) -> Scope {
        Scope {
            tenant: "t".into(),
            agent: "a".into(),
            tool: tool.into(),
            provider: provider.into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_scope_has_one_service() {
        let tools = Caller::Service("tools".into());
        let router = Caller::Service("router".into());
        let orch = Caller::Service("orchestrator".into());
        assert_eq!(
            check_resolve(&tools, &scope("psql", "")).unwrap(),
            Kind::Tool
        );
        assert_eq!(
            check_resolve(&router, &scope("", "r/t")).unwrap(),
            Kind::Provider
        );
        let e = check_resolve(&router, &scope("psql", ""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "service 'router' may not resolve secrets for tool 'psql': only the tools service may"
        );
        assert!(check_resolve(&tools, &scope("", "r/t")).is_err());
        assert!(check_resolve(&orch, &scope("psql", "")).is_err());
        assert!(check_resolve(&orch, &scope("", "")).is_err());
        assert!(check_resolve(&Caller::Other("key".into()), &scope("psql", "")).is_err());
        assert!(check_resolve(&tools, &scope("psql", "r/t")).is_err());
        assert!(check_end_run(&orch).is_ok());
        assert!(check_end_run(&tools).is_err());
        assert!(check_resolve(&Caller::Unidentified, &scope("psql", "")).is_ok());
    }

    #[test]
    fn run_ids_are_plain() {
        assert!(check_run_id("run_01jabc-x").is_ok());
        assert!(check_run_id("a{b}").is_err());
        assert!(check_run_id(&"x".repeat(129)).is_err());
    }
}
