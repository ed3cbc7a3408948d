//! Pond IoT processors: a status update enables or disables every service of the SIM; a
//! carrier rate plan change is a saga over the SIM's packages that never leaves the SIM without an active one:
//!
//! 1. read the SIM's packages **from Pond** (the database's copy can be stale);
//! 2. add a package of the plan's type (`JasperRatePlanId`), unless an earlier attempt left one `PENDING`, which
//!    is reused (a change is never applied twice);
//! 3. set the new package `ACTIVE` — a failure here leaves the old packages untouched (the row says so);
//! 4. set each other `ACTIVE` package `TERMINATED` — a failure here leaves the SIM on the new, active package
//!    and the row names every package still to terminate (the legacy system could terminate the new one instead). A retry
//!    finds the new package active and terminates only what is left.
//!
//! The device's plan is written only once the new package is active (never before the carrier took it).

use std::sync::Arc;

use domain::RowStatus;
use domain::request::{ChangeDetails, StatusUpdate};
use domain::rules::{DeviceStatusDef, resolve_target_status};

use super::Carriers;
use crate::change;
use crate::common::{api_failed_or_error, device_for_row, device_now, fail, writes_disabled};
use crate::job::Carrier;
use crate::job::Job;
use crate::ports::ServiceProvider;
use crate::ports::{CarrierFailure, DeviceChangeRow, DeviceUpdate, FailureKind, RowOutcome};
use crate::rate::RateLimiters;

pub(crate) mod intake;
mod port;

pub use port::*;

const ACTIVE: &str = "ACTIVE";
const PENDING: &str = "PENDING";
const TERMINATED: &str = "TERMINATED";

/// Whether a Pond status enables every service (`ACTIVE`) or disables them (`INACTIVE`); other statuses are not
/// Pond's (refused at intake, and here).
pub fn services_enabled_for(status: &str) -> Option<bool> {
    match status.trim().to_ascii_uppercase().as_str() {
        "ACTIVE" => Some(true),
        "INACTIVE" => Some(false),
        _ => None,
    }
}

fn pond_failure(f: &CarrierFailure, what: &str) -> RowOutcome {
    fail(api_failed_or_error(f), format!("Pond: {what}: {}", f.reason()))
}

/// StatusUpdate: enable or disable every service of the SIM, then the request's Rev.io steps (service line,
/// customer). A lost answer is settled by reading the status.
pub(crate) async fn status(
    job: &Job,
    api: &dyn PondApi,
    row: &DeviceChangeRow,
    req: &StatusUpdate,
    target: &DeviceStatusDef,
) -> RowOutcome {
    let outcome = change_services(job, api, row, target).await;
    if outcome.status != RowStatus::Processed {
        return outcome;
    }
    match device_now(job, row).await {
        Ok((device, _)) => change::rev_io_steps(job, row, req, &device, outcome).await,
        Err(failed) => failed,
    }
}

async fn change_services(job: &Job, api: &dyn PondApi, row: &DeviceChangeRow, target: &DeviceStatusDef) -> RowOutcome {
    let Some(enable) = services_enabled_for(&target.status) else {
        return fail(
            RowStatus::Error,
            format!("'{}' is not a Pond status; use Active or Inactive", target.display_name),
        );
    };
    if let Err(outcome) = device_for_row(job, row).await {
        return outcome;
    }
    if !job.sp.write_is_enabled {
        return writes_disabled();
    }
    let done = RowOutcome {
        status: RowStatus::Processed,
        details: format!("Every service {}", if enable { "enabled" } else { "disabled" }),
        device_update: DeviceUpdate { device_status_id: Some(target.id), ..DeviceUpdate::default() },
    };
    let description = if enable { "Pond Enable All Services" } else { "Pond Disable All Services" };
    match api.set_services(&row.iccid, enable).await {
        Ok(call) => {
            job.log(row, description, &call, None).await;
            done
        }
        Err(f) if f.kind == FailureKind::Ambiguous => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            match api.services_enabled(&row.iccid).await {
                Ok((now, call)) => {
                    job.log(row, "Pond Get Service Status (the change's answer was lost)", &call, None).await;
                    if now == enable {
                        RowOutcome {
                            details: format!("{} (confirmed after its answer was lost)", done.details),
                            ..done
                        }
                    } else {
                        fail(RowStatus::ApiFailed, format!("Pond: {}; the SIM does not show the change", f.reason()))
                    }
                }
                Err(read) => {
                    job.log(row, "Pond Get Service Status", &read.call, Some(&read.reason())).await;
                    // What failed last is the read: the change may well have taken.
                    fail(
                        api_failed_or_error(&read),
                        format!(
                            "Pond: the change's answer was lost ({}), and reading the service status to settle it \
                             failed: {}; the SIM may show the change",
                            f.reason(),
                            read.reason()
                        ),
                    )
                }
            }
        }
        Err(f) => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            pond_failure(&f, "the service status was not changed")
        }
    }
}

/// CarrierRatePlanChange: the package saga (module docs).
pub(crate) async fn change_plan(job: &Job, api: &dyn PondApi, row: &DeviceChangeRow, plan_code: &str) -> RowOutcome {
    let plan_code = plan_code.trim();
    let Some(plan) = job.rate_plans.iter().find(|p| p.rate_plan_code.eq_ignore_ascii_case(plan_code)) else {
        return fail(RowStatus::Error, format!("Carrier rate plan '{plan_code}' does not exist for this provider"));
    };
    let Some(package_type) = plan.jasper_rate_plan_id else {
        return fail(
            RowStatus::Error,
            format!("Carrier rate plan '{plan_code}' has no Pond package type (JasperRatePlanId)"),
        );
    };
    if let Err(outcome) = device_for_row(job, row).await {
        return outcome;
    }
    if !job.sp.write_is_enabled {
        return writes_disabled();
    }
    // A row taken over or retried may find what an earlier attempt left (`make chaos SEED=374`).
    let earlier = job.may_have_been_sent(row);
    let packages = match read_packages(job, api, row, "Pond Get Packages", earlier).await {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    // 2. The new package: one already active (an earlier attempt got that far), one left pending, or a new one.
    let new = match packages.iter().find(|p| p.package_type_id == package_type && p.status == ACTIVE) {
        Some(active) => active.clone(),
        None => {
            let pending = packages.iter().find(|p| p.package_type_id == package_type && p.status == PENDING).cloned();
            let new = match pending {
                Some(p) => p,
                None => match add_package(job, api, row, package_type).await {
                    Ok(p) => p,
                    Err(outcome) => return outcome,
                },
            };
            // 3. Active before anything is terminated.
            match api.set_package_status(&new.package_id, ACTIVE).await {
                Ok(call) => job.log(row, "Pond Activate Package", &call, None).await,
                Err(f) => {
                    job.log(row, "Pond Activate Package", &f.call, Some(&f.reason())).await;
                    let confirmed = f.kind == FailureKind::Ambiguous
                        && read_packages(job, api, row, "Pond Get Packages (the activation's answer was lost)", true)
                            .await
                            .is_ok_and(|now| now.iter().any(|p| p.package_id == new.package_id && p.status == ACTIVE));
                    if !confirmed {
                        let old = ids(packages.iter().filter(|p| p.status == ACTIVE));
                        return pond_failure(
                            &f,
                            &format!(
                                "new package {} (type {package_type}) was added but not activated; the SIM keeps its \
                                 active package(s) {old} untouched, and a retry reuses the new package",
                                new.package_id
                            ),
                        );
                    }
                }
            }
            PondPackage { status: ACTIVE.into(), ..new }
        }
    };
    // 4. Every other active package terminated (each on its own: the SIM is safe on the new one).
    let old: Vec<&PondPackage> =
        packages.iter().filter(|p| p.status == ACTIVE && p.package_id != new.package_id).collect();
    let mut first_failure = None;
    for package in &old {
        match api.set_package_status(&package.package_id, TERMINATED).await {
            Ok(call) => job.log(row, "Pond Terminate Package", &call, None).await,
            Err(f) => {
                job.log(row, "Pond Terminate Package", &f.call, Some(&f.reason())).await;
                first_failure.get_or_insert(f);
            }
        }
    }
    let device_update =
        DeviceUpdate { carrier_rate_plan: Some(plan.rate_plan_code.clone()), ..DeviceUpdate::default() };
    let done = |settled: &str| RowOutcome {
        status: RowStatus::Processed,
        details: format!(
            "Carrier rate plan changed to {} (package {} active{}){settled}",
            plan.rate_plan_code,
            new.package_id,
            if old.is_empty() { String::new() } else { format!("; terminated {}", ids(old.iter().copied())) }
        ),
        device_update: device_update.clone(),
    };
    let Some(f) = first_failure else { return done("") };
    // A termination failed or lost its answer: what Pond shows now decides what the row says.
    match api.packages(&row.iccid).await {
        Ok((now, call)) => {
            job.log(row, "Pond Get Packages (a termination failed)", &call, None).await;
            let still: Vec<&PondPackage> =
                now.iter().filter(|p| p.status == ACTIVE && p.package_id != new.package_id).collect();
            if still.is_empty() {
                return done(" (confirmed by reading the packages after a termination's answer was lost)");
            }
            RowOutcome {
                status: RowStatus::ApiFailed,
                details: format!(
                    "The SIM is on {} (package {} ACTIVE), but package(s) {} still need terminating: Pond shows them \
                     ACTIVE beside the new one, so the SIM is billed for both until a retry terminates them ({})",
                    plan.rate_plan_code,
                    new.package_id,
                    ids(still.into_iter()),
                    f.reason()
                ),
                device_update,
            }
        }
        Err(read) => {
            job.log(row, "Pond Get Packages (a termination failed)", &read.call, Some(&read.reason())).await;
            RowOutcome {
                status: RowStatus::ApiFailed,
                details: format!(
                    "The SIM is on {} (package {} ACTIVE); terminating its old package(s) failed ({}) and the \
                     packages could not be read again ({}): Pond may still bill the old package(s) {}",
                    plan.rate_plan_code,
                    new.package_id,
                    f.reason(),
                    read.reason(),
                    ids(old.iter().copied())
                ),
                device_update,
            }
        }
    }
}

fn ids<'a>(packages: impl Iterator<Item = &'a PondPackage>) -> String {
    let list: Vec<&str> = packages.map(|p| p.package_id.as_str()).collect();
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

/// The SIM's packages. `changed_maybe`: an earlier attempt, or a write whose answer was lost, may already have added
/// a package, so a failed read says so (the SIM may be billed for two) rather than that nothing changed.
async fn read_packages(
    job: &Job,
    api: &dyn PondApi,
    row: &DeviceChangeRow,
    description: &str,
    changed_maybe: bool,
) -> Result<Vec<PondPackage>, RowOutcome> {
    match api.packages(&row.iccid).await {
        Ok((packages, call)) => {
            job.log(row, description, &call, None).await;
            Ok(packages)
        }
        Err(f) => {
            job.log(row, description, &f.call, Some(&f.reason())).await;
            let what = if changed_maybe {
                "the SIM's packages could not be read, and an earlier attempt (or a write whose answer was lost) may \
                 have added the new package: the SIM may be billed for both its old and new packages until a retry \
                 reads them and settles it"
            } else {
                "the SIM's packages could not be read; nothing was changed"
            };
            Err(pond_failure(&f, what))
        }
    }
}

/// Adds the package; a lost answer is settled by reading the packages (a pending package of the type is the one
/// we added), never by adding again.
async fn add_package(
    job: &Job,
    api: &dyn PondApi,
    row: &DeviceChangeRow,
    package_type: i64,
) -> Result<PondPackage, RowOutcome> {
    match api.add_package(&row.iccid, package_type).await {
        Ok((package, call)) => {
            job.log(row, "Pond Add Package", &call, None).await;
            Ok(package)
        }
        Err(f) if f.kind == FailureKind::Ambiguous => {
            job.log(row, "Pond Add Package", &f.call, Some(&f.reason())).await;
            let now = read_packages(job, api, row, "Pond Get Packages (the add's answer was lost)", true).await?;
            now.into_iter().find(|p| p.package_type_id == package_type && p.status == PENDING).ok_or_else(|| {
                pond_failure(&f, "the answer was lost and the SIM shows no new package; nothing else was changed")
            })
        }
        Err(f) => {
            job.log(row, "Pond Add Package", &f.call, Some(&f.reason())).await;
            Err(pond_failure(&f, "the new package was not added; the SIM keeps its packages"))
        }
    }
}

/// A Pond account's carrier: every change is synchronous, row by row.
pub(crate) fn connect(
    sp: &ServiceProvider,
    carriers: &dyn Carriers,
    limiters: &RateLimiters,
) -> Result<Arc<dyn Carrier>, String> {
    let limiter = limiters.for_provider(sp.id, sp.rate_limit_per_second);
    Ok(Arc::new(Pond { api: carriers.pond(sp, limiter)? }))
}

pub(crate) struct Pond {
    api: Arc<dyn PondApi>,
}

#[async_trait::async_trait]
impl Carrier for Pond {
    async fn process_row(&self, job: &Job, row: &DeviceChangeRow, details: &ChangeDetails) -> Option<RowOutcome> {
        let api = self.api.as_ref();
        Some(match details {
            ChangeDetails::StatusUpdate(req) => {
                match resolve_target_status(&job.statuses, job.sp.integration, &req.target_status) {
                    Some(target) => status(job, api, row, req, &target.clone()).await,
                    None => fail(RowStatus::Error, format!("Unknown target status '{}' for Pond", req.target_status)),
                }
            }
            ChangeDetails::CarrierRatePlanChange(req) => change_plan(job, api, row, &req.carrier_rate_plan).await,
            _ => return None,
        })
    }
}
