//! The set-up commands' drivers: `ignis twilio configure`, `ignis agent sync`, `ignis doctor`.
//! Each reads the configuration, sends the requests its core in [`crate::setup`] builds, feeds
//! the answers back and prints the report. No decisions here.

pub mod agent;
pub mod doctor;
pub mod twilio;

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::ClientConfig;

use super::net;
use super::startup::{StartError, load_vars};
use crate::config::Config;

/// Longest wait for one set-up API exchange (connect, send, whole answer).
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// The configuration and the TLS client set-up every command here needs; an unreadable
/// `EXTRA_CA_FILE` is a usage error (exit 2) like any other bad setting.
fn load() -> Result<(Config, Arc<ClientConfig>), StartError> {
    let vars = load_vars().map_err(StartError::Config)?;
    let config = Config::from_vars(&vars, false).map_err(StartError::Config)?;
    let tls = net::tls_config(config.extra_ca_file.as_deref()).map_err(bad_extra_ca)?;
    Ok((config, tls))
}

/// An unreadable or invalid `EXTRA_CA_FILE` (exit 2).
fn bad_extra_ca(e: std::io::Error) -> StartError {
    StartError::Usage(format!("EXTRA_CA_FILE: {e}"))
}
