//! A loaded run being advanced: its state, the version it was loaded at, and the events of
//! the changes made since the last checkpoint.

use bridle_core::Shutdown;
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
    /// Set for a worker's step: a checkpoint Redis refuses for lack of memory is tried again
    /// until it goes through or this shuts down (see `commit`).
    wait_for_memory: Option<Shutdown>,
}

impl Cursor {
    pub fn new(l: Loaded) -> Self {
        Cursor {
            state: l.state,
            version: l.version,
            offset: l.offset,
            events: Vec::new(),
            wait_for_memory: None,
        }
    }

    /// A cursor whose checkpoints wait out a Redis that is out of memory (a worker's; a gRPC
    /// call's fails at once with RESOURCE_EXHAUSTED instead).
    pub fn waiting_for_memory(mut self, stop: &Shutdown) -> Self {
        self.wait_for_memory = Some(stop.clone());
        self
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
    ///
    /// Redis out of memory refuses the checkpoint whole (the script's first write is refused,
    /// so nothing of it is written). A worker's cursor then keeps what the step did (the
    /// model's reply, a tool's result: work that is not repeated for free) and tries the same
    /// checkpoint again with back-off until memory is freed; still fenced by version, so a
    /// run changed meanwhile (a cancel) is reloaded as usual. It gives up only at shutdown,
    /// leaving the task pending for another process.
    pub async fn commit(&mut self, store: &RunStore) -> Result<(), Error> {
        let mut waits = 0u32;
        let (version, offset) = loop {
            self.state.updated_ms = now_ms();
            match store
                .checkpoint(&self.state, self.version, &self.events)
                .await
            {
                Err(e) if e.is_redis_out_of_memory() => {
                    let Some(stop) = self.wait_for_memory.as_ref().filter(|s| !s.is_triggered())
                    else {
                        return Err(e);
                    };
                    waits += 1;
                    if waits == 1 || waits.is_multiple_of(20) {
                        tracing::warn!(run = %self.state.id, waits, "checkpoint refused: {e}; holding the step's work and trying again");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(super::backoff(waits.min(5))) => {}
                        () = stop.triggered() => return Err(e),
                    }
                }
                other => break other?,
            }
        };
        self.version = version;
        self.offset = offset;
        self.events.clear();
        Ok(())
    }
}
