//! A loaded run being advanced: its state, the version it was loaded at, and the events of
//! the changes made since the last checkpoint.

use bridle_core::timeutil::now_ms;
use bridle_proto as pb;
use bridle_proto::run_event::Kind;

use crate::Error;
use crate::state::RunState;
use crate::store::{Loaded, RunStore};

pub struct Cursor {
    pub state: RunState,
    version: u64,
    pub offset: u64,
    events: Vec<pb::RunEvent>,
}

impl Cursor {
    pub fn new(l: Loaded) -> Self {
        Cursor {
            state: l.state,
            version: l.version,
            offset: l.offset,
            events: Vec::new(),
        }
    }

    pub fn event(&mut self, kind: Kind) {
        self.events.push(pb::RunEvent {
            run_id: String::new(),
            offset: 0,
            // Microsecond precision: step overhead is measured from these.
            time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            step: self.state.step,
            kind: Some(kind),
        });
    }

    /// Checkpoints the state and the pending events, fenced by the loaded version.
    pub async fn commit(&mut self, store: &RunStore) -> Result<(), Error> {
        self.state.updated_ms = now_ms();
        let (version, offset) = store
            .checkpoint(&self.state, self.version, &self.events)
            .await?;
        self.version = version;
        self.offset = offset;
        self.events.clear();
        Ok(())
    }
}
