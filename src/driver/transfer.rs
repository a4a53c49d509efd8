//! Transfers a live call to the practice's staff: Twilio REST "update call" with `<Dial>` to
//! `FALLBACK_NUMBER` (twilio.md §5.2), for the agent's `transfer_to_staff` client tool.

use tracing::{info, warn};

use super::net;
use crate::config::Config;
use crate::twilio::{rest, twiml};

/// Replaces the call's TwiML with a `<Dial>` to `number` (`FALLBACK_NUMBER`, else the
/// practice's staff line). Returns whether Twilio accepted it.
pub(crate) async fn transfer_to_staff(
    config: &Config,
    tls: &std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    number: Option<&str>,
    call_sid: &str,
) -> bool {
    let (Some(account_sid), Some(number)) = (&config.twilio_account_sid, number) else {
        warn!("[Twilio] Transfer requested but TWILIO_ACCOUNT_SID or a staff number is not set");
        return false;
    };
    let twiml = twiml::dial(number);
    let Ok((ep, req)) = rest::update_call_request(
        &config.twilio_api_base,
        account_sid,
        config.twilio_auth_token.expose(),
        call_sid,
        &twiml,
    ) else {
        warn!("[Twilio] Transfer: cannot build the request");
        return false;
    };
    match net::request(
        &ep,
        tls,
        &req,
        config.elevenlabs_connect_timeout * 2,
        rest::MAX_REST_RESPONSE_BYTES,
        rest::parse_status,
    )
    .await
    {
        Ok(status) if (200..300).contains(&status) => {
            info!(status, "[Twilio] Call transferred to staff");
            true
        }
        Ok(status) => {
            // 404 with code 20404: the call already ended (twilio.md §5.2).
            warn!(status, "[Twilio] Transfer refused");
            false
        }
        Err(e) => {
            warn!(error = %e, "[Twilio] Transfer failed");
            false
        }
    }
}
