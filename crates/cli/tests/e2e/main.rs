//! The end-to-end tests, one binary (it links once): the local stack started as `bulkchange serve` starts it,
//! driven through HTTP, a module per feature. `support` is what every module shares. With `E2E_STORE=mssql` and
//! `MSSQL_URL` the stack runs on the SQL Server adapter (`make engine-tests`).

mod support;

mod answers;
mod chaos;
mod core;
mod fleet;
mod operator_cli;
mod pond;
mod races;
mod random_bodies;
mod rollout;
mod teal;
mod telegence;
mod thingspace;
mod undo;
mod webhooks;
