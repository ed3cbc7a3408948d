//! The engine: ports (traits) to the world, the per-change-type processors, and the orchestration
//! (claim, process, finish, notify). Knows no HTTP framework, SQL dialect or AWS SDK.

mod archival;
pub mod audit;
mod carrier_rate_plan;
pub mod carrier_wait;
mod change_identifier;
mod common;
mod customer_assignment;
mod customer_rate_plan;
mod edit_username;
pub(crate) mod job;
pub mod metrics;
pub mod notify;
pub mod pond;
pub mod ports;
pub mod rate;
pub mod recorder;
pub mod retry;
mod rev_service;
pub mod scheduler;
pub mod settings;
mod status_update;
pub mod teal;
pub mod telegence;
pub mod thingspace;
pub mod worker;

pub use edit_username::REV_COST_CENTER_FIELDS;
pub use ports::*;
pub use settings::{Settings, SettingsError};
pub use worker::{Handled, Worker, WorkerConfig, WorkerError};
