//! IMEI ranges of device models, and the eSIM rule of a SIM swap.

use super::*;

/// A range of IMEIs of one device model (`IMEI_DeviceType_CarrierRatePlan`): which SIM the model takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImeiRange {
    pub manufacturer: String,
    pub model: String,
    #[serde(rename = "FromIMEI")]
    pub from_imei: String,
    #[serde(rename = "ToIMEI")]
    pub to_imei: String,
    /// e.g. `pSIM`, `eSIM`, `pSIM+eSIM`.
    #[serde(rename = "SIMType")]
    pub sim_type: String,
}

impl ImeiRange {
    /// Whether the model only takes an eSIM profile: its SIM type names eSIM (the legacy's "contains esim").
    pub fn is_esim(&self) -> bool {
        self.sim_type.to_ascii_lowercase().contains("esim")
    }

    /// Whether `imei` is in the range. Bounds are digit strings of one length (a whole IMEI, or a TAC prefix of
    /// 8 digits): the IMEI's first digits of that length are compared, so 14-, 15- and 16-digit (IMEISV) forms of
    /// one device all fall in the same ranges. A range with malformed bounds holds nothing.
    pub fn contains(&self, imei: &str) -> bool {
        let (from, to, imei) = (self.from_imei.trim(), self.to_imei.trim(), imei.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if from.len() != to.len() || !digits(from) || !digits(to) || !digits(imei) {
            return false;
        }
        let n = from.len().min(imei.len());
        let key = &imei[..n];
        &from[..n] <= key && key <= &to[..n]
    }
}

/// The eSIM rule of a Telegence swap: a device whose current IMEI is in an eSIM-only range cannot be moved to a
/// new IMEI outside every eSIM range (its line would lose its profile). The reason, naming both IMEIs and the
/// model, when refused. Without a new IMEI the device keeps its own and nothing is checked.
pub fn esim_swap_refusal(old_imei: Option<&str>, new_imei: Option<&str>, ranges: &[ImeiRange]) -> Option<String> {
    let (old, new) = (old_imei?.trim(), new_imei?.trim());
    let esim_of = |imei: &str| ranges.iter().find(|r| r.is_esim() && r.contains(imei));
    let model = esim_of(old)?;
    if esim_of(new).is_some() {
        return None;
    }
    Some(format!(
        "ICCID/IMEI swap refused: the device requires an eSIM-compatible IMEI (IMEI {old} is a {} {} with {}); \
         NewIMEI {new} is in no eSIM range",
        model.manufacturer, model.model, model.sim_type
    ))
}

#[cfg(test)]
mod esim_tests {
    use super::*;

    fn range(from: &str, to: &str, sim: &str) -> ImeiRange {
        ImeiRange {
            manufacturer: "Acme".into(),
            model: "Tracker 5".into(),
            from_imei: from.into(),
            to_imei: to.into(),
            sim_type: sim.into(),
        }
    }

    #[test]
    fn ranges_compare_whole_imeis_and_tac_prefixes() {
        let whole = range("356938035643800", "356938035643899", "eSIM");
        assert!(whole.contains("356938035643809"));
        assert!(whole.contains("35693803564380"), "14 digits without the check digit");
        assert!(!whole.contains("356938035643900"));
        let tac = range("35693803", "35693804", "eSIM");
        assert!(tac.contains("356938045643809"));
        assert!(tac.contains("3569380356438012"), "an IMEISV of the same device");
        assert!(!tac.contains("356938055643809"));
        assert!(!range("3569", "35693804", "eSIM").contains("356938035643809"), "bounds of two lengths");
        assert!(!range("35693803", "35693804", "eSIM").contains("35693803A643809"));
    }

    #[test]
    fn an_esim_device_keeps_an_esim_imei() {
        let ranges = vec![range("35693803", "35693803", "pSIM+eSIM"), range("49015420", "49015420", "pSIM")];
        let refusal = esim_swap_refusal(Some("356938035643809"), Some("490154203237518"), &ranges).expect("refused");
        assert!(refusal.contains("356938035643809") && refusal.contains("490154203237518") && refusal.contains("Acme"));
        assert_eq!(esim_swap_refusal(Some("356938035643809"), Some("356938039999999"), &ranges), None);
        assert_eq!(esim_swap_refusal(Some("490154203237518"), Some("356938035643809"), &ranges), None, "to eSIM");
        assert_eq!(esim_swap_refusal(Some("356938035643809"), None, &ranges), None, "ICCID only");
        assert_eq!(esim_swap_refusal(None, Some("490154203237518"), &ranges), None, "no IMEI known");
        assert_eq!(esim_swap_refusal(Some("356938035643809"), Some("490154203237518"), &[]), None, "no ranges");
    }
}
