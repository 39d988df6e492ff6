//! secmon manager: JetStream ingest, fleet registry and lifecycle, storage and the
//! REST API. The binary (`main.rs`) only parses arguments and calls [`app`].

pub mod alerts;
pub mod api;
pub mod app;
pub mod config;
pub mod detection;
pub mod file_state;
pub mod ingest;
pub mod init;
pub mod lifecycle;
pub mod log_limit;
pub mod metrics;
pub mod registry;
pub mod security;
pub mod seq;
pub mod status_events;
pub mod store;
pub mod streams;
