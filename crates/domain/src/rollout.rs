//! Rollout control of a bulk change (issue 21): the operator's own pace, a canary, an abort rule. All optional;
//! without them a bulk change runs every device at the carrier account's pace, as before.

use serde::{Deserialize, Serialize};

use crate::request::FieldError;

/// The largest `MaxPerMinute` accepted (a carrier account's pace is far below it).
pub const MAX_PER_MINUTE: u32 = 100_000;

/// `Canary` as the request sends it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CanaryWire {
    /// How many devices go first.
    pub devices: Option<i64>,
    /// `Continue` (the default: the rest follow once the first are final and the abort rule holds) or `Pause`
    /// (a person looks first and resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<String>,
}

/// `AbortWhen` as the request sends it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct AbortWhenWire {
    /// Stop when more than this share of the final rows failed (0 < x ≤ 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_percent: Option<f64>,
    /// Only once at least this many rows are final (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_processed: Option<i64>,
    /// Stop when more than this many rows failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryThen {
    Continue,
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    pub devices: u32,
    pub then: CanaryThen,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbortWhen {
    pub failed_percent: Option<f64>,
    pub min_processed: u32,
    pub count: Option<u32>,
}

impl AbortWhen {
    /// Whether the rule trips on these figures (rows final after a carrier call, of which `failed` failed); the
    /// reason names the rule and the figures.
    pub fn tripped(&self, processed: u64, failed: u64) -> Option<String> {
        if processed < u64::from(self.min_processed) || processed == 0 {
            return None;
        }
        let percent = failed as f64 * 100.0 / processed as f64;
        if let Some(limit) = self.failed_percent
            && percent > limit
        {
            return Some(format!(
                "aborted: {failed} of {processed} processed rows failed ({percent:.0} %) > {limit} %"
            ));
        }
        if let Some(limit) = self.count
            && failed > u64::from(limit)
        {
            return Some(format!("aborted: {failed} of {processed} processed rows failed > {limit}"));
        }
        None
    }
}

/// The rollout settings of one bulk change.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rollout {
    /// Devices a minute this bulk change may start (the account's shared pace still applies).
    pub max_per_minute: Option<u32>,
    pub canary: Option<Canary>,
    pub abort_when: Option<AbortWhen>,
}

impl Rollout {
    /// Checks the settings as sent, pushing one error per problem, each naming its field.
    pub fn from_wire(
        max_per_minute: Option<i64>,
        canary: Option<&CanaryWire>,
        abort_when: Option<&AbortWhenWire>,
        errors: &mut Vec<FieldError>,
    ) -> Self {
        let max_per_minute = max_per_minute.and_then(|n| match u32::try_from(n) {
            Ok(n) if (1..=MAX_PER_MINUTE).contains(&n) => Some(n),
            _ => {
                errors.push(FieldError::new(
                    "MaxPerMinute",
                    format!(
                        "MaxPerMinute must be a whole number from 1 to {MAX_PER_MINUTE} (devices a minute); got {n}"
                    ),
                ));
                None
            }
        });
        let canary = canary.and_then(|c| {
            let devices = match c.devices.map(u32::try_from) {
                Some(Ok(n)) if n >= 1 => Some(n),
                Some(_) => {
                    errors
                        .push(FieldError::new("Canary.Devices", "Canary.Devices must be a whole number of at least 1"));
                    None
                }
                None => {
                    errors.push(FieldError::new("Canary.Devices", "Canary.Devices is required with Canary"));
                    None
                }
            };
            let then = match c.then.as_deref() {
                None | Some("Continue") => Some(CanaryThen::Continue),
                Some("Pause") => Some(CanaryThen::Pause),
                Some(other) => {
                    errors.push(FieldError::new(
                        "Canary.Then",
                        format!("Canary.Then must be Continue or Pause; got '{other}'"),
                    ));
                    None
                }
            };
            Some(Canary { devices: devices?, then: then? })
        });
        let abort_when = abort_when.and_then(|a| {
            let mut ok = true;
            if a.failed_percent.is_none() && a.count.is_none() {
                errors.push(FieldError::new("AbortWhen", "AbortWhen needs FailedPercent, Count or both"));
                ok = false;
            }
            let failed_percent = match a.failed_percent {
                Some(p) if p.is_finite() && p > 0.0 && p <= 100.0 => Some(p),
                Some(p) => {
                    errors.push(FieldError::new(
                        "AbortWhen.FailedPercent",
                        format!("AbortWhen.FailedPercent must be above 0 and at most 100; got {p}"),
                    ));
                    ok = false;
                    None
                }
                None => None,
            };
            let min_processed = match a.min_processed.map(u32::try_from) {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    errors.push(FieldError::new(
                        "AbortWhen.MinProcessed",
                        "AbortWhen.MinProcessed must be a whole number of at least 0",
                    ));
                    ok = false;
                    0
                }
            };
            let count = match a.count.map(u32::try_from) {
                None => None,
                Some(Ok(n)) => Some(n),
                Some(Err(_)) => {
                    errors.push(FieldError::new(
                        "AbortWhen.Count",
                        "AbortWhen.Count must be a whole number of at least 0",
                    ));
                    ok = false;
                    None
                }
            };
            ok.then_some(AbortWhen { failed_percent, min_processed, count })
        });
        Self { max_per_minute, canary, abort_when }
    }

    /// The settings as stored (checked at intake): what a worker reads back.
    pub fn stored(
        max_per_minute: Option<i64>,
        canary: Option<&CanaryWire>,
        abort_when: Option<&AbortWhenWire>,
    ) -> Self {
        Self::from_wire(max_per_minute, canary, abort_when, &mut Vec::new())
    }

    pub fn canary_wire(&self) -> Option<CanaryWire> {
        self.canary.map(|c| CanaryWire {
            devices: Some(i64::from(c.devices)),
            then: Some(match c.then {
                CanaryThen::Continue => "Continue".into(),
                CanaryThen::Pause => "Pause".into(),
            }),
        })
    }

    pub fn abort_when_wire(&self) -> Option<AbortWhenWire> {
        self.abort_when.map(|a| AbortWhenWire {
            failed_percent: a.failed_percent,
            min_processed: Some(i64::from(a.min_processed)),
            count: a.count.map(i64::from),
        })
    }

    /// Whether any setting asks the store to gate the claims (canary or abort rule).
    pub fn gates_claims(&self) -> bool {
        self.canary.is_some() || self.abort_when.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(max: Option<i64>, canary: Option<CanaryWire>, abort: Option<AbortWhenWire>) -> (Rollout, Vec<String>) {
        let mut errors = Vec::new();
        let r = Rollout::from_wire(max, canary.as_ref(), abort.as_ref(), &mut errors);
        (r, errors.into_iter().map(|e| e.field).collect())
    }

    #[test]
    fn defaults_keep_todays_behaviour() {
        let (r, errors) = check(None, None, None);
        assert_eq!((r, errors.len()), (Rollout::default(), 0));
        assert!(!r.gates_claims());
    }

    #[test]
    fn every_bad_setting_names_its_field() {
        let (_, errors) = check(
            Some(0),
            Some(CanaryWire { devices: Some(0), then: Some("Later".into()) }),
            Some(AbortWhenWire { failed_percent: Some(140.0), min_processed: Some(-1), count: Some(-2) }),
        );
        assert_eq!(
            errors,
            [
                "MaxPerMinute",
                "Canary.Devices",
                "Canary.Then",
                "AbortWhen.FailedPercent",
                "AbortWhen.MinProcessed",
                "AbortWhen.Count"
            ]
        );
        let (_, errors) = check(None, Some(CanaryWire::default()), Some(AbortWhenWire::default()));
        assert_eq!(errors, ["Canary.Devices", "AbortWhen"]);
    }

    #[test]
    fn good_settings_are_read_and_stored_as_sent() {
        let canary = CanaryWire { devices: Some(50), then: Some("Pause".into()) };
        let abort = AbortWhenWire { failed_percent: Some(10.0), min_processed: Some(100), count: None };
        let (r, errors) = check(Some(600), Some(canary), Some(abort));
        assert!(errors.is_empty());
        assert_eq!(r.max_per_minute, Some(600));
        assert_eq!(r.canary, Some(Canary { devices: 50, then: CanaryThen::Pause }));
        let back = Rollout::stored(Some(600), r.canary_wire().as_ref(), r.abort_when_wire().as_ref());
        assert_eq!(back, r);
    }

    #[test]
    fn the_abort_rule_trips_past_its_threshold_only_after_its_minimum() {
        let rule = AbortWhen { failed_percent: Some(10.0), min_processed: 100, count: None };
        assert_eq!(rule.tripped(99, 50), None, "not before the minimum");
        assert_eq!(rule.tripped(100, 10), None, "10 % is not above 10 %");
        assert_eq!(rule.tripped(80, 13), None);
        assert_eq!(rule.tripped(100, 11).as_deref(), Some("aborted: 11 of 100 processed rows failed (11 %) > 10 %"));
        let by_count = AbortWhen { failed_percent: None, min_processed: 0, count: Some(5) };
        assert_eq!(by_count.tripped(6, 5), None);
        assert_eq!(by_count.tripped(7, 6).as_deref(), Some("aborted: 6 of 7 processed rows failed > 5"));
    }
}
