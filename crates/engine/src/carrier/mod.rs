//! The carriers, one folder each: its processors, its intake rules, its asynchronous plumbing and the port of
//! its API (`port.rs`, implemented by the `carriers` crate). This file is the registry: the one table in the
//! engine that lists them. A new carrier is a folder here, a client in `carriers`, a simulator, a line in
//! `connect` and `intake_rules`, and a method of `Carriers`.

use std::sync::Arc;

use domain::Integration;

use crate::job::Carrier;
use crate::ports::{RevIoApi, ServiceProvider};
use crate::rate::{RateLimiters, TokenBucket};

pub mod control_center;
pub mod pond;
pub mod teal;
pub mod telegence;
pub mod thingspace;

pub mod intake;
pub use intake::{CarrierIntake, DeviceCheck, IntakeContext, Refusal};

use control_center::ControlCenterApi;
use pond::PondApi;
use teal::TealApi;
use telegence::TelegenceApi;
use thingspace::ThingSpaceApi;

/// Builds the client of a service provider's API; each call first takes a token from `limiter`.
pub trait Carriers: Send + Sync {
    fn control_center(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Arc<dyn ControlCenterApi>;
    fn rev_io(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Arc<dyn RevIoApi>;
    /// A ThingSpace account's client; `activations` paces activation requests (100 a minute). Clients are kept
    /// per account so their tokens are reused. Err when the service provider has no ThingSpace settings.
    fn thingspace(
        &self,
        sp: &ServiceProvider,
        limiter: Arc<TokenBucket>,
        activations: Arc<TokenBucket>,
    ) -> Result<Arc<dyn ThingSpaceApi>, String>;
    /// A Telegence account's client. Err when the service provider has no app id or secret.
    fn telegence(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Result<Arc<dyn TelegenceApi>, String>;
    /// A Pond account's client. Err when the key, the distributor or a wire setting is missing or unreadable.
    fn pond(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Result<Arc<dyn PondApi>, String>;
    /// A Teal account's client. Err when the API key or secret is missing.
    fn teal(&self, sp: &ServiceProvider, limiter: Arc<TokenBucket>) -> Result<Arc<dyn TealApi>, String>;
}

/// The service provider's carrier with its client built, paced by the account's limits in `limiters`.
pub(crate) fn connect(
    sp: &ServiceProvider,
    carriers: &dyn Carriers,
    limiters: &RateLimiters,
) -> Result<Arc<dyn Carrier>, String> {
    match sp.integration {
        i if i.is_jasper_family() => Ok(control_center::connect(sp, carriers, limiters)),
        Integration::ThingSpace => thingspace::connect(sp, carriers, limiters),
        Integration::Telegence => telegence::connect(sp, carriers, limiters),
        Integration::Teal => teal::connect(sp, carriers, limiters),
        Integration::Pond => pond::connect(sp, carriers, limiters),
        other => Err(format!("{other} is not a carrier")),
    }
}

/// What intake asks of the service provider's carrier; None for an integration that is no carrier (Rev.io).
pub fn intake_rules(integration: Integration) -> Option<&'static dyn CarrierIntake> {
    match integration {
        i if i.is_jasper_family() => Some(&control_center::intake::ControlCenterIntake),
        Integration::ThingSpace => Some(&thingspace::intake::ThingSpaceIntake),
        Integration::Telegence => Some(&telegence::intake::TelegenceIntake),
        Integration::Teal => Some(&teal::intake::TealIntake),
        Integration::Pond => Some(&pond::intake::PondIntake),
        _ => None,
    }
}
