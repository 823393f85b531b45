//! An ended run held by approvals that were still open when it ended: each time a task for
//! it comes (the approval listener queues one when an approval is resolved), the holds are
//! checked with the approvals service and the resolved ones dropped. The checkpoint that drops
//! the last one gives the run its retention (see `RunStore`).

use bridle_proto as pb;

use super::{Cursor, Engine, Outcome, retry};
use crate::Error;
use crate::clients::is_transient;

impl Engine {
    pub(super) async fn release_holds(&self, cur: &mut Cursor) -> Result<Outcome, Error> {
        if cur.state.held_by.is_empty() {
            return Ok(Outcome::Done);
        }
        let mut still_open = Vec::new();
        for id in cur.state.held_by.clone() {
            let r = self.approval(&id).await;
            match r {
                Ok(a) if a.state == pb::ApprovalState::Pending as i32 => still_open.push(id),
                Ok(_) => {}
                Err(st) if is_transient(st.code()) => {
                    return Ok(retry("approval lookup", &st));
                }
                // Gone (or never readable): it can no longer hold the run.
                Err(st) => {
                    tracing::info!(run = %cur.state.id, approval = %id, "approval unreadable ({}); no longer holding the run", st.message());
                }
            }
        }
        if still_open.len() != cur.state.held_by.len() {
            cur.state.held_by = still_open;
            cur.commit(&self.store).await?;
            if cur.state.held_by.is_empty() {
                tracing::info!(run = %cur.state.id, "ended run no longer held by an approval; its retention starts");
            }
        }
        Ok(Outcome::Done)
    }
}
