//! Transfers a live call to the practice's staff: Twilio REST "update call" with `<Dial>` to the
//! number the bridge chose (docs/twilio.md §5.2), for the agent's `transfer_to_staff` client tool.

use std::fmt;
use std::sync::Arc;

use tokio_rustls::rustls::ClientConfig;
use tracing::{info, warn};

use super::net::{self, RequestError};
use crate::config::Config;
use crate::http::client::ResponseError;
use crate::twilio::{rest, twiml};

/// The REST request gets this many connect timeouts in all: one to connect (TCP, TLS), one to
/// write the request and read Twilio's answer.
const REST_TIMEOUT_IN_CONNECT_TIMEOUTS: u32 = 2;

/// Why a transfer did not happen.
#[derive(Debug)]
enum TransferError {
    /// `TWILIO_ACCOUNT_SID` is not set.
    NoAccount,
    /// The request could not be built (bad API base or SIDs).
    Request(rest::UpdateCallError),
    /// Twilio could not be reached or its answer could not be read.
    Rest(RequestError<ResponseError>),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NoAccount => f.write_str("TWILIO_ACCOUNT_SID is not set"),
            TransferError::Request(e) => write!(f, "{e}"),
            TransferError::Rest(e) => write!(f, "Twilio REST API: {e}"),
        }
    }
}

/// Replaces the call's TwiML with a `<Dial>` to `number`. Returns whether Twilio accepted it.
pub(crate) async fn transfer_to_staff(
    config: &Config,
    tls: &Arc<ClientConfig>,
    number: &str,
    call_sid: &str,
) -> bool {
    match update_call(config, tls, number, call_sid).await {
        Ok(status) if (200..300).contains(&status) => {
            info!(status, "[Twilio] Call transferred to staff");
            true
        }
        Ok(status) => {
            // 404 with code 20404: the call already ended (docs/twilio.md §5.2).
            warn!(status, "[Twilio] Transfer refused");
            false
        }
        Err(e) => {
            warn!(error = %e, "[Twilio] Transfer failed");
            false
        }
    }
}

/// Sends the call update; the HTTP status Twilio answered.
async fn update_call(
    config: &Config,
    tls: &Arc<ClientConfig>,
    number: &str,
    call_sid: &str,
) -> Result<u16, TransferError> {
    let account_sid = config
        .twilio_account_sid
        .as_deref()
        .ok_or(TransferError::NoAccount)?;
    let (ep, req) = rest::update_call_request(
        &config.twilio_api_base,
        account_sid,
        config.twilio_auth_token.expose(),
        call_sid,
        &twiml::dial(number),
    )
    .map_err(TransferError::Request)?;
    net::request(
        &ep,
        tls,
        &req,
        config.elevenlabs_connect_timeout * REST_TIMEOUT_IN_CONNECT_TIMEOUTS,
        rest::MAX_REST_RESPONSE_BYTES,
        rest::parse_status,
    )
    .await
    .map_err(TransferError::Rest)
}
