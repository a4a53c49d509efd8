//! `ignis twilio configure` and the doctor's Twilio checks: sends the requests the core in
//! [`crate::setup::twilio`] builds and prints its report. Decisions are the core's.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls::ClientConfig;

use crate::cli::TwilioConfigureArgs;
use crate::config::Config;
use crate::driver::net;
use crate::driver::startup::{StartError, runtime};
use crate::http::client::ClientResponse;
use crate::setup::twilio::{
    self as core, ALERT_LEVELS, ApiRequest, DoctorPlan, IncomingNumber, NumberSearch, SearchStep,
    SetupError, TwilioAuth,
};
use crate::setup::{Check, MAX_API_RESPONSE_BYTES};

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
        super::API_TIMEOUT,
        MAX_API_RESPONSE_BYTES,
    )
    .await
    .map_err(|e| SetupError::Unreachable(req.endpoint.host_header(), e.to_string()))
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
    let (config, tls) = super::load()?;
    let (number, auth, desired) =
        core::configure_target(&config, args.number.as_deref()).map_err(failed)?;
    runtime()?.block_on(async {
        let n = find(auth.clone(), &number, &tls).await.map_err(failed)?;
        let plan = core::plan(&n, &desired).map_err(|r| failed(SetupError::Refused(r)))?;
        // Masked like every number ignis prints (the doctor's report, errors).
        println!(
            "ignis twilio configure: {} ({}), credentials: {}",
            crate::privacy::mask_phone(&plan.number),
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
pub(crate) async fn doctor_checks(
    config: &Config,
    tls: &Arc<ClientConfig>,
    now: SystemTime,
) -> Vec<Check> {
    let (auth, number) = match core::doctor_plan(config) {
        DoctorPlan::Skip(checks) => return checks,
        DoctorPlan::Ask { auth, number } => (auth, number),
    };
    let number = match number {
        Err(check) => check,
        Ok((number, desired)) => match find(auth.clone(), &number, tls).await {
            Ok(n) => core::number_check(&n, &desired),
            Err(e) => core::number_error_check(&e),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::driver::sim::twilio_api::TwilioApiServer;
    use crate::setup::Status;
    use crate::sim::twilio_api::{Alert, PhoneNumber, TwilioApi};

    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    fn config(base: &str, token: &str) -> Config {
        let vars: HashMap<String, String> = [
            ("PUBLIC_URL", "https://ignis.example.com"),
            ("TWILIO_AUTH_TOKEN", token),
            ("TWILIO_ACCOUNT_SID", AC),
            ("TWILIO_PHONE_NUMBER", "+493012345678"),
            ("TWILIO_API_BASE", base),
            ("TWILIO_MONITOR_API_BASE", base),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Config::from_vars(&vars, false).unwrap()
    }

    #[tokio::test]
    async fn doctor_checks_the_number_and_this_deployments_alerts() {
        let now = SystemTime::now();
        let t = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let mut api = TwilioApi::new(AC, "the-auth-token-1");
        let mut n = PhoneNumber::new("PN1", "+493012345678");
        n.voice_url = Some("https://ignis.example.com/api/twilio/voice".into());
        n.status_callback = Some("https://ignis.example.com/api/twilio/status".into());
        n.voice_method = "GET".into();
        api.numbers.push(n);
        let url = "wss://ignis.example.com/api/twilio/stream";
        api.alerts = vec![
            Alert::new("NO1", "31920", "error", url, "CA1", t - 600),
            Alert::new(
                "NO2",
                "11200",
                "error",
                "https://elsewhere.example/v",
                "CA2",
                t - 60,
            ),
            Alert::new("NO3", "31930", "warning", url, "CA3", t - 2 * 86_400),
        ];
        let server = TwilioApiServer::start(api).await.unwrap();
        let tls = net::tls_config(None).unwrap();

        let checks = doctor_checks(&config(&server.base(), "the-auth-token-1"), &tls, now).await;
        let (number, alerts) = (&checks[0], &checks[1]);
        assert_eq!((number.id, number.status), ("twilio_number", Status::Fail));
        assert!(number.detail.contains("VoiceMethod is GET"), "{number}");
        assert!(
            number
                .fix
                .as_deref()
                .unwrap()
                .contains("ignis twilio configure")
        );
        assert_eq!((alerts.id, alerts.status), ("twilio_alerts", Status::Fail));
        assert!(alerts.detail.starts_with("1 alert(s)"), "{alerts}");
        assert!(
            alerts.fix.as_deref().unwrap().contains("Upgrade"),
            "{alerts}"
        );

        server.state().numbers[0].voice_method = "POST".into();
        server.state().alerts.clear();
        let checks = doctor_checks(&config(&server.base(), "the-auth-token-1"), &tls, now).await;
        assert!(
            checks.iter().all(|c| c.status == Status::Pass),
            "{checks:?}"
        );

        let checks = doctor_checks(&config(&server.base(), "a-wrong-token-1"), &tls, now).await;
        for c in &checks {
            assert_eq!(c.status, Status::Fail);
            assert!(
                c.fix.as_deref().unwrap().starts_with("credentials refused"),
                "{c}"
            );
        }

        // Nothing listens: both checks fail with the network fix.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let checks = doctor_checks(&config(&closed_base, "the-auth-token-1"), &tls, now).await;
        for c in &checks {
            assert_eq!(c.status, Status::Fail);
            assert!(c.detail.contains("unreachable"), "{c}");
        }

        let mut cfg = config(&server.base(), "the-auth-token-1");
        cfg.twilio_account_sid = None;
        let checks = doctor_checks(&cfg, &tls, now).await;
        assert!(checks.iter().all(|c| c.status == Status::Skip));
    }
}
