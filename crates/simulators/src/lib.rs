//! Faithful simulators of the carrier and billing APIs (Control Center, ThingSpace, Telegence, Teal, Pond, Rev.io) for local runs, tests and
//! benchmarks: real paths, auth, bodies, status rules and error bodies, with latency, 429s, injected 5xx and
//! hangs, and a record of every call.

#![allow(
    clippy::result_large_err,
    reason = "handlers short-circuit with an axum Response; a test tool, not a hot path"
)]

pub mod common;
pub mod control_center;
pub mod pond;
pub mod rev_io;
pub mod teal;
pub mod telegence;
pub mod thingspace;

pub use common::{Faults, RecordedCall};
pub use control_center::{Account, ControlCenterSim, SimDevice};
pub use rev_io::{RevAccount, RevCustomer, RevIoSim};
