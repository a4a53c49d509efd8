//! Placeholder: filled in by its own change (issue 13).

use crate::cli::AgentSyncArgs;
use crate::driver::startup::StartError;

/// Not built yet: refuses with exit code 2.
pub fn sync(_args: &AgentSyncArgs) -> Result<(), StartError> {
    Err(StartError::Usage("not built yet".into()))
}
