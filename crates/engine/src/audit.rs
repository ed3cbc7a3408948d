//! Audit log entries and the redaction that keeps credentials out of them.

use chrono::{DateTime, Utc};

use crate::ports::{CallRecord, LogEntry};

const SECRET_KEYS: &[&str] = &["password", "apikey", "api_key", "secret", "token", "subscription-key", "authorization"];

/// Masks the values of secret-looking JSON fields and header lines, so no request text carries a credential.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let lower = line.to_ascii_lowercase();
        if let Some((name, _)) = line.split_once(':').filter(|(n, _)| !n.contains('"') && !n.contains(' ')) {
            if SECRET_KEYS.iter().any(|k| name.to_ascii_lowercase().contains(k)) {
                out.push_str(name);
                out.push_str(": ***");
                continue;
            }
        }
        if SECRET_KEYS.iter().any(|k| lower.contains(k)) {
            out.push_str(&redact_json_values(line));
        } else {
            out.push_str(line);
        }
    }
    out
}

fn redact_json_values(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(mut value) => {
            mask(&mut value);
            value.to_string()
        }
        Err(_) => "*** (redacted: contained a credential)".to_string(),
    }
}

fn mask(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                if SECRET_KEYS.iter().any(|s| k.contains(s)) {
                    *v = serde_json::Value::String("***".into());
                } else {
                    mask(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// A log entry for one carrier or billing call (or a step without a call when `call` is empty).
pub fn entry(
    bulk_change_id: i64,
    row_id: i64,
    description: &str,
    call: &CallRecord,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> LogEntry {
    LogEntry {
        bulk_change_id,
        device_change_id: Some(row_id),
        description: description.to_string(),
        request_text: redact(&format!("{description}\n{}", call.request_text)),
        response_text: call.response_text.clone(),
        response_status: match (error, call.http_status) {
            (None, _) => "PROCESSED".to_string(),
            (Some(_), Some(status)) => format!("ERROR (HTTP {status})"),
            (Some(_), None) => "ERROR".to_string(),
        },
        has_errors: error.is_some(),
        error_text: error.map(str::to_string),
        processed_date: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_and_json_secrets_are_masked() {
        let text = "PUT http://cc/devices/1\nAuthorization: Basic dXNlcjprZXk=\n{\"status\":\"ACTIVATED\",\"apiKey\":\"k-123\"}";
        let red = redact(text);
        assert!(!red.contains("dXNlcjprZXk="), "{red}");
        assert!(!red.contains("k-123"), "{red}");
        assert!(red.contains("\"status\":\"ACTIVATED\""));
        assert!(red.starts_with("PUT http://cc/devices/1\nAuthorization: ***"));
    }

    #[test]
    fn plain_text_is_untouched() {
        let text = "Update Jasper Status\nPUT /rws/api/v1/devices/1\n{\"status\":\"DEACTIVATED\"}";
        assert_eq!(redact(text), text);
    }
}
