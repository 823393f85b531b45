//! The web inbox in a real browser: headless Chromium (Debian's `chromium`, driven over the
//! DevTools protocol) opens the approvals service's inbox, sees the parked call, approves it by
//! clicking, and the run resumes and finishes. A screenshot of the inbox is kept in
//! `tests/artifacts/inbox.png` (gitignored); its path is printed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use bridle_proto as pb;
use bridle_proto::run_event::Kind;
use bridle_testkit::mock_openai::Reply;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions};
use support::{Harness, follow, kind_name};

/// Arguments with markup in them: the page must show it as text, never run it.
const ARGS: &str =
    r#"{"dataset": "old-sales", "note": "<script>document.title='pwned'</script><b>bold?</b>"}"#;

fn chromium() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CHROME") {
        return Ok(PathBuf::from(p));
    }
    headless_chrome::browser::default_executable().map_err(|e| {
        anyhow::anyhow!("no Chromium found ({e}): run scripts/install-deps.sh or set CHROME")
    })
}

/// What the browser saw.
struct Seen {
    card: String,
    title: String,
    injected_scripts: usize,
    decided: String,
}

/// Opens the inbox, screenshots it, and approves `approval` by clicking (blocking: the
/// DevTools client is synchronous).
fn approve_in_browser(inbox: &str, approval: &str, shot: &Path) -> anyhow::Result<Seen> {
    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium()?))
            .headless(true)
            // Root in a container: Chromium's sandbox needs user namespaces it may not have.
            .sandbox(false)
            .window_size(Some((1280, 1000)))
            .idle_browser_timeout(Duration::from_secs(120))
            .build()?,
    )
    .context("starting chromium")?;
    let tab = browser.new_tab().context("opening a tab")?;
    tab.set_default_timeout(Duration::from_secs(30));
    tab.navigate_to(&format!("{inbox}/approvals?tenant=default"))
        .context("navigating to the inbox")?
        .wait_until_navigated()
        .context("loading the inbox")?;
    let card_sel = format!("article[data-approval=\"{approval}\"]");
    let card = tab
        .wait_for_element(&card_sel)
        .context("finding the approval on the page")?
        .get_inner_text()?;
    let injected_scripts = tab
        .find_elements(&format!("{card_sel} script"))
        .map(|v| v.len())
        .unwrap_or(0);
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .context("taking the screenshot")?;
    std::fs::create_dir_all(shot.parent().context("artifact folder")?)?;
    std::fs::write(shot, png)?;

    tab.wait_for_element(&format!("{card_sel} input[name=approver]"))?
        .click()?;
    tab.type_str("alice")?;
    tab.wait_for_element(&format!("{card_sel} input[name=reason]"))?
        .click()?;
    tab.type_str("checked in the browser")?;
    tab.wait_for_element(&format!("{card_sel} button.approve"))?
        .click()?;
    // The form posts and the browser lands on the approval's page, now decided.
    let decided = match tab.wait_for_element(".decided") {
        Ok(e) => e.get_inner_text()?,
        Err(e) => anyhow::bail!(
            "waiting for the decided approval's page: {e}; the browser is at {} showing:\n{}",
            tab.get_url(),
            tab.get_content().unwrap_or_default()
        ),
    };
    let title = tab.get_title()?;
    Ok(Seen {
        card,
        title,
        injected_scripts,
        decided,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approver_approves_in_the_browser_and_the_parked_run_finishes() {
    let h = Harness::start().await.unwrap();
    h.apply("test.yaml", &h.manifests_yaml()).await.unwrap();
    h.mock
        .enqueue(Reply::tool_calls(&[("call_del", "delete-dataset", ARGS)]));
    h.mock.enqueue(Reply::text("old-sales is deleted."));
    let run = h
        .orchestrator()
        .await
        .start_run(pb::StartRunRequest {
            agent: "analyst".into(),
            input: "Delete old-sales.".into(),
            idempotency_key: "inbox-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let run_id = run.run.unwrap().id;

    // The run parks on its approval.
    let approval = h.parked_approval(&run_id, Duration::from_secs(120)).await;

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/inbox.png");
    let (inbox, id, path) = (h.inbox_url(), approval.id.clone(), shot.clone());
    let seen = tokio::task::spawn_blocking(move || approve_in_browser(&inbox, &id, &path))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("browser: {e:#}\n{}", h.logs()));
    println!("inbox screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 0);

    for want in [
        "delete-dataset",
        "analyst",
        "old-sales",
        &run_id,
        "destructive",
    ] {
        assert!(
            seen.card.contains(want),
            "{want} not on the card: {}",
            seen.card
        );
    }
    // The markup in the arguments is shown as text and nothing of it ran.
    assert!(
        seen.card.contains("<script>document.title"),
        "{}",
        seen.card
    );
    assert_eq!(seen.injected_scripts, 0);
    assert_ne!(seen.title, "pwned");
    assert!(
        seen.decided.contains("by alice — checked in the browser"),
        "{}",
        seen.decided
    );

    let events = follow(&h, &run_id, Duration::from_secs(180), |_| async {})
        .await
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(kind_name).collect();
    let resolved = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::ApprovalResolved(r)) => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ApprovalResolved in {kinds:?}\n{}", h.logs()));
    assert_eq!(
        (resolved.outcome, resolved.decided_by.as_str()),
        (pb::ApprovalState::Approved as i32, "alice")
    );
    let tool = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::ToolFinished(t)) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the tool never ran: {kinds:?}\n{}", h.logs()));
    assert_eq!(tool.output.trim(), "deleted old-sales", "{tool:?}");
    let Some(Kind::RunFinished(fin)) = &events.last().unwrap().kind else {
        panic!("{kinds:?}")
    };
    assert_eq!(fin.status, pb::RunStatus::Succeeded as i32, "{fin:?}");
    assert_eq!(fin.output, "old-sales is deleted.");
}
