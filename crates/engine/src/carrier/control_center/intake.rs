//! The Jasper family's part of intake: every change type but ThingSpace's DeleteDevice and Telegence's new
//! services; its status moves are checked by the common rule (`domain::rules::jasper_transition`).

use async_trait::async_trait;
use domain::request::ChangeDetails;

use crate::carrier::intake::CarrierIntake;

pub(crate) struct ControlCenterIntake;

#[async_trait]
impl CarrierIntake for ControlCenterIntake {
    fn takes(&self, details: &ChangeDetails) -> bool {
        !matches!(details, ChangeDetails::DeleteDevice | ChangeDetails::ActivateNewService(_))
    }

    fn moves_plan_with_assignment(&self) -> bool {
        true
    }
}
