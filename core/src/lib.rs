//! Tripline's pure core: the event contract (v1), its validation, secret fingerprinting,
//! bearer-token checks, the model price table and the configuration schema. No async and no IO
//! here, so everything in this crate is unit-testable in isolation.

pub mod alert;
pub mod auth;
pub mod config;
pub mod event;
pub mod models;
pub mod price;
pub mod secret;
pub mod time;

pub use event::{Event, GatewayRequest, ProviderAttempt, Reject, RejectReason};
