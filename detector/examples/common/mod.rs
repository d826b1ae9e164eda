//! Shared by the detector examples (scale.rs, spray.rs, workers.rs): measurement and synthetic traffic.
#![allow(dead_code)]

pub mod measure;
pub mod traffic;
