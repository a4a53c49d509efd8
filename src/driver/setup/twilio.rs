//! Placeholder: filled in by its own change (issue 13).

use crate::cli::TwilioConfigureArgs;
use crate::driver::startup::StartError;

/// Not built yet: refuses with exit code 2.
pub fn configure(_args: &TwilioConfigureArgs) -> Result<(), StartError> {
    Err(StartError::Usage("not built yet".into()))
}
