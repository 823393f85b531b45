//! One call in a started sandbox: through its agent when it has one ([`super::agent`]), else
//! through its backend ([`super::backend::Backend::exec`]: `docker exec` for Docker). What a
//! call asks for and how it ended, whichever ran it, are the backend's types
//! ([`super::backend::ExecRequest`], [`super::backend::ExecOutcome`]).

use super::agent;
use super::backend::{ExecError, ExecOutcome, ExecRequest};
use super::container::Sandbox;

/// Runs `req` in `sandbox`: through its agent, else through its backend.
pub async fn exec(sandbox: &Sandbox, req: ExecRequest) -> Result<ExecOutcome, ExecError> {
    if let Some(link) = &sandbox.agent {
        let target = agent::Target {
            backend: &*sandbox.backend,
            id: &sandbox.id,
            short: &sandbox.short,
        };
        if let Some(done) = agent::call(link, target, &req).await {
            return done;
        }
    }
    sandbox.backend.exec(&sandbox.id, req).await
}
