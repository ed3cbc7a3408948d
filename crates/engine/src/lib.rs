//! The engine: ports (traits) to the world, the per-change-type processors, and the orchestration
//! (claim, process, finish, notify). Knows no HTTP framework, SQL dialect or AWS SDK.

pub mod audit;
pub mod metrics;
pub mod notify;
pub mod ports;
pub mod rate;
pub mod retry;
pub mod scheduler;
mod status_update;
pub mod worker;

pub use ports::*;
pub use worker::{Handled, Worker, WorkerConfig, WorkerError};
