//! The Lambda functions' library: configuration read once, adapters built once, and the three handlers
//! (API, SQS worker, scheduler). The binaries in `src/bin/` only call into here.

pub mod adapters;
pub mod api;
pub mod config;
pub mod observability;
pub mod scheduler;
pub mod worker;
