//! A batch: the rows and dead letters of a run of messages, and the offsets that become safe
//! to commit once all of them are stored.

use std::collections::BTreeMap;
use std::time::Instant;

use tripline_store::{GatewayRow, ProviderRow};

use crate::dlq::DeadLetter;
use crate::process::{Outcome, Source};

#[derive(Debug)]
pub struct Batch {
    pub gateway: Vec<GatewayRow>,
    pub provider: Vec<ProviderRow>,
    pub dead: Vec<DeadLetter>,
    /// Per (topic, partition): the offset to commit, i.e. one past the last message handled.
    pub next_offsets: BTreeMap<(String, i32), i64>,
    pub messages: usize,
    /// Messages per topic (counted per batch: a labelled counter per message costs too much).
    pub consumed: BTreeMap<String, u64>,
    pub duplicates: usize,
    pub started: Instant,
}

impl Batch {
    pub fn new() -> Self {
        Self {
            gateway: Vec::new(),
            provider: Vec::new(),
            dead: Vec::new(),
            next_offsets: BTreeMap::new(),
            messages: 0,
            consumed: BTreeMap::new(),
            duplicates: 0,
            started: Instant::now(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Rows plus dead letters: what a flush has to write.
    pub fn len(&self) -> usize {
        self.gateway.len() + self.provider.len() + self.dead.len()
    }

    pub fn add(&mut self, outcome: Outcome, source: Source<'_>) {
        if self.messages == 0 {
            self.started = Instant::now();
        }
        self.messages += 1;
        match outcome {
            Outcome::Gateway(row) => self.gateway.push(*row),
            Outcome::Provider(row) => self.provider.push(*row),
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Dead(letter) => self.dead.push(*letter),
        }
        match self.consumed.get_mut(source.topic) {
            Some(count) => *count += 1,
            None => {
                self.consumed.insert(source.topic.to_owned(), 1);
            }
        }
        let next = source.offset + 1;
        match self
            .next_offsets
            .get_mut(&(source.topic.to_owned(), source.partition))
        {
            Some(offset) => *offset = (*offset).max(next),
            None => {
                self.next_offsets
                    .insert((source.topic.to_owned(), source.partition), next);
            }
        }
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}
