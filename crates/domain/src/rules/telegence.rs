//! Telegence's rules: the move a line can make, and what opening a line needs.

use super::*;

/// What a Telegence status update does to one SIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelegenceMove {
    /// The SIM has no line: a new service is activated (asynchronous, by request id).
    Activate,
    /// `PATCH` `mode` with this code: `A` restores a suspended line ([guess]: the reference does not say which
    /// mode a restore uses), `S` suspends, `C` cancels.
    Patch(&'static str),
    /// Our database says the line is there already; the line is read to confirm before nothing is sent.
    Already,
}

/// The move from a line's `current` status (`A`, `S`, `C`, or `UNKNOWN` for a SIM without a line) to `target`;
/// `has_line` when the device has a subscriber number. Why not, otherwise.
pub fn telegence_status_move(has_line: bool, current: &str, target: &str) -> Result<TelegenceMove, String> {
    let (current, target) = (current.to_ascii_uppercase(), target.to_ascii_uppercase());
    match (target.as_str(), has_line, current.as_str()) {
        ("UNKNOWN", _, _) => Err("'No line' is not a status a line can be moved to; use A, S or C".into()),
        ("A", false, _) => Ok(TelegenceMove::Activate),
        (_, false, _) => Err(format!("the SIM has no Telegence line (no MSISDN) to move to {target}")),
        (_, true, "C") if target != "C" => {
            Err("the line is cancelled; a cancelled line cannot change status (activate a new service)".into())
        }
        (t, true, c) if t == c => Ok(TelegenceMove::Already),
        ("A", true, _) => Ok(TelegenceMove::Patch("A")),
        ("S", true, "A") => Ok(TelegenceMove::Patch("S")),
        ("S", true, _) => Err(format!("only an active line can be suspended (the line is {current})")),
        ("C", true, _) => Ok(TelegenceMove::Patch("C")),
        _ => Err(format!("unknown Telegence status '{target}'; use A, S or C")),
    }
}

/// What activating a new Telegence line needs: a billing account (9 to 12 digits), a rate plan and a 5-digit ZIP.
/// Returns the reason, naming the field, when something is missing.
pub fn validate_telegence_activation(
    ban: Option<&str>,
    plan: Option<&str>,
    zip: Option<&str>,
) -> Result<(), (&'static str, String)> {
    let given = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let ban = given(ban).ok_or(("BillingAccountNumber", "BillingAccountNumber is required to open a line".into()))?;
    if !(9..=12).contains(&ban.len()) || !ban.bytes().all(|b| b.is_ascii_digit()) {
        return Err(("BillingAccountNumber", format!("BillingAccountNumber '{ban}' must be 9 to 12 digits")));
    }
    given(plan).ok_or(("RatePlan", "RatePlan (the SOC) is required to open a line".into()))?;
    let zip = given(zip).ok_or(("ServiceZipCode", "ServiceZipCode is required to open a line".into()))?;
    validate_zip(&zip).map_err(|e| ("ServiceZipCode", e.to_string()))
}

#[cfg(test)]
mod telegence_tests {
    use super::*;

    #[test]
    fn status_moves_follow_the_line() {
        use TelegenceMove::*;
        assert_eq!(telegence_status_move(false, "UNKNOWN", "A"), Ok(Activate));
        assert_eq!(telegence_status_move(true, "S", "a"), Ok(Patch("A")));
        assert_eq!(telegence_status_move(true, "A", "S"), Ok(Patch("S")));
        assert_eq!(telegence_status_move(true, "S", "C"), Ok(Patch("C")));
        assert_eq!(telegence_status_move(true, "A", "A"), Ok(Already));
        assert!(telegence_status_move(true, "C", "A").unwrap_err().contains("cancelled"));
        assert!(telegence_status_move(false, "UNKNOWN", "S").unwrap_err().contains("no Telegence line"));
        assert!(telegence_status_move(true, "A", "UNKNOWN").is_err());
        assert!(telegence_status_move(true, "UNKNOWN", "S").unwrap_err().contains("only an active line"));
    }

    #[test]
    fn a_new_line_needs_its_billing_account_plan_and_zip() {
        assert_eq!(validate_telegence_activation(Some("287301234567"), Some("SOC"), Some("75201")), Ok(()));
        assert_eq!(
            validate_telegence_activation(None, Some("SOC"), Some("75201")).unwrap_err().0,
            "BillingAccountNumber"
        );
        assert_eq!(
            validate_telegence_activation(Some("12ab"), Some("SOC"), Some("75201")).unwrap_err().0,
            "BillingAccountNumber"
        );
        assert_eq!(
            validate_telegence_activation(Some("287301234567"), Some(" "), Some("75201")).unwrap_err().0,
            "RatePlan"
        );
        assert_eq!(
            validate_telegence_activation(Some("287301234567"), Some("SOC"), Some("7520")).unwrap_err().0,
            "ServiceZipCode"
        );
    }
}
