//! The `bulkchange` binary's library: the local stack, the local notifier, the demo run by `make run` and the
//! benchmark run by `make bench`. The binary's `main` only parses arguments and calls into here.

pub mod bench;
pub mod chaos;
pub mod client;
pub mod demo;
pub mod fleet;
pub mod heap;
pub mod outbox;
pub mod stack;
pub mod stack_store;

pub use stack::{Stack, StackConfig};
pub use stack_store::{DatabaseUrl, StackStore};
