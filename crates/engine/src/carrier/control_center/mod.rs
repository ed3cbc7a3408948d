//! Cisco Control Center and its variants (Jasper, POD19, T-Mobile, Rogers): each row on its own, one processor
//! per change type; an edit whose answer was lost is checked against the carrier before it is sent again
//! (`confirm`).

use std::sync::Arc;

use async_trait::async_trait;
use domain::RowStatus;
use domain::request::ChangeDetails;
use domain::rules::resolve_target_status;

use super::Carriers;
use crate::common::fail;
use crate::job::{Carrier, Job};
use crate::ports::{DeviceChangeRow, RowOutcome, ServiceProvider};
use crate::rate::RateLimiters;

mod carrier_rate_plan;
mod change_identifier;
mod confirm;
mod edit_username;
pub(crate) mod intake;
mod port;
mod status_update;

pub use port::*;

/// A Jasper-family account's carrier.
pub(crate) fn connect(sp: &ServiceProvider, carriers: &dyn Carriers, limiters: &RateLimiters) -> Arc<dyn Carrier> {
    let limiter = limiters.for_provider(sp.id, sp.rate_limit_per_second);
    Arc::new(ControlCenter { api: carriers.control_center(sp, limiter) })
}

struct ControlCenter {
    api: Arc<dyn ControlCenterApi>,
}

#[async_trait]
impl Carrier for ControlCenter {
    async fn process_row(&self, job: &Job, row: &DeviceChangeRow, details: &ChangeDetails) -> Option<RowOutcome> {
        let api = self.api.as_ref();
        Some(match details {
            ChangeDetails::StatusUpdate(req) => {
                match resolve_target_status(&job.statuses, job.sp.integration, &req.target_status) {
                    Some(target) => status_update::process(job, api, row, req, &target.clone()).await,
                    None => fail(
                        RowStatus::Error,
                        format!("Unknown target status '{}' for {}", req.target_status, job.sp.integration),
                    ),
                }
            }
            ChangeDetails::CarrierRatePlanChange(req) => carrier_rate_plan::process(job, api, row, req).await,
            ChangeDetails::EditUsername(req) => edit_username::process(job, api, row, req).await,
            ChangeDetails::ChangeIccidOrImei(req) => change_identifier::process(job, api, row, req).await,
            _ => return None,
        })
    }
}
