//! `ignis agent sync` end to end: the real binary against the ElevenLabs stand-in
//! (`driver::sim::agent::AgentService`) on loopback, through `ELEVENLABS_API_BASE`. The
//! stand-in's workspace is the ground truth: what the sync created, changed and wrote.

#[path = "common/scratch.rs"]
mod scratch;

use std::process::{Command, Output};

use ignis::driver::sim::agent::{AgentService, AgentServiceOptions};
use ignis::setup::agent::{FIRST_MESSAGE, TOOL_FILES, secret_name};
use ignis::sim::elevenlabs_api::{Write, sample_agent};
use scratch::TempDir;
use serde_json::{Value, json};

const KEY: &str = "sk_sync_test_key_0123456789abcdef";
const AGENT: &str = "agent_sync_0001";
const TOKEN: &str = "tools-token-sync-test-0123456789abcdef";
const TOKEN_2: &str = "tools-token-rotated-9876543210fedcba";
const PUBLIC: &str = "https://ignis.example.com";

async fn service() -> AgentService {
    let opts = AgentServiceOptions {
        agent_id: AGENT.into(),
        api_key: KEY.into(),
        signature: "sig".into(),
    };
    let svc = AgentService::start(opts, |_| async {}).await.unwrap();
    svc.workspace().seed_agent(sample_agent(AGENT));
    svc
}

/// Runs `ignis agent sync` with a clean environment (no `.env`: its own directory).
async fn sync(base: &str, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ignis"));
    let dir = TempDir::new("agent-sync");
    c.env_clear().current_dir(&dir);
    if let Ok(path) = std::env::var("PATH") {
        c.env("PATH", path);
    }
    c.env("PUBLIC_URL", PUBLIC)
        .env("TWILIO_AUTH_TOKEN", "twilio-token-0123456789")
        .env("ELEVENLABS_API_BASE", base)
        .env("ELEVENLABS_API_KEY", KEY)
        .env("ELEVENLABS_AGENT_ID", AGENT)
        .env("TOOLS_TOKEN", TOKEN);
    for (k, v) in vars {
        if v.is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    c.args(["agent", "sync"]).args(args);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    drop(dir);
    out
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The output, checked for exit code 0 and for never showing a secret.
fn ok(o: &Output) -> String {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for secret in [TOKEN, TOKEN_2, KEY] {
        assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
    }
    out
}

fn writes(svc: &AgentService) -> Vec<Write> {
    svc.workspace().writes.clone()
}

fn tool_id(svc: &AgentService, name: &str) -> String {
    svc.workspace().tool_named(name).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_run_sets_everything_and_a_second_run_writes_nothing() {
    let svc = service().await;
    let first = ok(&sync(&svc.base(), &[], &[]).await);
    println!("--- first sync ---\n{first}");
    assert!(first.contains("+ secret ignis_tools_"), "{first}");
    assert!(first.contains("+ tool find_slots: webhook GET https://ignis.example.com/api/"));
    assert!(first.contains("asr.user_input_audio_format: \"pcm_16000\" → \"ulaw_8000\""));
    let w = svc.workspace().clone();
    // One secret, seven tools, one agent PATCH.
    assert_eq!(w.writes.len(), 9, "{:?}", w.writes);
    assert_eq!(w.secrets.len(), 1);
    assert_eq!(w.secrets[0].name, secret_name(TOKEN));
    assert_eq!(w.secrets[0].value, format!("Bearer {TOKEN}"));
    assert_eq!(w.tools.len(), 7);
    let agent = w.agent(AGENT).unwrap();
    let conv = &agent["conversation_config"];
    let attached = conv["agent"]["prompt"]["tool_ids"].as_array().unwrap();
    for (name, _) in TOOL_FILES {
        let tool = w.tool_named(name).unwrap();
        assert!(attached.contains(&tool["id"]), "{name} not attached");
        let c = &tool["tool_config"];
        if c["type"] == "webhook" {
            let url = c["api_schema"]["url"].as_str().unwrap();
            assert!(url.starts_with("https://ignis.example.com/api/"), "{url}");
            let headers = &c["api_schema"]["request_headers"];
            assert_eq!(
                headers["Authorization"],
                json!({"secret_id": w.secrets[0].id})
            );
            assert_eq!(
                headers["X-Ignis-Call"],
                json!({"variable_name": "secret__ignis_call"})
            );
        } else {
            assert_eq!(c["expects_response"], true, "{name}");
        }
    }
    assert_eq!(conv["agent"]["first_message"], FIRST_MESSAGE);
    assert!(FIRST_MESSAGE.contains("KI-") && FIRST_MESSAGE.contains("{{practice_name}}"));
    assert_eq!(conv["agent"]["disable_first_message_interruptions"], true);
    assert_eq!(conv["agent"]["language"], "de");
    assert_eq!(conv["asr"]["user_input_audio_format"], "ulaw_8000");
    assert_eq!(conv["tts"]["agent_output_audio_format"], "ulaw_8000");
    assert_eq!(conv["conversation"]["max_duration_seconds"], 600);
    let events = conv["conversation"]["client_events"].as_array().unwrap();
    for e in [
        "audio",
        "interruption",
        "ping",
        "client_tool_call",
        "agent_response",
    ] {
        assert!(events.contains(&json!(e)), "{e}");
    }
    let placeholders = &conv["agent"]["dynamic_variables"]["dynamic_variable_placeholders"];
    assert_eq!(placeholders.as_object().unwrap().len(), 11);
    assert_eq!(
        conv["agent"]["prompt"]["llm"], "gemini-2.0-flash",
        "GOT fields kept"
    );
    let privacy = &agent["platform_settings"]["privacy"];
    assert_eq!(privacy["record_voice"], false);
    assert_eq!(privacy["retention_days"], 30);
    assert!(agent["platform_settings"]["overrides"].is_object());
    // The agent PATCH carried whole sub-objects.
    let patch = w.writes.last().unwrap();
    assert_eq!(patch.path, format!("/v1/convai/agents/{AGENT}"));
    assert!(patch.body["conversation_config"]["turn"].is_object());

    let second = ok(&sync(&svc.base(), &[], &[]).await);
    println!("--- second sync ---\n{second}");
    assert!(second.contains("in sync: nothing to change"), "{second}");
    assert_eq!(writes(&svc).len(), 9, "the second run wrote");
}

/// The shipped `practice.toml` with another doctor and another visit-type code.
fn other_practice(dir: &TempDir) -> String {
    let shipped = include_str!("../practice.toml");
    let text = shipped
        .replace("\"Dr. Schmidt\"", "\"Dr. Weber\"")
        .replace("\"kontrolle\"", "\"sprechstunde\"");
    assert_ne!(text, shipped);
    let path = dir.path().join("practice.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn slots_params(svc: &AgentService) -> Value {
    let id = tool_id(svc, "find_slots");
    svc.workspace().tool(&id).unwrap()["tool_config"]["api_schema"]["query_params_schema"]
        ["properties"]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tools_offer_the_practices_own_visit_types_and_doctors() {
    let svc = service().await;
    ok(&sync(&svc.base(), &[], &[]).await);
    let demo = slots_params(&svc);
    assert_eq!(
        demo["practitioner"]["enum"],
        json!(["Dr. Schmidt", "Dr. Yılmaz"])
    );

    let dir = TempDir::new("agent-sync-practice");
    let practice = other_practice(&dir);
    let out = ok(&sync(&svc.base(), &[("PRACTICE_CONFIG", &practice)], &[]).await);
    assert!(out.contains("~ tool find_slots"), "{out}");
    assert!(out.contains("~ tool book_appointment"), "{out}");
    let own = slots_params(&svc);
    assert_eq!(
        own["practitioner"]["enum"],
        json!(["Dr. Weber", "Dr. Yılmaz"])
    );
    let codes = own["visit_type"]["enum"].as_array().unwrap();
    assert!(codes.contains(&json!("sprechstunde")) && !codes.contains(&json!("kontrolle")));
    let book = tool_id(&svc, "book_appointment");
    assert_eq!(
        svc.workspace().tool(&book).unwrap()["tool_config"]["api_schema"]["request_body_schema"]["properties"]
            ["visit_type"]["enum"],
        own["visit_type"]["enum"]
    );
    assert!(
        ok(&sync(&svc.base(), &[("PRACTICE_CONFIG", &practice)], &[]).await)
            .contains("in sync: nothing to change")
    );

    // A practice.toml that does not parse stops the sync before any request (exit 2).
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[practice\n").unwrap();
    let before = writes(&svc).len();
    let o = sync(
        &svc.base(),
        &[("PRACTICE_CONFIG", bad.to_str().unwrap())],
        &[],
    )
    .await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
    assert_eq!(writes(&svc).len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_description_is_patched_with_the_whole_tool_config() {
    let svc = service().await;
    ok(&sync(&svc.base(), &[], &[]).await);
    let id = tool_id(&svc, "find_slots");
    let before = svc.workspace().tool(&id).unwrap()["tool_config"].clone();
    svc.workspace().tool_mut(&id).unwrap()["tool_config"]["description"] = json!("edited");
    let out = ok(&sync(&svc.base(), &[], &[]).await);
    assert!(
        out.contains(&format!("~ tool find_slots ({id}): replaced whole")),
        "{out}"
    );
    assert!(out.contains("description: \"edited\" →"), "{out}");
    let w = writes(&svc);
    assert_eq!(w.len(), 10, "one PATCH, no agent write: {w:?}");
    let patch = &w[9];
    assert_eq!(
        (patch.method.as_str(), patch.path.clone()),
        ("PATCH", format!("/v1/convai/tools/{id}"))
    );
    let sent = &patch.body["tool_config"];
    assert_eq!(sent["description"], before["description"]);
    assert_eq!(
        sent["api_schema"], before["api_schema"],
        "the whole config is sent"
    );
    assert_eq!(sent["name"], "find_slots");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_tool_is_reported_and_kept() {
    let svc = service().await;
    let foreign = svc
        .workspace()
        .seed_tool(json!({"type": "webhook", "name": "weather", "description": "Wetter",
                          "api_schema": {"url": "https://weather.example.org/v1", "method": "GET"}}))
        .unwrap();
    {
        let mut w = svc.workspace();
        let mut agent = w.agent(AGENT).unwrap().clone();
        agent["conversation_config"]["agent"]["prompt"]["tool_ids"] = json!([foreign]);
        w.seed_agent(agent);
    }
    let out = ok(&sync(&svc.base(), &[], &[]).await);
    assert!(
        out.contains(&format!(
            "! tool weather ({foreign}) is attached but not one of ignis's tools: kept"
        )),
        "{out}"
    );
    let w = svc.workspace();
    let ids = &w.agent(AGENT).unwrap()["conversation_config"]["agent"]["prompt"]["tool_ids"];
    assert_eq!(ids[0], foreign.as_str());
    assert_eq!(ids.as_array().unwrap().len(), 8);
    assert!(w.tool(&foreign).is_some());
}

/// Two deployments share a workspace: staging's tools (same names, its own host, attached to
/// its own agent) are never taken over by production's sync, which makes its own; and an
/// unattached tool already on production's host (from a run that stopped before the agent was
/// changed) is reused, not duplicated.
#[tokio::test(flavor = "multi_thread")]
async fn another_deployments_tools_are_left_alone_and_ours_are_reused() {
    let svc = service().await;
    let staging = svc
        .workspace()
        .seed_tool(json!({"type": "webhook", "name": "find_slots", "description": "Staging",
                          "api_schema": {"url": "https://staging.example.net/api/appointments/slots",
                                         "method": "GET"}}))
        .unwrap();
    let leftover = svc
        .workspace()
        .seed_tool(
            json!({"type": "webhook", "name": "book_appointment", "description": "old",
                          "api_schema": {"url": format!("{PUBLIC}/api/appointments"),
                                         "method": "POST"}}),
        )
        .unwrap();
    ok(&sync(&svc.base(), &[], &[]).await);
    let w = svc.workspace();
    let untouched = &w.tool(&staging).unwrap()["tool_config"];
    assert_eq!(
        untouched["api_schema"]["url"],
        "https://staging.example.net/api/appointments/slots"
    );
    assert_eq!(untouched["description"], "Staging");
    let ids = w.agent(AGENT).unwrap()["conversation_config"]["agent"]["prompt"]["tool_ids"].clone();
    let ids: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!ids.contains(&staging.as_str()), "{ids:?}");
    assert!(ids.contains(&leftover.as_str()), "{ids:?}");
    let named = |n: &str| {
        w.tools
            .iter()
            .filter(|t| t["tool_config"]["name"] == n)
            .count()
    };
    assert_eq!((named("find_slots"), named("book_appointment")), (2, 1));
    // The inline `prompt.tools` the GET returned was not sent back.
    assert!(
        w.agent(AGENT).unwrap()["conversation_config"]["agent"]["prompt"]
            .get("tools")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_writes_nothing() {
    let svc = service().await;
    let before = svc.workspace().agent(AGENT).unwrap().clone();
    let out = ok(&sync(&svc.base(), &[], &["--dry-run"]).await);
    assert!(
        out.contains("(dry run)") && out.contains("+ tool report_emergency"),
        "{out}"
    );
    assert!(
        out.contains("dry run: ") && out.contains("nothing written"),
        "{out}"
    );
    assert!(writes(&svc).is_empty());
    assert!(svc.workspace().secrets.is_empty());
    assert_eq!(svc.workspace().agent(AGENT).unwrap(), &before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_tools_token_makes_a_new_secret_and_repoints_the_tools() {
    let svc = service().await;
    ok(&sync(&svc.base(), &[], &[]).await);
    let out = ok(&sync(&svc.base(), &[("TOOLS_TOKEN", TOKEN_2)], &[]).await);
    assert!(
        out.contains(&format!("+ secret {}", secret_name(TOKEN_2))),
        "{out}"
    );
    let w = svc.workspace().clone();
    assert_eq!(w.secrets.len(), 2);
    let new = &w.secrets[1];
    assert_eq!(new.value, format!("Bearer {TOKEN_2}"));
    let webhooks: Vec<&Value> = w
        .tools
        .iter()
        .filter(|t| t["tool_config"]["type"] == "webhook")
        .collect();
    assert_eq!(webhooks.len(), 6);
    for t in webhooks {
        assert_eq!(
            t["tool_config"]["api_schema"]["request_headers"]["Authorization"]["secret_id"],
            new.id.as_str()
        );
    }
    // 9 writes before, then the secret and six PATCHes.
    assert_eq!(w.writes.len(), 16, "{:?}", w.writes);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_exits_2_and_a_refusal_exits_1() {
    let svc = service().await;
    let o = sync(&svc.base(), &[("TOOLS_TOKEN", "")], &[]).await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("TOOLS_TOKEN is not set"), "{err}");
    let o = sync(&svc.base(), &[("ELEVENLABS_API_KEY", "")], &[]).await;
    assert_eq!(o.status.code(), Some(2));
    let o = sync(&svc.base(), &[("ELEVENLABS_API_KEY", "sk_\u{7}bell")], &[]).await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("control character"), "{err}");
    let bad_ca = [("EXTRA_CA_FILE", "/nonexistent/ignis-ca.pem")];
    let o = sync(&svc.base(), &bad_ca, &[]).await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("EXTRA_CA_FILE: "), "{err}");
    let o = sync(
        &svc.base(),
        &[("ELEVENLABS_API_KEY", "sk_wrong_key_000000")],
        &[],
    )
    .await;
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("401 Invalid API key"), "{err}");
    assert!(writes(&svc).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setting_the_service_drops_fails_the_sync_naming_it() {
    let svc = service().await;
    let field = "conversation_config.conversation.max_duration_seconds";
    svc.workspace().ignored_on_patch.push(field.into());
    let o = sync(&svc.base(), &[], &[]).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    // Stopped, not "done": the service holds only part of what was planned.
    assert!(
        out.contains("stopped after") && !out.contains("done:"),
        "{out}"
    );
    assert!(
        err.contains("accepted the agent update but still shows other values for")
            && err.contains(field),
        "{err}"
    );
    // Only the dropped field: the rest took.
    assert!(!err.contains("asr."), "{err}");
    assert!(!err.contains(TOKEN) && !out.contains(TOKEN));
    // Without the knob the same sync goes through and the next one finds nothing to do.
    svc.workspace().ignored_on_patch.clear();
    ok(&sync(&svc.base(), &[], &[]).await);
    let again = ok(&sync(&svc.base(), &[], &[]).await);
    assert!(again.contains("in sync: nothing to change"), "{again}");
}
