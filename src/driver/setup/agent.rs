//! `ignis agent sync` and the agent checks of `ignis doctor`: read the configuration, send the
//! requests the core in [`crate::setup::agent`] asks for, print its report. No decisions here.

use std::sync::Arc;

use serde_json::Value;
use tokio_rustls::rustls::ClientConfig;

use super::API_TIMEOUT;
use crate::cli::AgentSyncArgs;
use crate::config::Config;
use crate::driver::net;
use crate::driver::startup::{self, StartError};
use crate::elevenlabs::endpoint;
use crate::http::client::encode_request;
use crate::http::url::Endpoint;
use crate::setup::agent::{
    self as core, AgentSync, ApiCall, ExpectedSecret, ListStep, Listing, Step, ToolVocabulary,
};
use crate::setup::{Check, MAX_API_RESPONSE_BYTES};

/// `ignis agent sync [--dry-run]`: exit 0 done or in sync, 1 the service refused or failed,
/// 2 bad configuration.
pub fn sync(args: &AgentSyncArgs) -> Result<(), StartError> {
    let (config, tls) = super::load()?;
    let practice = startup::practice_config(config.practice.config_path.as_deref())?;
    let settings =
        core::sync_settings(&config, &practice).map_err(|e| StartError::Usage(e.to_string()))?;
    println!(
        "agent {} on {}{}",
        settings.agent_id,
        config.elevenlabs_api_base,
        if args.dry_run { " (dry run)" } else { "" }
    );
    let mut sync = AgentSync::new(settings, args.dry_run);
    let rt = startup::runtime()?;
    let result = rt.block_on(run(&config, &tls, &mut sync));
    let report = match result {
        Ok(()) => sync.report(),
        Err(_) => sync.report_stopped(),
    };
    for line in report.lines {
        println!("{line}");
    }
    result.map_err(StartError::Failed)
}

/// Drives `sync` to its end: each request it asks for, sent, and its answer fed back.
async fn run(config: &Config, tls: &Arc<ClientConfig>, sync: &mut AgentSync) -> Result<(), String> {
    loop {
        let call = match sync.poll() {
            Step::Call(call) => call,
            Step::Done(_) => return Ok(()),
        };
        let (status, body) = send(config, tls, &call).await?;
        sync.handle_response(status, &body)
            .map_err(|e| e.to_string())?;
    }
}

/// Sends one API request with the key; the status and body (any status).
async fn send(
    config: &Config,
    tls: &Arc<ClientConfig>,
    call: &ApiCall,
) -> Result<(u16, Vec<u8>), String> {
    let base = &config.elevenlabs_api_base;
    let key = config
        .elevenlabs_api_key
        .as_ref()
        .map(|k| k.expose())
        .unwrap_or_default();
    let ep = Endpoint::parse(&format!("{base}{}", call.target))
        .map_err(|e| format!("ELEVENLABS_API_BASE: {e}"))?;
    let body = call.body.as_ref().map(|b| b.to_string().into_bytes());
    let req = encode_request(
        call.method,
        &ep,
        &[("xi-api-key", key), ("Accept", "application/json")],
        body.as_deref().map(|b| ("application/json", b)),
    )
    .map_err(|_| "ELEVENLABS_API_KEY holds a control character".to_owned())?;
    let resp = net::exchange(&ep, tls, &req, API_TIMEOUT, MAX_API_RESPONSE_BYTES)
        .await
        .map_err(|e| format!("{} {base}{}: {e}", call.method, path_only(&call.target)))?;
    Ok((resp.status, resp.body))
}

fn path_only(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

/// A GET of `target` answered 2xx with JSON, or why not.
async fn get_json(
    config: &Config,
    tls: &Arc<ClientConfig>,
    target: String,
) -> Result<Value, String> {
    let call = ApiCall {
        method: "GET",
        target,
        body: None,
    };
    let (status, body) = send(config, tls, &call).await?;
    if !(200..300).contains(&status) {
        return Err(format!("GET {} answered {status}", path_only(&call.target)));
    }
    serde_json::from_slice(&body).map_err(|_| format!("GET {}: not JSON", path_only(&call.target)))
}

/// Every item of a list endpoint: the pages the core's [`Listing`] asks for.
async fn list_all(
    config: &Config,
    tls: &Arc<ClientConfig>,
    mut listing: Listing,
) -> Result<Vec<Value>, String> {
    loop {
        match listing.poll() {
            ListStep::Get(target) => {
                let page = get_json(config, tls, target).await?;
                listing.handle(&page).map_err(|e| e.to_string())?;
            }
            ListStep::Done(items) => return Ok(items),
        }
    }
}

/// The agent checks of `ignis doctor`: `agent_signed_url`, `agent_tools`, `agent_settings`;
/// skipped when `ELEVENLABS_API_KEY` or `ELEVENLABS_AGENT_ID` is unset.
pub(crate) async fn doctor_checks(config: &Config, tls: &Arc<ClientConfig>) -> Vec<Check> {
    const IDS: [&str; 3] = ["agent_signed_url", "agent_tools", "agent_settings"];
    let (Some(key), Some(agent_id)) = (&config.elevenlabs_api_key, &config.elevenlabs_agent_id)
    else {
        let why = "ELEVENLABS_API_KEY or ELEVENLABS_AGENT_ID is not set";
        return IDS.iter().map(|id| Check::skip(id, why)).collect();
    };
    let signed =
        match endpoint::signed_url_request(&config.elevenlabs_api_base, agent_id, key.expose()) {
            Ok((ep, req)) => net::request(
                &ep,
                tls,
                &req,
                API_TIMEOUT,
                endpoint::MAX_SIGNED_URL_RESPONSE_BYTES,
                endpoint::parse_signed_url_response,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
    let mut checks = vec![core::check_signed_url(signed)];
    let agent = match get_json(config, tls, core::agent_target(agent_id)).await {
        Ok(a) => a,
        Err(why) => {
            let fix = "check ELEVENLABS_API_KEY (its workspace must own the agent) and \
                       ELEVENLABS_AGENT_ID";
            checks.push(Check::fail(IDS[1], why.clone(), fix));
            checks.push(Check::fail(IDS[2], why, fix));
            return checks;
        }
    };
    let origin = config.public_url.http_url("");
    let tools = list_all(config, tls, Listing::tools()).await;
    let token = config.practice.tools_token.as_ref().map(|t| t.expose());
    let secret = match token {
        Some(t) => list_all(config, tls, Listing::secrets(t)).await,
        None => Ok(Vec::new()),
    }
    .map(|secrets| ExpectedSecret::find(token, &secrets));
    let practice = startup::practice_config(config.practice.config_path.as_deref());
    checks.push(match (tools, secret, practice) {
        (Ok(tools), Ok(secret), Ok(practice)) => {
            let words = ToolVocabulary::of(&practice);
            core::check_tools(&agent, &tools, &origin, &secret, &words)
        }
        (Err(why), _, _) | (_, Err(why), _) => Check::fail(IDS[1], why, "check ELEVENLABS_API_KEY"),
        (_, _, Err(e)) => Check::fail(IDS[1], e.to_string(), "fix PRACTICE_CONFIG"),
    });
    checks.push(core::check_settings(
        &agent,
        config.elevenlabs_record_voice,
        config.elevenlabs_retention_days,
    ));
    checks
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::driver::sim::agent::{AgentService, AgentServiceOptions};
    use crate::setup::Status;
    use crate::sim::elevenlabs_api::sample_agent;

    fn config(base: &str, with_key: bool) -> Config {
        let mut vars: HashMap<String, String> = [
            ("PUBLIC_URL", "https://ignis.example.com"),
            ("TWILIO_AUTH_TOKEN", "twilio-token-0123456789"),
            ("ELEVENLABS_API_BASE", base),
            ("ELEVENLABS_AGENT_ID", "agent_d"),
            ("TOOLS_TOKEN", "tools-token-doctor-0123456789"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if with_key {
            vars.insert("ELEVENLABS_API_KEY".into(), "sk_doctor_key_0123".into());
        }
        Config::from_vars(&vars, false).unwrap()
    }

    fn statuses(checks: &[Check]) -> Vec<(&'static str, Status)> {
        checks.iter().map(|c| (c.id, c.status)).collect()
    }

    #[tokio::test]
    async fn doctor_checks_follow_the_agent_through_a_sync() {
        let opts = AgentServiceOptions {
            agent_id: "agent_d".into(),
            api_key: "sk_doctor_key_0123".into(),
            signature: "sig".into(),
        };
        let svc = AgentService::start(opts, |_| async {}).await.unwrap();
        svc.workspace().seed_agent(sample_agent("agent_d"));
        let tls = net::tls_config(None).unwrap();
        let skipped = doctor_checks(&config(&svc.base(), false), &tls).await;
        assert!(
            skipped.iter().all(|c| c.status == Status::Skip),
            "{skipped:?}"
        );

        let config = config(&svc.base(), true);
        let before = doctor_checks(&config, &tls).await;
        assert_eq!(
            statuses(&before),
            [
                ("agent_signed_url", Status::Pass),
                ("agent_tools", Status::Fail),
                ("agent_settings", Status::Fail)
            ],
            "{before:?}"
        );
        assert!(
            before[2].detail.contains("pcm_16000"),
            "{}",
            before[2].detail
        );

        let demo = crate::practice::config::PracticeConfig::demo();
        let settings = core::sync_settings(&config, &demo).unwrap();
        run(&config, &tls, &mut AgentSync::new(settings, false))
            .await
            .unwrap();
        let after = doctor_checks(&config, &tls).await;
        assert!(after.iter().all(|c| c.status == Status::Pass), "{after:?}");

        let id = svc.workspace().tool_named("find_slots").unwrap()["id"].clone();
        let url = "https://old-host.example.net/api/appointments/slots";
        svc.workspace().tool_mut(id.as_str().unwrap()).unwrap()["tool_config"]["api_schema"]["url"] =
            json!(url);
        let moved = doctor_checks(&config, &tls).await;
        assert_eq!(moved[1].status, Status::Fail);
        assert!(
            moved[1]
                .detail
                .contains("find_slots points at old-host.example.net")
        );
        assert_eq!(moved[1].fix.as_deref(), Some("run `ignis agent sync`"));
    }
}
