//! Placeholder: filled in by its own change (issue 13).

use crate::cli::TwilioConfigureArgs;
use crate::driver::startup::StartError;

/// Not built yet: refuses with exit code 2.
pub fn configure(_args: &TwilioConfigureArgs) -> Result<(), StartError> {
    Err(StartError::Usage("not built yet".into()))
}

/// Not built in this branch: the doctor's Twilio checks, skipped.
pub(crate) async fn doctor_checks(
    _config: &crate::config::Config,
    _tls: &std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    _now: std::time::SystemTime,
) -> Vec<crate::setup::Check> {
    ["twilio_number", "twilio_alerts"]
        .into_iter()
        .map(|id| crate::setup::Check::skip(id, "not built in this branch"))
        .collect()
}
