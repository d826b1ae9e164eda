//! Rolling statistical models for the detectors: pure, allocation-free per update, small per
//! entity (the detector keeps one set per API key, project and provider/model; 100,000 keys
//! must fit in 2 KB each).
//!
//! - [`ewma`]: exponentially weighted mean and variance (West/Finch incremental form).
//! - [`calibration`]: a decayed histogram of past |z|: how often this entity was this surprising.
//! - [`robust`]: robust exponentially smoothed level and spread (Huber-clipped updates).
//! - [`seasonal`]: hour-of-week factors with shrinkage toward the global level.
//! - [`spend`]: the spend-spike model built from the above, with floors and early firing.
//! - [`sustained`]: a capped one-sided CUSUM: evidence of a raised rate over several windows.
//! - [`geo`]: great-circle distances, country points and implied travel speed.
//! - [`proportion`]: confidence bounds for shares counted in small samples.

pub mod calibration;
pub mod ewma;
pub mod geo;
pub mod proportion;
pub mod robust;
pub mod seasonal;
pub mod spend;
pub mod sustained;

pub use calibration::TailCalibration;
pub use ewma::{alpha_from_half_life, Ewma};
pub use geo::{country_centroid, haversine_km, implied_speed_kmh};
pub use robust::RobustEw;
pub use seasonal::{hour_of_week, Seasonal};
pub use spend::{
    Assessment, Expectation, SpendConfigError, SpendModel, SpendModelConfig, SpendParams,
};
