//! Placeholder: filled in by its own change (issue 13).

use crate::cli::DoctorArgs;
use crate::driver::startup::StartError;

/// Not built yet: refuses with exit code 2.
pub fn run(_args: &DoctorArgs) -> Result<(), StartError> {
    Err(StartError::Usage("not built yet".into()))
}
