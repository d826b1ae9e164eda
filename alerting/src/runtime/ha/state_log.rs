//! The state topic's records: how the active instance stores its term's state
//! ([`StateLog`]), and how every instance applies what it reads of the state and silences
//! topics ([`View`]).
//!
//! Kept apart from the runner (who is active) and the shared reader (the task and the Kafka
//! plumbing) because this is the topics' format and rules: keys `state/<term>` and
//! `marker/…`, the highest term wins, earlier terms' keys are retired. It needs no Kafka to
//! test, as the tests below show.

use std::sync::Mutex;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::warn;

use crate::runtime::state::{State, StateError, STATE_VERSION};
use crate::silence::{Silence, SilenceStore};

const STATE_KEY_PREFIX: &str = "state/";
pub(super) const MARKER_KEY_PREFIX: &str = "marker/";

/// The active instance's state, written to the state topic in its term.
pub struct StateLog {
    pub(super) producer: FutureProducer,
    pub(super) topic: String,
    pub(super) term: u64,
    /// Keys of earlier terms' states and of markers, deleted once this term's first state is
    /// stored.
    pub(super) retire: Mutex<Vec<String>>,
}

impl StateLog {
    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Returns once every in-sync replica has the state.
    pub async fn save(&self, state: &State) -> Result<(), StateError> {
        let key = state_key(self.term);
        let payload = serde_json::to_vec(state).expect("state serializes");
        tripline_kafka::produce(
            &self.producer,
            FutureRecord::to(&self.topic).key(&key).payload(&payload),
        )
        .await
        .map_err(|err| StateError::Kafka {
            topic: self.topic.clone(),
            message: err.to_string(),
        })?;
        let retire = std::mem::take(&mut *self.retire.lock().unwrap_or_else(|e| e.into_inner()));
        for key in retire {
            let tombstone = FutureRecord::<str, [u8]>::to(&self.topic).key(&key);
            if let Err(err) = tripline_kafka::produce(&self.producer, tombstone).await {
                warn!(%key, %err, "an old state could not be deleted; compaction will not drop it");
            }
        }
        Ok(())
    }
}

fn state_key(term: u64) -> String {
    format!("{STATE_KEY_PREFIX}{term:020}")
}

/// What an instance has read of the state and silences topics.
#[derive(Default)]
pub struct View {
    /// The state of the highest term, its latest write.
    pub state: Option<State>,
    /// The highest term seen.
    pub term: u64,
    /// Every silence seen, in the state or its own topic.
    pub silences: SilenceStore,
    /// Bumped whenever `silences` changes.
    pub(super) silences_version: u64,
    /// The next offset of the state topic to read: everything before it has been applied.
    pub(super) read_up_to: i64,
    /// Keys of states and markers seen, with their term (a marker's is its offset): a new
    /// term deletes those of earlier ones.
    pub(super) keys: std::collections::BTreeMap<String, u64>,
}

/// One record of the state topic, decoded outside the view's lock.
pub(super) enum StateRecord {
    Marker,
    State(u64, Box<State>),
    Skip,
}

impl StateRecord {
    pub(super) fn decode(key: &str, payload: Option<&[u8]>) -> StateRecord {
        if key.starts_with(MARKER_KEY_PREFIX) {
            return StateRecord::Marker;
        }
        let (Some(term), Some(payload)) = (
            key.strip_prefix(STATE_KEY_PREFIX)
                .and_then(|t| t.parse::<u64>().ok()),
            payload,
        ) else {
            // A tombstone, or a key of no concern.
            return StateRecord::Skip;
        };
        match serde_json::from_slice::<State>(payload) {
            Ok(state) if state.version == STATE_VERSION => {
                StateRecord::State(term, Box::new(state))
            }
            Ok(state) => {
                warn!(
                    term,
                    version = state.version,
                    "a state of another version in the state topic; ignored"
                );
                StateRecord::Skip
            }
            Err(err) => {
                warn!(term, %err, "an unreadable state in the state topic; ignored");
                StateRecord::Skip
            }
        }
    }
}

impl View {
    /// Applies one record of the state topic, read at `offset`.
    pub(super) fn apply_state(&mut self, key: &str, record: StateRecord, offset: i64) {
        self.read_up_to = self.read_up_to.max(offset + 1);
        match record {
            StateRecord::Marker => {
                self.keys
                    .insert(key.to_owned(), u64::try_from(offset).unwrap_or_default());
            }
            StateRecord::State(term, _) if term < self.term => warn!(
                term,
                current = self.term,
                "a state from an earlier term: an instance that was cut off still writes; ignored"
            ),
            StateRecord::State(term, state) => {
                self.keys.insert(key.to_owned(), term);
                for silence in state.pipeline.silences.list() {
                    if self.silences.merge(silence.clone()) {
                        self.silences_version += 1;
                    }
                }
                self.term = term;
                self.state = Some(*state);
            }
            StateRecord::Skip => {}
        }
    }

    /// Applies one record of the silences topic.
    pub(super) fn apply_silence(&mut self, payload: Option<&[u8]>) {
        let silence = match payload.map(serde_json::from_slice::<Silence>) {
            Some(Ok(silence)) => silence,
            Some(Err(err)) => {
                warn!(%err, "an unreadable silence in the silences topic; ignored");
                return;
            }
            None => return,
        };
        if self.silences.merge(silence) {
            self.silences_version += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::test_support::alerting_config;
    use crate::pipeline::Pipeline;

    fn state(term: u64, saved_at_ms: i64, silences: SilenceStore) -> Vec<u8> {
        let config = alerting_config(
            "[[alerting.receivers]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n[alerting.route]\nreceiver = \"w\"\n",
        );
        let mut snapshot = Pipeline::from_config(&config).unwrap().snapshot();
        snapshot.silences = silences;
        serde_json::to_vec(&State {
            version: STATE_VERSION,
            term,
            saved_at_ms,
            pipeline: snapshot,
            outbox: Vec::new(),
            applied: Default::default(),
        })
        .unwrap()
    }

    fn silence(store: &mut SilenceStore, now: i64) -> Silence {
        store
            .create(
                crate::silence::NewSilence {
                    matchers: crate::matcher::parse_list(r#"{detector="spend_spike"}"#).unwrap(),
                    starts_at_ms: None,
                    ends_at_ms: now + 60_000,
                    created_by: "ops".into(),
                    comment: "deploy".into(),
                },
                now,
            )
            .unwrap()
            .clone()
    }

    fn apply(view: &mut View, key: &str, payload: Option<&[u8]>, offset: i64) {
        let record = StateRecord::decode(key, payload);
        view.apply_state(key, record, offset);
    }

    #[test]
    fn the_highest_term_wins_and_a_late_write_of_an_earlier_term_is_ignored() {
        let mut view = View::default();
        apply(&mut view, "marker/a/1", Some(b""), 0);
        apply(
            &mut view,
            &state_key(0),
            Some(&state(0, 10, SilenceStore::new())),
            1,
        );
        apply(
            &mut view,
            &state_key(0),
            Some(&state(0, 20, SilenceStore::new())),
            2,
        );
        assert_eq!(view.state.as_ref().map(|s| s.saved_at_ms), Some(20));
        apply(&mut view, "marker/b/1", Some(b""), 3);
        apply(
            &mut view,
            &state_key(3),
            Some(&state(3, 30, SilenceStore::new())),
            4,
        );
        apply(
            &mut view,
            &state_key(0),
            Some(&state(0, 40, SilenceStore::new())),
            5,
        );
        assert_eq!(
            (view.term, view.state.as_ref().map(|s| s.saved_at_ms)),
            (3, Some(30))
        );
        apply(&mut view, &state_key(3), Some(b"{not json"), 6);
        apply(&mut view, &state_key(0), None, 7);
        assert_eq!(view.state.as_ref().map(|s| s.saved_at_ms), Some(30));
        assert_eq!(view.read_up_to, 8);
        let keys: Vec<(&str, u64)> = view.keys.iter().map(|(k, t)| (k.as_str(), *t)).collect();
        assert_eq!(
            keys,
            [
                ("marker/a/1", 0),
                ("marker/b/1", 3),
                ("state/00000000000000000000", 0),
                ("state/00000000000000000003", 3)
            ]
        );
    }

    #[test]
    fn silences_arrive_from_their_topic_and_from_the_state() {
        let mut view = View::default();
        let mut elsewhere = SilenceStore::new();
        let first = silence(&mut elsewhere, 1_000);
        view.apply_silence(Some(&serde_json::to_vec(&first).unwrap()));
        assert_eq!(view.silences_version, 1);
        view.apply_silence(Some(b"nonsense"));
        view.apply_silence(Some(&serde_json::to_vec(&first).unwrap()));
        assert_eq!(view.silences_version, 1, "nothing new");
        let second = silence(&mut elsewhere, 2_000);
        apply(
            &mut view,
            &state_key(1),
            Some(&state(1, 5, elsewhere.clone())),
            0,
        );
        assert_eq!(view.silences_version, 2);
        let ids: Vec<&str> = view.silences.list().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&first.id.as_str()) && ids.contains(&second.id.as_str()));
    }
}
