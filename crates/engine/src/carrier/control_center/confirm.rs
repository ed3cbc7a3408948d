//! Control Center reads around an edit: what the carrier shows before a change is sent again (a reclaimed row, a
//! retry), whether it confirms a change our database already shows, and an edit whose lost answer is checked
//! against the carrier before it is sent again.

use domain::Iccid;
use tracing::warn;

use super::port::{CcDevice, CcEdit, ControlCenterApi};
use crate::common::{api_failed_or_error, fail};
use crate::job::Job;
use crate::ports::{CarrierFailure, DeviceChangeRow, FailureKind, RowOutcome};
use domain::RowStatus;

/// How often an ambiguous write (no answer) is checked against the carrier and sent again.
const AMBIGUOUS_ROUNDS: u32 = 3;

/// The carrier's view of a device whose change an earlier attempt may have sent (a reclaimed row, a retry),
/// so we look before sending again. `None` on a first attempt.
pub(crate) async fn carrier_state_if_reclaimed(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    iccid: &Iccid,
) -> Result<Option<CcDevice>, RowOutcome> {
    if !job.may_have_been_sent(row) {
        return Ok(None);
    }
    match api.get_device(iccid).await {
        Ok((cc, call)) => {
            job.log(row, "Get Jasper Device Details (an earlier attempt may have sent it)", &call, None).await;
            Ok(Some(cc))
        }
        Err(f) => {
            job.log(row, "Get Jasper Device Details (an earlier attempt may have sent it)", &f.call, Some(&f.reason()))
                .await;
            Err(read_again_later(job, row, &f).await)
        }
    }
}

/// A row whose change an earlier attempt may have sent, and whose device could not be read: its outcome is
/// unknown, so it is not called failed. It waits (`CarrierWaits::await_carrier`, under `recheck-<row>`) until
/// `carrier_result_wait` has passed, when a worker takes it again and reads the device first; only after
/// `carrier_result_give_up` without a read does it end, saying its outcome is unknown. The returned outcome is not
/// final while it waits (the worker records nothing for it).
async fn read_again_later(job: &Job, row: &DeviceChangeRow, f: &CarrierFailure) -> RowOutcome {
    let now = job.clock.now();
    let waited = (now - row.carrier_requested_at.unwrap_or(now)).to_std().unwrap_or_default();
    if waited < job.carrier_result_give_up {
        let until = now + chrono::Duration::from_std(job.carrier_result_wait).unwrap_or_default();
        let recheck = format!("recheck-{}", row.id);
        if let Ok(1) = job.waits.await_carrier(job.bulk.id, &[row.id], &job.worker_id, &recheck, now, until).await {
            return RowOutcome {
                status: RowStatus::Processing,
                details: format!("Outcome unknown ({}); the device is read again after {until}", f.reason()),
                device_update: Default::default(),
            };
        }
    }
    fail(api_failed_or_error(f), outcome_unknown(f))
}

/// Why a row whose change an earlier attempt may have sent ends without knowing its outcome: nothing was sent
/// again. A retry of the bulk change reads the device before it sends anything.
fn outcome_unknown(f: &CarrierFailure) -> String {
    format!(
        "Outcome unknown: an earlier attempt may already have applied this change, and the device could not be read \
         from the carrier to check ({}); nothing was sent again. Retry the bulk change: a retry reads the device first",
        f.reason()
    )
}

/// Whether the carrier already shows what the row asks for, when our database says it does: a skip needs the
/// carrier's word (our copy can be stale). `Ok(true)`: skip; `Ok(false)`: the database was stale, send the change.
pub(crate) async fn carrier_confirms(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    iccid: &Iccid,
    done: impl Fn(&CcDevice) -> bool,
) -> Result<bool, RowOutcome> {
    match api.get_device(iccid).await {
        Ok((cc, call)) => {
            job.log(row, "Get Jasper Device Details (is the change already there?)", &call, None).await;
            let confirmed = done(&cc);
            if !confirmed {
                warn!(iccid = %iccid, "the database says the change is there but the carrier does not; sending it");
            }
            Ok(confirmed)
        }
        Err(f) => {
            job.log(row, "Get Jasper Device Details (is the change already there?)", &f.call, Some(&f.reason())).await;
            Err(fail(
                api_failed_or_error(&f),
                format!("Could not read the device from the carrier to confirm it needs no change: {}", f.reason()),
            ))
        }
    }
}

/// Sends an edit; when the answer is lost, reads the device and only sends again if the change did not take.
pub(crate) async fn edit_confirmed(
    job: &Job,
    api: &dyn ControlCenterApi,
    row: &DeviceChangeRow,
    iccid: &Iccid,
    edit: &CcEdit,
    description: &str,
    took: impl Fn(&CcDevice) -> bool,
) -> Result<(), CarrierFailure> {
    let mut last = None;
    for _ in 0..AMBIGUOUS_ROUNDS {
        match api.edit_device(iccid, edit).await {
            Ok(call) => {
                job.log(row, description, &call, None).await;
                return Ok(());
            }
            Err(f) if f.kind == FailureKind::Ambiguous => {
                job.log(row, description, &f.call, Some(&f.reason())).await;
                warn!(iccid = %iccid, reason = %f.reason(), "no answer to an edit; checking the device before sending again");
                match api.get_device(iccid).await {
                    Ok((cc, call)) => {
                        job.log(row, "Get Jasper Device Details (confirm edit)", &call, None).await;
                        if took(&cc) {
                            return Ok(());
                        }
                    }
                    Err(g) => {
                        // Both are the row's story: the edit may have taken, and the read that would tell failed.
                        job.log(row, "Get Jasper Device Details (confirm edit)", &g.call, Some(&g.reason())).await;
                        return Err(CarrierFailure {
                            kind: FailureKind::Ambiguous,
                            code: None,
                            message: format!(
                                "the answer to the edit was lost ({}) and the device could not be read to check ({}): \
                                 the change may have been applied; check the device before a retry",
                                f.reason(),
                                g.reason()
                            ),
                            ..g
                        });
                    }
                }
                last = Some(f);
            }
            Err(f) => {
                job.log(row, description, &f.call, Some(&f.reason())).await;
                return Err(f);
            }
        }
    }
    Err(last.unwrap_or_else(|| CarrierFailure {
        kind: FailureKind::Ambiguous,
        code: None,
        message: "no answer from the carrier".into(),
        attempts: AMBIGUOUS_ROUNDS,
        call: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use domain::request::ChangeDetails;

    use super::*;
    use crate::fakes::{self, MemStore};
    use crate::ports::CallRecord;

    /// A Control Center whose device reads all fail (after the client's own retries).
    struct Unreadable;

    #[async_trait]
    impl ControlCenterApi for Unreadable {
        async fn get_device(&self, _iccid: &Iccid) -> Result<(CcDevice, CallRecord), CarrierFailure> {
            Err(CarrierFailure {
                kind: FailureKind::Unavailable,
                code: Some("500".into()),
                message: "internal error".into(),
                attempts: 5,
                call: CallRecord::default(),
            })
        }
        async fn edit_device(&self, _iccid: &Iccid, _edit: &CcEdit) -> Result<CallRecord, CarrierFailure> {
            panic!("nothing may be sent before the device is read")
        }
        async fn audit_trail(
            &self,
            _iccid: &Iccid,
        ) -> Result<(Vec<super::super::port::CcAuditEntry>, CallRecord), CarrierFailure> {
            panic!("not read here")
        }
    }

    /// A row a dead worker may have sent, whose device cannot be read now: it is not called failed; it waits
    /// under a re-check until the result wait has passed, and only past the give-up time does it end, saying its
    /// outcome is unknown and that nothing was sent again.
    #[tokio::test]
    async fn a_reclaimed_row_whose_device_cannot_be_read_waits_then_says_its_outcome_is_unknown() {
        let store = MemStore::with_jasper_account();
        let device = store.add_device(1, "89148000008245116615");
        let bulk = store.add_bulk_change(2, &ChangeDetails::Archival, std::slice::from_ref(&device));
        {
            let mut s = store.state();
            s.rows[0].row.status = domain::RowStatus::Processing;
            s.rows[0].owner = Some(fakes::WORKER.into());
        }
        let job = fakes::job(store.clone(), bulk, ChangeDetails::Archival);
        let row = DeviceChangeRow { claims: 2, ..fakes::row(2, 1, &device) };
        let iccid = Iccid::parse(&device.iccid).expect("iccid");

        let waiting = carrier_state_if_reclaimed(&job, &Unreadable, &row, &iccid).await.expect_err("not read");

        assert_eq!(waiting.status, domain::RowStatus::Processing, "not final: {}", waiting.details);
        {
            let s = store.state();
            assert_eq!(s.rows[0].owner.as_deref(), Some("carrier:recheck-1"), "handed to its re-check");
            assert!(s.rows[0].until.is_some_and(|u| u > chrono::Utc::now()), "until the result wait has passed");
        }
        let long_ago = chrono::Utc::now() - chrono::Duration::hours(2);
        let given_up = DeviceChangeRow { carrier_requested_at: Some(long_ago), ..row.clone() };
        let ended = carrier_state_if_reclaimed(&job, &Unreadable, &given_up, &iccid).await.expect_err("not read");
        assert_eq!(ended.status, domain::RowStatus::ApiFailed);
        assert!(
            ended.details.starts_with("Outcome unknown: an earlier attempt may already have applied"),
            "{}",
            ended.details
        );
        assert!(ended.details.contains("nothing was sent again"), "{}", ended.details);
        let first = DeviceChangeRow { claims: 1, ..row };
        assert!(carrier_state_if_reclaimed(&job, &Unreadable, &first, &iccid).await.expect("no read").is_none());
    }

    /// A Control Center that loses the answer to every edit (502) and throttles every read past the budget.
    struct LostThenThrottled;

    #[async_trait]
    impl ControlCenterApi for LostThenThrottled {
        async fn get_device(&self, _iccid: &Iccid) -> Result<(CcDevice, CallRecord), CarrierFailure> {
            Err(CarrierFailure {
                kind: FailureKind::Throttled,
                code: Some("40000029".into()),
                message: "still throttled after 12 attempts".into(),
                attempts: 12,
                call: CallRecord { http_status: Some(429), ..CallRecord::default() },
            })
        }
        async fn edit_device(&self, _iccid: &Iccid, _edit: &CcEdit) -> Result<CallRecord, CarrierFailure> {
            Err(CarrierFailure {
                kind: FailureKind::Ambiguous,
                code: None,
                message: "bad gateway (a write answered 502: it may have been applied)".into(),
                attempts: 1,
                call: CallRecord { http_status: Some(502), ..CallRecord::default() },
            })
        }
        async fn audit_trail(
            &self,
            _iccid: &Iccid,
        ) -> Result<(Vec<super::super::port::CcAuditEntry>, CallRecord), CarrierFailure> {
            panic!("not read here")
        }
    }

    /// `make chaos SEED=137` (issue 20): an edit's answer was lost, the read that checks it stayed throttled,
    /// and the row said only "HTTP 429 ... still throttled" while Control Center showed the change. The failure
    /// says the edit may have been applied, with both the lost answer and the failed read.
    #[tokio::test]
    async fn a_lost_edit_whose_check_is_throttled_says_it_may_have_been_applied() {
        let store = MemStore::with_jasper_account();
        let device = store.add_device(1, "89148000008245116615");
        let bulk = store.add_bulk_change(2, &ChangeDetails::Archival, std::slice::from_ref(&device));
        let job = fakes::job(store.clone(), bulk, ChangeDetails::Archival);
        let row = fakes::row(2, 1, &device);
        let iccid = Iccid::parse(&device.iccid).expect("iccid");
        let edit = CcEdit { status: Some("ACTIVATED".into()), ..Default::default() };

        let f = edit_confirmed(&job, &LostThenThrottled, &row, &iccid, &edit, "edit", |_| false)
            .await
            .expect_err("not confirmed");

        assert_eq!(f.kind, FailureKind::Ambiguous, "{}", f.reason());
        let reason = f.reason();
        assert!(reason.contains("may have been applied"), "{reason}");
        assert!(reason.contains("502") && reason.contains("still throttled"), "both calls are told: {reason}");
    }
}
