//! The shipped agent files agree with the server: routes, headers, enums and prompt variables.

use std::path::PathBuf;

use ignis::practice::calls::DYNAMIC_VARIABLE_NAMES;
use ignis::practice::config::PracticeConfig;
use ignis::practice::tools::{CATEGORIES, is_tool_path};
use serde_json::Value;

fn agent_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agent")
}

fn tools() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(agent_dir().join("tools")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((
            path.file_stem().unwrap().to_string_lossy().into_owned(),
            v["tool_config"].clone(),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn six_tools_with_both_headers_and_known_routes() {
    let mut tools = tools();
    // The seventh file is the client tool the bridge answers (agent/README.md).
    let at = tools
        .iter()
        .position(|(n, _)| n == ignis::bridge::TOOL_TRANSFER)
        .expect("transfer_to_staff.json");
    let (_, transfer) = tools.remove(at);
    assert_eq!(transfer["type"], "client");
    assert_eq!(transfer["name"], ignis::bridge::TOOL_TRANSFER);
    assert_eq!(transfer["expects_response"], true);
    let names: Vec<&str> = tools.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "book_appointment",
            "cancel_appointment",
            "create_request",
            "find_slots",
            "identify_patient",
            "report_emergency"
        ]
    );
    for (name, t) in &tools {
        assert_eq!(t["name"], name.as_str());
        assert_eq!(t["type"], "webhook");
        // ElevenLabs' `auto` hides a webhook tool's error from the model; `passthrough` gives it the
        // raw body, so a 422 `invalid_input` naming its `field` lets the agent correct itself
        // (docs/elevenlabs.md §5.1).
        assert_eq!(t["tool_error_handling_mode"], "passthrough", "{name}");
        let timeout = t["response_timeout_secs"].as_u64().unwrap();
        assert!((5..=20).contains(&timeout), "{name}");
        let api = &t["api_schema"];
        assert!(
            api["request_headers"]["Authorization"]["secret_id"].is_string(),
            "{name}"
        );
        assert_eq!(
            api["request_headers"]["X-Ignis-Call"]["variable_name"], "secret__ignis_call",
            "{name}"
        );
        let url = api["url"].as_str().unwrap();
        let path = url
            .strip_prefix("https://IGNIS_HOST")
            .unwrap()
            .replace("{appointment_ref}", "A1");
        assert!(is_tool_path(&path), "{name}: {path}");
        let method = api["method"].as_str().unwrap();
        assert_eq!(
            method == "GET",
            name == "find_slots",
            "only find_slots is a GET (no personal data)"
        );
    }
}

#[test]
fn enums_match_the_practice_configuration() {
    let config = PracticeConfig::demo();
    // Every visit type, the staff-only ones too: the model names what the caller asks for and
    // gets `not_phone_bookable` rather than booking the nearest bookable code
    // (docs/elevenlabs.md §10.5).
    let codes: Vec<&str> = config.visit_types.iter().map(|v| v.code.as_str()).collect();
    assert!(config.visit_types.iter().any(|v| !v.phone_bookable));
    let tools = tools();
    let find = |n: &str| tools.iter().find(|(name, _)| name == n).unwrap().1.clone();
    let enum_of = |v: &Value| -> Vec<String> {
        v["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let fs = find("find_slots");
    assert_eq!(
        enum_of(&fs["api_schema"]["query_params_schema"]["properties"]["visit_type"]),
        codes
    );
    let who = enum_of(&fs["api_schema"]["query_params_schema"]["properties"]["practitioner"]);
    let displays: Vec<String> = config
        .practitioners
        .iter()
        .map(|p| p.display.clone())
        .collect();
    assert_eq!(who, displays);
    let book = find("book_appointment");
    assert_eq!(
        enum_of(&book["api_schema"]["request_body_schema"]["properties"]["visit_type"]),
        codes
    );
    let req = find("create_request");
    assert_eq!(
        enum_of(&req["api_schema"]["request_body_schema"]["properties"]["category"]),
        CATEGORIES
    );
}

#[test]
fn the_prompt_only_references_variables_the_bridge_sends() {
    let prompt = std::fs::read_to_string(agent_dir().join("prompt.md")).unwrap();
    let mut rest = prompt.as_str();
    let mut seen = 0;
    while let Some(i) = rest.find("{{") {
        let end = rest[i..].find("}}").expect("closed variable") + i;
        let name = &rest[i + 2..end];
        assert!(
            DYNAMIC_VARIABLE_NAMES.contains(&name),
            "prompt references unknown variable {name:?}"
        );
        assert!(
            !name.starts_with("secret__"),
            "secrets never go into the prompt"
        );
        seen += 1;
        rest = &rest[end + 2..];
    }
    assert!(seen >= 7);
    assert!(
        prompt.find("112").unwrap() < prompt.find("identify_patient").unwrap(),
        "the 112 rule comes first"
    );
}

/// Every business answer a tool can give is named in the prompt, so the agent follows a rule
/// written for it; only the transport's and the server's own failures are left to the prompt's
/// general rule (apologise, never say it is done, offer the team or a call-back).
#[test]
fn the_prompt_names_every_business_error_code() {
    const LEFT_TO_THE_GENERAL_RULE: [&str; 8] = [
        "admin_disabled",
        "call_not_active",
        "forbidden",
        "internal",
        "method_not_allowed",
        "no_call",
        "too_large",
        "unauthorized",
    ];
    let prompt = std::fs::read_to_string(agent_dir().join("prompt.md")).unwrap();
    let errors = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/practice/tools/error.rs"),
    )
    .unwrap();
    let code_fn = &errors[errors.find("pub fn code(&self)").unwrap()..];
    let code_fn = &code_fn[..code_fn.find("pub fn status").unwrap()];
    let codes: Vec<&str> = code_fn
        .split("=> \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(codes.len() > 30, "{codes:?}");
    let missing: Vec<&&str> = codes
        .iter()
        .filter(|c| !LEFT_TO_THE_GENERAL_RULE.contains(c))
        .filter(|c| !prompt.contains(&format!("`{c}`")) && !prompt.contains(&format!("= {c}`")))
        .collect();
    assert!(missing.is_empty(), "not in agent/prompt.md: {missing:?}");
}
