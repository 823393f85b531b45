//! The inbox's HTML, rendered on the server. Every value that came from a request, a manifest
//! or a model goes through [`esc`]: tool arguments are attacker-controlled. The pages carry no
//! script at all, and the Content-Security-Policy forbids any.

use bridle_core::timeutil::ms_from_ts;
use bridle_proto::{Approval, ApprovalState};

use super::session::Visitor;
use crate::cedar::input::risk_name;
use crate::record::{RunContext, fmt_ms, state_name};

/// `s` as HTML text or attribute value (always double-quoted).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// One approval with what approvers see beside it.
pub struct Item {
    pub approval: Approval,
    pub context: RunContext,
}

/// What the visitor may do on a page.
pub struct Rights {
    pub decide: bool,
    /// Auth is off: the approver types their name.
    pub name_field: bool,
}

pub const CSS: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1c2430}
header.top{background:#1c2430;color:#fff;padding:.7em 1.2em;display:flex;gap:1em;align-items:center}
header.top a{color:#fff}header.top .who{margin-left:auto}header.top form{display:inline}
main{max-width:980px;margin:1.2em auto;padding:0 1em}
nav.states a{margin-right:1em}
article.approval{background:#fff;border:1px solid #d7dbe2;border-radius:8px;padding:1em 1.2em;margin:1em 0}
article h2{margin:0 0 .3em;font-size:1.2em}.risk{font-size:.75em;padding:.1em .5em;border-radius:1em;background:#e8eaee}
.risk-destructive{background:#fde2e1;color:#9b1c1c}.risk-mutating{background:#fff1d6;color:#8a5300}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.6em 0}dt{color:#5b6575}dd{margin:0}
pre.args{background:#0f1720;color:#e6edf3;padding:.8em;border-radius:6px;overflow:auto;white-space:pre-wrap;word-break:break-all;max-height:24em}
form.decide{display:flex;flex-wrap:wrap;gap:.6em;align-items:end}form.decide label{display:flex;flex-direction:column;font-size:.85em;color:#5b6575}
input[type=text],input[type=password]{padding:.45em;border:1px solid #b9c0cc;border-radius:5px;min-width:16em}
button{padding:.5em 1.1em;border-radius:5px;border:0;font-weight:600;cursor:pointer}
button.approve{background:#1f7a3d;color:#fff}button.deny{background:#b42318;color:#fff}button.plain{background:#e8eaee}
.notice{padding:.6em 1em;border-radius:6px;background:#fff1d6}.error{background:#fde2e1}
.state{font-weight:600}.empty{color:#5b6575}";

fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map(|t| fmt_ms(ms_from_ts(t))).unwrap_or_default()
}

fn spent(c: &RunContext) -> String {
    let tokens = c
        .tokens_so_far
        .map_or_else(|| "unknown".to_string(), |t| t.to_string());
    let money = c.cost_nano_usd.map_or_else(
        || "unknown".to_string(),
        |n| format!("${:.6}", n as f64 / 1e9),
    );
    format!("{tokens} tokens · {money}")
}

fn pretty(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_string())
}

/// The page around `body`.
pub fn layout(title: &str, v: Option<&Visitor>, body: &str) -> String {
    let who = match v {
        Some(v) if v.logged_in => format!(
            "<span class=\"who\">{} · <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button class=\"plain\" type=\"submit\">Log out</button></form></span>",
            esc(&v.principal.name),
            esc(&v.csrf)
        ),
        Some(_) => "<span class=\"who\">auth is off: everyone may decide</span>".to_string(),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · Bridle approvals</title><link rel=\"stylesheet\" href=\"/inbox.css\"></head><body><header class=\"top\"><strong><a href=\"/approvals\">Bridle approvals</a></strong>{who}</header><main>{body}</main></body></html>\n",
        esc(title)
    )
}

fn card(item: &Item, v: &Visitor, rights: &Rights) -> String {
    let a = &item.approval;
    let risk = risk_name(a.risk);
    let state = ApprovalState::try_from(a.state).unwrap_or(ApprovalState::Unspecified);
    let mut out = format!(
        "<article class=\"approval state-{st}\" id=\"{id}\" data-approval=\"{id}\"><h2><a href=\"/approvals/{id}\">{tool}</a> <span class=\"risk risk-{risk}\">{risk}</span></h2><p class=\"why\">{why}</p><dl><dt>Agent</dt><dd class=\"agent\">{agent}</dd><dt>Tenant</dt><dd>{tenant}</dd><dt>Run</dt><dd>{run} · step {step} · call <code>{call}</code></dd><dt>Spent so far</dt><dd>{spent}</dd><dt>Requested</dt><dd>{created}</dd><dt>Expires</dt><dd>{expires}</dd><dt>Arguments sha256</dt><dd><code>{sha}</code></dd><dt>State</dt><dd class=\"state\">{st}</dd>",
        st = state_name(state),
        id = esc(&a.id),
        tool = esc(&a.tool),
        why = esc(&a.policy_reason),
        agent = esc(&a.agent),
        tenant = esc(&a.tenant),
        run = esc(&a.run_id),
        step = a.step,
        call = esc(&a.call_id),
        spent = spent(&item.context),
        created = time(a.created_at.as_ref()),
        expires = time(a.expires_at.as_ref()),
        sha = esc(&a.arguments_sha256),
    );
    // Separation of duties: who may decide, and the approvals counted so far.
    let mut rules = Vec::new();
    if a.approvals_required > 1 {
        rules.push(format!(
            "{} of {} approvals from distinct people{}",
            a.approved_by.len(),
            a.approvals_required,
            if a.approved_by.is_empty() {
                String::new()
            } else {
                format!(" (so far: {})", a.approved_by.join(", "))
            }
        ));
    }
    if !a.approver_groups.is_empty() {
        rules.push(format!("only groups {}", a.approver_groups.join(", ")));
    }
    if a.not_the_starter {
        rules.push("not by whoever started the run".into());
    }
    if !rules.is_empty() {
        out.push_str(&format!(
            "<dt>Approvers</dt><dd class=\"approvers\">{}</dd>",
            esc(&rules.join("; "))
        ));
    }
    if state != ApprovalState::Pending {
        out.push_str(&format!(
            "<dt>Decided</dt><dd class=\"decided\">{} by {} — {}</dd>",
            time(a.decided_at.as_ref()),
            esc(if a.decided_by.is_empty() {
                "nobody"
            } else {
                &a.decided_by
            }),
            esc(&a.reason)
        ));
    }
    out.push_str(&format!(
        "</dl><pre class=\"args\">{}</pre>",
        esc(&pretty(&a.arguments_json))
    ));
    if state == ApprovalState::Pending && rights.decide {
        let name = if rights.name_field {
            "<label>Your name<input type=\"text\" name=\"approver\" maxlength=\"256\" autocomplete=\"name\"></label>"
        } else {
            ""
        };
        out.push_str(&format!(
            "<form class=\"decide\" method=\"post\" action=\"/approvals/{id}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"sha\" value=\"{sha}\">{name}<label>Reason<input type=\"text\" name=\"reason\" maxlength=\"4096\"></label><button class=\"approve\" type=\"submit\" name=\"decision\" value=\"approve\">Approve</button><button class=\"deny\" type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            id = esc(&a.id),
            csrf = esc(&v.csrf),
            sha = esc(&a.arguments_sha256),
        ));
    }
    out.push_str("</article>");
    out
}

/// The approvals of `tenant` in `state`.
pub fn list(v: &Visitor, rights: &Rights, tenant: &str, state: &str, items: &[Item]) -> String {
    let tabs: String = ["pending", "approved", "denied", "expired"]
        .iter()
        .map(|s| {
            let label = if *s == state {
                format!("<strong>{s}</strong>")
            } else {
                s.to_string()
            };
            format!(
                "<a href=\"/approvals?tenant={}&amp;state={s}\">{label}</a>",
                esc(tenant)
            )
        })
        .collect();
    let tenant_picker = if v.principal.tenant.is_none() {
        format!(
            "<form method=\"get\" action=\"/approvals\"><label>Tenant <input type=\"text\" name=\"tenant\" value=\"{}\"></label> <button class=\"plain\" type=\"submit\">Show</button></form>",
            esc(tenant)
        )
    } else {
        String::new()
    };
    let body: String = if items.is_empty() {
        format!("<p class=\"empty\">No {} approvals.</p>", esc(state))
    } else {
        items.iter().map(|i| card(i, v, rights)).collect()
    };
    layout(
        &format!("{state} · {tenant}"),
        Some(v),
        &format!(
            "<h1>{} approvals of tenant {}</h1>{tenant_picker}<nav class=\"states\">{tabs}</nav>{body}",
            esc(state),
            esc(tenant)
        ),
    )
}

/// One approval, with an optional notice (a refused decision).
pub fn detail(v: &Visitor, rights: &Rights, item: &Item, notice: Option<&str>) -> String {
    let notice = notice
        .map(|n| format!("<p class=\"notice error\">{}</p>", esc(n)))
        .unwrap_or_default();
    layout(
        &item.approval.id,
        Some(v),
        &format!(
            "<p><a href=\"/approvals?tenant={}\">← all pending approvals</a></p>{notice}{}",
            esc(&item.approval.tenant),
            card(item, v, rights)
        ),
    )
}

pub fn login(csrf: &str, error: Option<&str>, oidc: bool) -> String {
    let error = error
        .map(|e| format!("<p class=\"notice error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let oidc = if oidc {
        "<p><a class=\"button approve\" href=\"/login/oidc\">Log in with your identity provider</a></p><p>Or:</p>"
    } else {
        ""
    };
    layout(
        "Log in",
        None,
        &format!(
            "<h1>Log in</h1>{error}{oidc}<p>Use a Bridle API key with the approver role (<code>bridle keys create --role approver</code>).</p><form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><label>API key <input type=\"password\" name=\"api_key\" autocomplete=\"off\" required></label> <button class=\"approve\" type=\"submit\">Log in</button></form>",
            esc(csrf)
        ),
    )
}

/// After an OIDC login: a link on (and a refresh to) the approvals, from this site.
pub fn logged_in(name: &str) -> String {
    layout(
        "Logged in",
        None,
        &format!(
            "<h1>Logged in</h1><p>Welcome, {}.</p><p><a href=\"/approvals\">Continue to the approvals</a></p>",
            esc(name)
        ),
    )
}

pub fn message(v: Option<&Visitor>, title: &str, text: &str) -> String {
    layout(
        title,
        v,
        &format!(
            "<h1>{}</h1><p class=\"notice error\">{}</p><p><a href=\"/approvals\">Back to the inbox</a></p>",
            esc(title),
            esc(text)
        ),
    )
}
