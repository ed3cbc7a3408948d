//! Rollout control in the worker (issue 21): what a worker decides before each claim of a bulk change that has a
//! canary or an abort rule. Every decision is taken in the store, once: the claim itself returns nothing for a
//! paused or aborted bulk change and caps a canary's rows; the abort is recorded by one conditional `UPDATE`
//! (`Rollouts::abort_bulk_change`), so two workers that both see the rule trip record it once and send one e-mail.

use chrono::{DateTime, Utc};
use domain::BulkStatus;
use domain::rollout::{CanaryThen, Rollout};
use tracing::info;

use crate::ports::{Rollouts, StoreError};

/// What the worker does next with a bulk change.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Claim rows (the store still caps a canary's).
    Go,
    /// Paused (by a person, or by its canary just now): no PENDING row is claimed (the store refuses them); rows in
    /// flight finish, and one whose lease ended is still claimed to be settled.
    Paused,
    /// Its abort rule tripped (decided now or earlier): cancel the rows not started with this reason.
    Aborted(String),
}

/// Looks at the bulk change's figures and decides: abort (once), pass or pause the canary, or go on.
pub async fn before_claim(
    store: &(impl Rollouts + ?Sized),
    bulk_change_id: i64,
    rollout: &Rollout,
    now: DateTime<Utc>,
) -> Result<Step, StoreError> {
    let progress = store.rollout_progress(bulk_change_id).await?;
    if let Some(reason) = progress.aborted_reason {
        return Ok(Step::Aborted(reason));
    }
    // The rule before the pause: rows that were in flight when someone paused can still trip it.
    if let Some(rule) = &rollout.abort_when
        && let Some(reason) = rule.tripped(progress.finished, progress.failed)
    {
        if store.abort_bulk_change(bulk_change_id, &reason, now).await? {
            info!(bulk_change_id, %reason, "abort rule tripped; the rows not started are cancelled");
            return Ok(Step::Aborted(reason));
        }
        // Another worker recorded it first (with its figures): its reason is the one.
        let recorded = store.rollout_progress(bulk_change_id).await?.aborted_reason.unwrap_or(reason);
        return Ok(Step::Aborted(recorded));
    }
    if progress.status == BulkStatus::Paused {
        return Ok(Step::Paused);
    }
    if let Some(canary) = &rollout.canary
        && !progress.canary_passed
        && progress.started >= u64::from(canary.devices)
        && progress.finished >= progress.started
    {
        // The canary's rows are final and the abort rule held on them.
        match canary.then {
            CanaryThen::Continue => {
                store.pass_canary(bulk_change_id, now).await?;
                info!(bulk_change_id, devices = canary.devices, "canary passed; the rest follow");
            }
            CanaryThen::Pause => {
                if store.pause_bulk_change(None, bulk_change_id, "canary", "canary", now).await?.is_some() {
                    info!(bulk_change_id, devices = canary.devices, "canary done; paused until someone resumes");
                }
                return Ok(Step::Paused);
            }
        }
    }
    Ok(Step::Go)
}
