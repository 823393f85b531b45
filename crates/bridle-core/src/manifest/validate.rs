//! Checks every kind shares (names, tenants), then the kind's own. Each problem is (field
//! path, message).

use super::{Manifest, ParseOptions, Problems};
use crate::ids::{check_name, check_tool_name};

pub(super) fn check(m: &mut Manifest, opts: &ParseOptions<'_>, out: &mut Problems) {
    let meta = m.metadata_mut();
    if let Err(e) = check_name(&meta.name) {
        out.push(("metadata.name".into(), e));
    }
    match &meta.tenant {
        Some(t) => {
            if let Err(e) = check_name(t) {
                out.push(("metadata.tenant".into(), e));
            }
        }
        None => meta.tenant = Some(opts.default_tenant.to_string()),
    }
    match m {
        Manifest::Agent(a) => super::agent::validate(&a.spec, out),
        Manifest::Tool(t) => {
            if let Err(e) = check_tool_name(&t.metadata.name) {
                out.push(("metadata.name".into(), e));
            }
            super::tool::validate(&t.spec, out)
        }
        Manifest::ModelRoute(r) => super::route::validate(&mut r.spec, opts.base_dir, out),
        Manifest::Policy(p) => super::policy::validate(&p.spec, out),
        Manifest::SecretBinding(b) => super::binding::validate(&b.spec, out),
        Manifest::Budget(b) => super::budget::validate(&b.spec, out),
    }
}
