//! Alerting (issue 4): turns findings from `tripline.alerts` into notifications. Pure pieces
//! first: the alert lifecycle, routing, grouping, inhibition and silences (`routing`,
//! `lifecycle`, `grouping`, `silence`), and the receivers' payloads and delivery policy
//! (`receivers`). The Kafka consumer, persistence, HTTP API and SMTP/HTTP transports come next.

pub mod grouping;
pub mod lifecycle;
pub mod matcher;
pub mod receivers;
pub mod routing;
pub mod runtime;
pub mod silence;
