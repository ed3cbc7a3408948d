//! The local notifier: each e-mail becomes an `.eml` file in `OUTBOX_DIR` (and a log line). The file is named by
//! the subject, which names the bulk change: an e-mail sent again (a sender that died between sending and recording
//! it, see `engine::notify`) replaces the first rather than adding a second.

use std::path::PathBuf;

use async_trait::async_trait;
use engine::ports::{Email, Notifier, NotifyError};

pub struct OutboxNotifier {
    pub dir: PathBuf,
}

#[async_trait]
impl Notifier for OutboxNotifier {
    async fn send(&self, email: &Email) -> Result<String, NotifyError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| NotifyError(format!("cannot create outbox {}: {e}", self.dir.display())))?;
        let now = chrono::Utc::now();
        let path = self.dir.join(format!("{}.eml", slug(&email.subject)));
        // Written beside, then renamed: a reader never sees half an e-mail, and a second send replaces the first.
        let partial = self.dir.join(format!(".{}.eml.partial", slug(&email.subject)));
        let message = format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}",
            email.from,
            email.to.join(", "),
            email.subject,
            now.to_rfc2822(),
            email.body.replace('\n', "\r\n")
        );
        tokio::fs::write(&partial, message)
            .await
            .map_err(|e| NotifyError(format!("cannot write {}: {e}", partial.display())))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| NotifyError(format!("cannot move the e-mail to {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), subject = %email.subject, "e-mail written to the outbox");
        Ok(path.display().to_string())
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}
