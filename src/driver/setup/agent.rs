//! Placeholder: filled in by its own change (issue 13).

use crate::cli::AgentSyncArgs;
use crate::driver::startup::StartError;

/// Not built yet: refuses with exit code 2.
pub fn sync(_args: &AgentSyncArgs) -> Result<(), StartError> {
    Err(StartError::Usage("not built yet".into()))
}

/// Not built in this branch: the doctor's agent checks, skipped.
pub(crate) async fn doctor_checks(
    _config: &crate::config::Config,
    _tls: &std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
) -> Vec<crate::setup::Check> {
    ["agent_signed_url", "agent_tools", "agent_settings"]
        .into_iter()
        .map(|id| crate::setup::Check::skip(id, "not built in this branch"))
        .collect()
}
