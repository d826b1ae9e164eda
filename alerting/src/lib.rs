//! Alerting: turns the detectors' alerts from `tripline.alerts` into notifications. The pure
//! pieces: the alert lifecycle, routing, grouping, inhibition and silences (`lifecycle`,
//! `routing`, `grouping`, `silence`, `matcher`), and the receivers' payloads and delivery policy
//! (`receivers`), wired together as one `pipeline` (messages in, notifications out, `now`
//! passed in). `runtime` is the service around it: the Kafka consumer, the state kept on
//! disk (or in Kafka with `[alerting.ha]`), the webhook, Slack and SMTP transports, and the
//! control channel the HTTP API (in the binary's `alert` module) talks to.

pub mod grouping;
pub mod lifecycle;
pub mod matcher;
pub mod pipeline;
pub mod receivers;
pub mod routing;
pub mod runtime;
pub mod silence;
