//! Alerting with standbys (`[alerting.ha]`), on Kafka alone.
//!
//! - **Who is active.** Every instance joins one consumer group on a one-partition
//!   coordination topic ([`Membership`]); the member Kafka assigns the partition to is active,
//!   the others stand by. When the active one is killed or cut off, Kafka hands the partition
//!   to a standby after `kafka.session_timeout_ms`.
//! - **The state** (alerts, groups, silences, pending notifications and their attempts, the
//!   alerts topic's applied offsets) is the state file's document, written by the active
//!   instance to a compacted topic instead of `state_dir`, under the key `state/<term>`, with
//!   the same rule: stored before the offsets are committed and before a notification's first
//!   attempt. Every instance reads the topic as it is written.
//! - **Taking over.** A standby given the partition writes a marker to the state topic and
//!   reads up to it: it then holds everything its predecessor stored. It takes the state of
//!   the highest term and starts a term of its own, numbered by its marker's offset, so every
//!   term is unique and later than all before it. Readers trust the highest term, so an
//!   instance that was cut off and still writes cannot overwrite its successor (Kafka's group
//!   protocol, not this, decides who sends: a cut-off instance stops when its session times
//!   out). Once its first state is stored, the older
//!   states and markers are deleted (tombstones: Kafka's compaction drops them). Pending
//!   notifications are attempted at once, with their `webhook-id`: an attempt the predecessor
//!   made but did not live to store is the one duplicate a receiver can see.
//! - **Silences** also go through a compacted topic of their own, keyed by silence id, merged
//!   by every instance (the later change wins). The API answers on every instance: a standby
//!   lists alerts from the last stored state, and creates and expires silences through the
//!   topic, so they apply on all.

use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tripline_kafka::membership::{Membership, Rebalanced};

use super::commands::{alert_views, silence_views};
use super::control::{Command, ControlError};
use super::deliver::Receivers;
use super::log::DeliveryLog;
use super::state::{State, StateStore};
use super::{now_ms, AlertService, AlertingError};
use crate::pipeline::Pipeline;

mod shared;
mod state_log;

pub(super) use shared::changed;
pub use shared::Shared;
pub use state_log::{StateLog, View};

/// How long a revocation waits for the active loop to stop (drain, last write, commit).
const REVOKE_WAIT: Duration = Duration::from_secs(20);

/// Runs this instance as a standby until Kafka makes it active, then as the active one until
/// the partition is taken back, and so on until `shutdown`.
pub(super) async fn run(
    service: &mut AlertService,
    commands: &mut mpsc::Receiver<Command>,
    log: &DeliveryLog,
    shutdown: CancellationToken,
) -> Result<(), AlertingError> {
    let ha = service.config.ha.clone();
    let instance = ha.instance.clone().unwrap_or_else(default_instance);
    let env = tripline_kafka::process_env;
    tripline_kafka::ensure_changelog_topics(
        &service.kafka,
        env,
        &[&ha.state_topic, &ha.silences_topic],
    )
    .await?;
    let producer: FutureProducer =
        tripline_kafka::producer_config(&service.kafka, env)?.create()?;
    let shared = Shared::start(&service.kafka, &ha, &instance, producer.clone(), &shutdown)?;
    let mut membership = Membership::join(
        &service.kafka,
        &ha.leader_topic,
        &ha.group_id,
        1,
        REVOKE_WAIT,
    )
    .await?;
    if membership.partitions != 1 {
        let partitions = membership.partitions;
        membership.leave().await;
        shared.stop().await;
        return Err(AlertingError::Standby(format!(
            "the leader topic {} has {partitions} partitions: it needs exactly one, or several \
             instances would be active at once",
            ha.leader_topic
        )));
    }
    // A standby is ready: it answers the API and can take over.
    service.health.set_running(true);
    service.health.state_written(true);
    // Whether the partition is this instance's already (handed back while a term was stopping).
    let mut holds = false;
    let result = loop {
        if !holds {
            info!(%instance, "alerting standing by");
            metrics::gauge!("tripline_alerting_active").set(0.0);
            let active = tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                active = stand_by(service, &shared, &mut membership, commands) => active,
            };
            if let Err(err) = active {
                break Err(err);
            }
        }
        holds = false;
        let taken = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            taken = take_over(&shared, &instance, &mut membership) => taken,
        };
        let (mut state, log_state) = match taken {
            Ok(Some(taken)) => taken,
            // Taken back before this instance was ready: stand by again.
            Ok(None) => continue,
            Err(err) => break Err(err),
        };
        let term = log_state.term;
        // Every pending notification is tried once at once: the predecessor's backoff was
        // about receivers as it reached them, and what cut it off may have been its network.
        let now = now_ms();
        for entry in state.iter_mut().flat_map(|s| s.outbox.iter_mut()) {
            entry.next_attempt_at_ms = entry.next_attempt_at_ms.min(now);
        }
        info!(%instance, term, pending_notifications = state.as_ref().map_or(0, |s| s.outbox.len()), "alerting active");
        metrics::gauge!("tripline_alerting_active").set(1.0);
        let store = StateStore::Log(log_state);
        let stop = shutdown.child_token();
        let mut serve = Box::pin(service.serve(state, store, Some(&shared), commands, log, &stop));
        let mut release = None;
        let mut events_open = true;
        let served = loop {
            tokio::select! {
                served = &mut serve => break served,
                event = membership.events.recv(), if events_open => match event {
                    Some(Rebalanced::Revoked(_, handed_back)) => {
                        info!(%instance, term, "alerting partition revoked: stopping");
                        stop.cancel();
                        holds = false;
                        release = Some(handed_back);
                    }
                    // The revocation's wait ran out while this term was stopping: the
                    // partition may come straight back.
                    Some(Rebalanced::Assigned(partitions)) => holds = !partitions.is_empty(),
                    None => {
                        events_open = false;
                        stop.cancel();
                    }
                },
            }
        };
        drop(serve);
        if let Some(release) = release {
            release.done();
        }
        if served.is_err() || shutdown.is_cancelled() {
            break served;
        }
        if !events_open {
            break Err(AlertingError::Standby(
                "the coordination group's consumer stopped".into(),
            ));
        }
        // The API keeps answering while this instance stands by.
        service.health.set_running(true);
        service.health.state_written(true);
    };
    metrics::gauge!("tripline_alerting_active").set(0.0);
    service.health.set_running(false);
    membership.leave().await;
    shared.stop().await;
    result
}

/// Takes over the state unless the partition is taken back meanwhile (`None`).
async fn take_over(
    shared: &Shared,
    instance: &str,
    membership: &mut Membership,
) -> Result<Option<(Option<State>, StateLog)>, AlertingError> {
    let mut reading = Box::pin(shared.take_over(instance));
    loop {
        tokio::select! {
            taken = &mut reading => return taken.map(Some),
            event = membership.events.recv() => match event {
                Some(Rebalanced::Revoked(_, release)) => {
                    release.done();
                    return Ok(None);
                }
                Some(Rebalanced::Assigned(partitions)) if partitions.is_empty() => return Ok(None),
                Some(Rebalanced::Assigned(_)) => {}
                None => {
                    return Err(AlertingError::Standby(
                        "the coordination group's consumer stopped".into(),
                    ))
                }
            },
        }
    }
}

/// Answers the API as a standby until the coordination partition is assigned to this instance.
async fn stand_by(
    service: &mut AlertService,
    shared: &Shared,
    membership: &mut Membership,
    commands: &mut mpsc::Receiver<Command>,
) -> Result<(), AlertingError> {
    loop {
        tokio::select! {
            event = membership.events.recv() => match event {
                Some(Rebalanced::Assigned(partitions)) if !partitions.is_empty() => return Ok(()),
                Some(Rebalanced::Revoked(_, release)) => release.done(),
                Some(Rebalanced::Assigned(_)) => info!("alerting standby: another instance is active"),
                None => {
                    return Err(AlertingError::Standby(
                        "the coordination group's consumer stopped".into(),
                    ))
                }
            },
            Some(command) = commands.recv() => standby_command(service, shared, command).await,
        }
    }
}

/// A standby's answer: reads from the last stored state, silences through their topic.
async fn standby_command(service: &mut AlertService, shared: &Shared, command: Command) {
    let now = now_ms();
    match command {
        Command::ListAlerts(reply) => {
            let views = match shared.lock().state.clone() {
                None => Ok(Vec::new()),
                Some(state) => Pipeline::restore(&service.config, state.pipeline, now)
                    .map(|pipeline| alert_views(&pipeline, now))
                    .map_err(|e| ControlError::Config(e.to_string())),
            };
            let _ = reply.send(views);
        }
        Command::ListSilences(reply) => {
            let _ = reply.send(Ok(silence_views(&shared.silences(), now)));
        }
        Command::CreateSilence(new, reply) => {
            let result = shared
                .change_silence(&shared.silences(), |s| s.create(new, now))
                .await;
            let _ = reply.send(shared.merged(result, now));
        }
        Command::ExpireSilence(id, reply) => {
            let result = shared
                .change_silence(&shared.silences(), |s| s.expire(&id, now))
                .await;
            let _ = reply.send(shared.merged(result, now));
        }
        Command::Test(_, reply) => {
            let _ = reply.send(Err(ControlError::Standby));
        }
        Command::Reload(config, reply) => {
            let checked = Receivers::from_config(&config, &tripline_kafka::process_env)
                .map_err(|e| ControlError::Config(e.to_string()))
                .and_then(|_| {
                    Pipeline::from_config(&config).map_err(|e| ControlError::Config(e.to_string()))
                });
            let _ = reply.send(checked.map(|_| {
                service.config = *config;
                info!("alerting config reloaded (standby)");
            }));
        }
    }
}

/// `<host>-<pid>`: tells the instances apart in logs and markers.
fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "alerting".into());
    format!("{host}-{}", std::process::id())
}
