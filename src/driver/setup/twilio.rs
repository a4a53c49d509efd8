//! `ignis twilio configure` and the doctor's Twilio checks: sends the requests the core in
//! [`crate::setup::twilio`] builds and prints its report. Decisions are the core's.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls::ClientConfig;

use crate::cli::TwilioConfigureArgs;
use crate::config::Config;
use crate::driver::net;
use crate::driver::startup::{StartError, load_vars, runtime};
use crate::http::client::ClientResponse;
use crate::setup::Check;
use crate::setup::twilio::{
    self as core, ALERT_LEVELS, ApiRequest, Desired, IncomingNumber, MAX_API_RESPONSE_BYTES,
    NumberSearch, SearchStep, SetupError, TwilioAuth,
};

/// Limit of each REST or Monitor exchange (connect, send, read).
const API_TIMEOUT: Duration = Duration::from_secs(20);

fn failed(e: SetupError) -> StartError {
    if e.is_configuration() {
        StartError::Usage(e.to_string())
    } else {
        StartError::Failed(e.to_string())
    }
}

/// Sends one request and reads the whole answer.
async fn send(req: &ApiRequest, tls: &Arc<ClientConfig>) -> Result<ClientResponse, SetupError> {
    net::exchange(
        &req.endpoint,
        tls,
        &req.bytes,
        API_TIMEOUT,
        MAX_API_RESPONSE_BYTES,
    )
    .await
    .map_err(|e| {
        SetupError::Api(core::ApiError {
            status: 0,
            code: None,
            message: format!("{} unreachable: {e}", req.endpoint.host_header()),
        })
    })
}

/// Finds `number` page by page.
async fn find(
    auth: TwilioAuth,
    number: &str,
    tls: &Arc<ClientConfig>,
) -> Result<IncomingNumber, SetupError> {
    let (mut search, mut req) = NumberSearch::start(auth, number)?;
    loop {
        let resp = send(&req, tls).await?;
        match search.on_response(&resp)? {
            SearchStep::Request(next) => req = next,
            SearchStep::Found(n) => return Ok(*n),
        }
    }
}

/// `ignis twilio configure`: exit 0 done or nothing to do, 1 refused or failed, 2 bad
/// configuration.
pub fn configure(args: &TwilioConfigureArgs) -> Result<(), StartError> {
    let vars = load_vars().map_err(StartError::Config)?;
    let config = Config::from_vars(&vars, false).map_err(StartError::Config)?;
    let number = args
        .number
        .clone()
        .or_else(|| config.twilio_phone_number.clone())
        .ok_or_else(|| failed(SetupError::NoNumber))?;
    let auth = TwilioAuth::from_config(&config).ok_or_else(|| failed(SetupError::NoAccountSid))?;
    let desired = Desired::from_config(&config).map_err(failed)?;
    let tls = net::tls_config(config.extra_ca_file.as_deref())
        .map_err(|e| StartError::Usage(format!("EXTRA_CA_FILE: {e}")))?;
    runtime()?.block_on(async {
        let n = find(auth.clone(), &number, &tls).await.map_err(failed)?;
        let plan = core::plan(&n, &desired).map_err(|r| failed(SetupError::Refused(r)))?;
        println!(
            "ignis twilio configure: {} ({}), credentials: {}",
            plan.number,
            plan.sid,
            if auth.uses_api_key() {
                "API key"
            } else {
                "account SID + auth token"
            }
        );
        print!("{}", plan.render());
        let changed = plan.changed();
        if changed.is_empty() {
            println!("already configured: nothing to change");
            return Ok(());
        }
        if args.dry_run {
            println!("dry run: would set {}; nothing changed", changed.join(", "));
            return Ok(());
        }
        let req = core::update_request(&auth, &plan).map_err(failed)?;
        let resp = send(&req, &tls).await.map_err(failed)?;
        core::on_update_response(&resp, &desired).map_err(failed)?;
        println!("set {}: done", changed.join(", "));
        Ok(())
    })
}

/// The doctor's `twilio_number` and `twilio_alerts` checks.
#[allow(dead_code)] // called by `ignis doctor` (its own change)
pub(crate) async fn doctor_checks(
    config: &Config,
    tls: &Arc<ClientConfig>,
    now: SystemTime,
) -> Vec<Check> {
    let Some(auth) = TwilioAuth::from_config(config) else {
        return vec![
            Check::skip("twilio_number", "TWILIO_ACCOUNT_SID is not set"),
            Check::skip("twilio_alerts", "TWILIO_ACCOUNT_SID is not set"),
        ];
    };
    let number = match &config.twilio_phone_number {
        None => Check::skip("twilio_number", "TWILIO_PHONE_NUMBER is not set"),
        Some(number) => match Desired::from_config(config) {
            Err(e) => core::number_error_check(&e),
            Ok(desired) => match find(auth.clone(), number, tls).await {
                Ok(n) => core::number_check(&n, &desired),
                Err(e) => core::number_error_check(&e),
            },
        },
    };
    let now_unix = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let alerts = alerts_check(&auth, config, tls, now_unix).await;
    vec![number, alerts]
}

async fn alerts_check(
    auth: &TwilioAuth,
    config: &Config,
    tls: &Arc<ClientConfig>,
    now_unix: i64,
) -> Check {
    let host = core::public_host(config);
    let mut all = Vec::new();
    let mut truncated = false;
    for level in ALERT_LEVELS {
        let step = async {
            let req = core::alerts_request(auth, level, now_unix)?;
            core::parse_alerts(&send(&req, tls).await?)
        };
        match step.await {
            Ok((alerts, more)) => {
                all.extend(alerts);
                truncated |= more;
            }
            Err(e) => return core::alerts_error_check(&e),
        }
    }
    core::alerts_check(&all, &host, truncated)
}
