//! The engine: ports (traits) to the world, the per-change-type processors, and the orchestration
//! (claim, process, finish, notify). Knows no HTTP framework, SQL dialect or AWS SDK.

pub mod audit;
pub mod carrier;
pub mod carrier_wait;
mod change;
mod common;
#[cfg(test)]
mod fakes;
pub(crate) mod job;
pub mod metrics;
pub mod notify;
pub mod ports;
pub mod rate;
pub mod recorder;
pub mod retry;
pub mod rollout;
pub mod scheduler;
pub mod settings;
pub mod undo;
pub mod webhooks;
pub mod worker;

pub use change::REV_COST_CENTER_FIELDS;
pub use ports::*;
pub use settings::{Settings, SettingsError};
pub use worker::{Handled, Worker, WorkerConfig, WorkerError};
