//! Rows that wait on an asynchronous carrier request, whatever the carrier: a carrier plugs in its
//! grouping and requests (`AsyncCarrier::send`), how it reads a request's result (`poll`) and the steps after a
//! result (`finish`); this module keeps the life cycle they share.
//!
//! - **Submit and record**: as soon as the carrier accepted a request, its rows are handed over to it
//!   ([`wait_on`]): leased to `carrier:<request id>` until their deadline, so no worker claims them meanwhile.
//! - **Result applied once**: a callback (or a poll) completes a row as that lease holder ([`apply_result`]), so a
//!   duplicate, late or out-of-order result finds the row final, or held by a poller, and changes nothing.
//! - **Poll after the deadline**: a worker reclaims a row whose result did not come and asks the carrier; still
//!   pending, the row waits again, until `carrier_result_give_up` after the request, when it fails with "No result
//!   from carrier".
//! - A result whose follow-up steps (Rev.io) remain is kept on the row and handed back to the workers, who run
//!   `finish` with it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::RowStatus;
use tracing::{error, info, warn};

use crate::audit;
use crate::common::fail;
pub use crate::job::CarrierResult;
use crate::job::{AsyncCarrier, Disposition, Job, PollAnswer};
use crate::ports::{BulkChange, CallRecord, DeviceChangeRow, Queue, RowOutcome, StoreError, WorkMessage};
use crate::ports::{BulkChanges, CarrierWaits, Outcomes};

/// Who holds a row's lease while it waits on carrier request `request_id`.
pub fn carrier_owner(request_id: &str) -> String {
    format!("carrier:{request_id}")
}

/// The rows of one claim: those with a stored result are finished, those waiting on a request are polled, the
/// fresh ones are sent.
pub(crate) async fn process(
    job: &Job,
    carrier: &dyn AsyncCarrier,
    rows: Vec<DeviceChangeRow>,
    now: DateTime<Utc>,
) -> Vec<(DeviceChangeRow, Disposition)> {
    let (with_result, rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.carrier_result.is_some());
    let (waiting, fresh): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.carrier_request_id.is_some());
    let mut out = Vec::new();
    for row in with_result {
        let outcome = match serde_json::from_str::<CarrierResult>(row.carrier_result.as_deref().unwrap_or_default()) {
            Ok(result) => carrier.finish(job, &row, &result).await,
            Err(e) => fail(RowStatus::Error, format!("Stored carrier result is unreadable: {e}")),
        };
        out.push((row, Disposition::Done(outcome)));
    }
    let mut by_request: BTreeMap<String, Vec<DeviceChangeRow>> = BTreeMap::new();
    for row in waiting {
        by_request.entry(row.carrier_request_id.clone().unwrap_or_default()).or_default().push(row);
    }
    for (request_id, rows) in by_request {
        out.extend(poll(job, carrier, &request_id, rows, now).await);
    }
    if !fresh.is_empty() {
        out.extend(carrier.send(job, fresh).await);
    }
    out
}

/// Rows whose result did not come by the deadline: asked of the carrier; still pending, they wait again until
/// the give-up time.
async fn poll(
    job: &Job,
    carrier: &dyn AsyncCarrier,
    request_id: &str,
    rows: Vec<DeviceChangeRow>,
    now: DateTime<Utc>,
) -> Vec<(DeviceChangeRow, Disposition)> {
    let started = rows.iter().filter_map(|r| r.carrier_requested_at).min().unwrap_or(now);
    let waited = (now - started).to_std().unwrap_or_default();
    let (settled, pending): (Vec<_>, Vec<_>) = match carrier.poll(job, request_id, &rows).await {
        PollAnswer::Pending => (Vec::new(), rows.into_iter().map(|r| (r, None)).collect()),
        PollAnswer::Results(mut results) => rows
            .into_iter()
            .map(|row| {
                let result = results.remove(&row.id);
                (row, result)
            })
            .partition(|(_, result)| result.is_some()),
    };
    let mut out = Vec::with_capacity(settled.len() + pending.len());
    for (row, result) in settled {
        let outcome = match result {
            Some(result) => carrier.finish(job, &row, &result).await,
            None => fail(RowStatus::Error, "a settled row without its result"),
        };
        out.push((row, Disposition::Done(outcome)));
    }
    let pending: Vec<DeviceChangeRow> = pending.into_iter().map(|(row, _)| row).collect();
    if pending.is_empty() {
        return out;
    }
    if waited < carrier.give_up(job) {
        let held: Vec<&DeviceChangeRow> = pending.iter().collect();
        wait_on(job, carrier, request_id, &held).await;
        out.extend(pending.into_iter().map(|row| (row, Disposition::Await(request_id.to_string()))));
    } else {
        let reason = format!("No result from carrier for request {request_id} after {} minutes", waited.as_secs() / 60);
        out.extend(pending.into_iter().map(|row| (row, Disposition::Done(fail(RowStatus::ApiFailed, &reason)))));
    }
    out
}

/// Hands rows this worker holds over to carrier request `request_id` as soon as the carrier answered, before
/// anything else is sent (a worker that dies now leaves the least to check), then applies any result that already
/// came for it. A failure to record leaves the rows to the worker's lease: reclaimed, they are checked on the
/// carrier before anything is sent again.
pub(crate) async fn wait_on(job: &Job, carrier: &dyn AsyncCarrier, request_id: &str, rows: &[&DeviceChangeRow]) {
    let now = job.clock.now();
    let deadline = now + chrono::Duration::from_std(carrier.result_wait(job)).unwrap_or_default();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    match job.waits.await_carrier(job.bulk.id, &ids, &job.worker_id, request_id, now, deadline).await {
        Ok(n) => {
            info!(bulk_change_id = job.bulk.id, request_id, rows = n, %deadline, "rows wait for the carrier's result");
            match carrier.after_wait(job, request_id).await {
                Ok(0) => {}
                Ok(n) => info!(request_id, results = n, "results that came before the request id applied"),
                Err(e) => warn!(request_id, error = %e, "early results not applied; polling will settle the rows"),
            }
        }
        Err(e) => error!(request_id, error = %e, "could not record the carrier request id on its rows"),
    }
}

/// Returns a row held under `request_id` to the workers with its (failed) result, after a request the carrier
/// did not take; the next claim records it. A row that cannot be handed back stays under the request and is
/// settled when polled.
pub(crate) async fn hand_back(
    job: &Job,
    request_id: &str,
    row: DeviceChangeRow,
    result: &CarrierResult,
) -> (DeviceChangeRow, Disposition) {
    let text = serde_json::to_string(result).unwrap_or_default();
    let now = job.clock.now();
    if let Err(e) = job.waits.hand_back_with_result(job.bulk.id, row.id, &carrier_owner(request_id), &text, now).await {
        error!(iccid = %row.iccid, error = %e, "could not hand the row back; it is settled when polled");
    }
    (row, Disposition::HandedBack)
}

/// Records a result that came from outside a worker (a callback) on the row waiting on `request_id`, once, as the
/// request's lease holder. With `follow_up`, the result is kept on the row and the row handed back to the workers
/// (its Rev.io steps remain); otherwise `outcome` completes the row. Returns `false` when the row was already
/// final or held by a poller (nothing changed). A bulk change thereby finished, or a row handed back, is queued
/// so that a worker sends the summary or runs the steps.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_result(
    store: &(impl CarrierWaits + Outcomes + BulkChanges + crate::ports::Rollouts + ?Sized),
    queue: &dyn Queue,
    bulk: &BulkChange,
    row: &DeviceChangeRow,
    request_id: &str,
    outcome: &RowOutcome,
    follow_up: Option<&CarrierResult>,
    description: &str,
    call: &CallRecord,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let owner = carrier_owner(request_id);
    let recorded = match follow_up {
        Some(result) => {
            let result = serde_json::to_string(result)
                .map_err(|e| StoreError::Corrupt(format!("carrier result not serialisable: {e}")))?;
            store.hand_back_with_result(bulk.id, row.id, &owner, &result, now).await?
        }
        None => store.complete_row(bulk.tenant_id, bulk.id, row.id, &owner, outcome, now).await?,
    };
    if !recorded {
        return Ok(false);
    }
    let error = (outcome.status != RowStatus::Processed).then_some(outcome.details.as_str());
    let entry = audit::entry(bulk.id, row.id, description, call, error, now);
    if let Err(e) = store.append_log(&entry).await {
        warn!(bulk_change_id = bulk.id, iccid = %row.iccid, error = %e, "audit log write failed");
    }
    if follow_up.is_some() {
        if let Err(e) = queue.send(&WorkMessage::new(bulk.id), Duration::ZERO).await {
            warn!(bulk_change_id = bulk.id, error = %e, "could not queue the row's next steps; the scheduler will");
        }
    } else if store.finalize_bulk_change(bulk.id, now).await?.is_some_and(|s| s.is_final()) {
        // The worker that takes this message finds the bulk change final and sends its summary once.
        if let Err(e) = queue.send(&WorkMessage::new(bulk.id), Duration::ZERO).await {
            warn!(bulk_change_id = bulk.id, error = %e, "could not queue the finished bulk change; the scheduler will");
        }
    } else if bulk.request.canary.is_some() {
        // A canary whose last result this was: a worker decides now (pause, continue or abort) rather than when the
        // rows' result wait ends.
        let progress = store.rollout_progress(bulk.id).await?;
        if !progress.canary_passed && progress.started > 0 && progress.finished >= progress.started {
            if let Err(e) = queue.send(&WorkMessage::new(bulk.id), Duration::ZERO).await {
                warn!(bulk_change_id = bulk.id, error = %e, "could not queue a finished canary; its result wait will");
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use domain::RowStatus;
    use domain::request::ChangeDetails;

    use super::*;
    use crate::fakes::{self, MemStore, WORKER};

    const ICCIDS: [&str; 3] = ["89148000008245116615", "89148000008245116623", "89148000008245116631"];

    /// A carrier that answers polls from a script and records what it was asked.
    #[derive(Default)]
    struct Scripted {
        poll_answers: Mutex<BTreeMap<String, PollAnswer>>,
        finished: Mutex<Vec<(i64, CarrierResult)>>,
        polled: Mutex<Vec<(String, Vec<i64>)>>,
        sent: Mutex<Vec<i64>>,
    }

    #[async_trait]
    impl AsyncCarrier for Scripted {
        fn name(&self) -> &'static str {
            "Scripted"
        }
        async fn send(&self, _job: &Job, rows: Vec<DeviceChangeRow>) -> Vec<(DeviceChangeRow, Disposition)> {
            self.sent.lock().expect("sent").extend(rows.iter().map(|r| r.id));
            rows.into_iter().map(|r| (r, Disposition::Done(fail(RowStatus::Processed, "sent")))).collect()
        }
        async fn poll(&self, _job: &Job, request_id: &str, rows: &[DeviceChangeRow]) -> PollAnswer {
            self.polled.lock().expect("polled").push((request_id.into(), rows.iter().map(|r| r.id).collect()));
            self.poll_answers.lock().expect("answers").remove(request_id).unwrap_or(PollAnswer::Pending)
        }
        async fn finish(&self, _job: &Job, row: &DeviceChangeRow, result: &CarrierResult) -> RowOutcome {
            self.finished.lock().expect("finished").push((row.id, result.clone()));
            fail(if result.success { RowStatus::Processed } else { RowStatus::ApiFailed }, "finished")
        }
    }

    /// Rows of bulk change 7 held by the worker under test, as a claim returns them.
    fn claimed(store: &Arc<MemStore>) -> (Job, Vec<DeviceChangeRow>) {
        let devices: Vec<_> = ICCIDS.iter().enumerate().map(|(n, i)| store.add_device(n as i64 + 1, i)).collect();
        let bulk = store.add_bulk_change(7, &ChangeDetails::DeleteDevice, &devices);
        let mut s = store.state();
        for r in s.rows.iter_mut() {
            r.row.status = RowStatus::Processing;
            r.row.claims = 1;
            r.owner = Some(WORKER.into());
        }
        let rows = s.rows.iter().map(|r| r.row.clone()).collect();
        drop(s);
        (fakes::job(store.clone(), bulk, ChangeDetails::DeleteDevice), rows)
    }

    #[tokio::test]
    async fn stored_results_are_finished_waiting_rows_polled_by_request_and_fresh_rows_sent() {
        let store = MemStore::with_jasper_account();
        let (job, mut rows) = claimed(&store);
        let now = Utc::now();
        rows[0].carrier_result = Some(r#"{"success":true,"reason":null,"msisdn":"15550001","ip_address":null}"#.into());
        rows[1].carrier_request_id = Some("req-1".into());
        rows[1].carrier_requested_at = Some(now);
        let carrier = Scripted::default();
        let failed = CarrierResult { success: false, reason: Some("refused".into()), ..CarrierResult::default() };
        carrier
            .poll_answers
            .lock()
            .expect("answers")
            .insert("req-1".into(), PollAnswer::Results([(2, failed.clone())].into()));

        let out = process(&job, &carrier, rows, now).await;

        let statuses: Vec<(i64, RowStatus)> = out
            .iter()
            .map(|(r, d)| match d {
                Disposition::Done(o) => (r.id, o.status),
                other => panic!("row {} not done: {other:?}", r.id),
            })
            .collect();
        assert_eq!(statuses, [(1, RowStatus::Processed), (2, RowStatus::ApiFailed), (3, RowStatus::Processed)]);
        let finished = carrier.finished.lock().expect("finished").clone();
        assert_eq!(finished[0].0, 1);
        assert_eq!(finished[0].1.msisdn.as_deref(), Some("15550001"), "the stored result, read back");
        assert_eq!(finished[1], (2, failed));
        assert_eq!(*carrier.polled.lock().expect("polled"), [("req-1".to_string(), vec![2])]);
        assert_eq!(*carrier.sent.lock().expect("sent"), [3], "only the fresh row is sent");
    }

    #[tokio::test]
    async fn a_pending_request_waits_again_until_its_give_up_time_then_fails_its_rows() {
        let store = MemStore::with_jasper_account();
        let (job, mut rows) = claimed(&store);
        let now = Utc::now();
        rows.truncate(2);
        rows[0].carrier_request_id = Some("old".into());
        rows[0].carrier_requested_at = Some(now - chrono::Duration::hours(2));
        rows[1].carrier_request_id = Some("young".into());
        rows[1].carrier_requested_at = Some(now - chrono::Duration::minutes(5));

        let out = process(&job, &Scripted::default(), rows, now).await;

        match &out[0] {
            (row, Disposition::Done(o)) if row.id == 1 => {
                assert_eq!(o.status, RowStatus::ApiFailed);
                assert_eq!(o.details, "No result from carrier for request old after 120 minutes");
            }
            other => panic!("the old request's row gives up: {other:?}"),
        }
        assert_eq!(out[1].1, Disposition::Await("young".into()));
        let s = store.state();
        let young = s.rows.iter().find(|r| r.row.id == 2).expect("row 2");
        assert_eq!(young.owner.as_deref(), Some("carrier:young"), "handed to its request again");
        assert!(young.until.is_some_and(|u| u > now), "until a new deadline");
    }
}
