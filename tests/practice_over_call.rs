//! The practice tools reached the way ElevenLabs reaches them during a bridged call: the bridge
//! hands the agent a per-call token as `secret__ignis_call`; tool requests need it and the agent
//! secret, and a token works only while its call lives.

mod common;

use std::time::Duration;

use common::fake_twilio::TwilioCall;
use common::scratch::TempDir;
use common::*;
use ignis::practice::demo::{DEMO_BOOKING_SCRIPT, DEMO_CALLER_NUMBER};

const TOOLS_TOKEN: &str = "tools-secret-0123456789";
const T: Duration = Duration::from_secs(10);

/// A server with the practice on a database in a scratch directory; hold the guard (first, so it
/// drops after the server) for the whole test.
async fn server_with_practice(name: &str) -> (TempDir, Server) {
    let dir = TempDir::new(&format!("practice-{name}"));
    let server = Server::start_with_practice_db(&dir.join("ignis.db"), TOOLS_TOKEN, &[]).await;
    (dir, server)
}

fn tool_request(
    method: &str,
    path: &str,
    query: &str,
    body: &str,
    call_token: Option<&str>,
    bearer: &str,
) -> Vec<u8> {
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let call = call_token.map_or(String::new(), |t| format!("X-Ignis-Call: {t}\r\n"));
    format!(
        "{method} {target} HTTP/1.1\r\nHost: ignis\r\nAuthorization: Bearer {bearer}\r\n{call}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn the_agent_gets_a_call_token_that_opens_the_tools_for_that_call_only() {
    let (_dir, server) = server_with_practice("call").await;
    let sid = "CA00000000000000000000000000000001";
    // The demo patient calls from her stored number.
    let mut params = call_params(sid);
    for (k, v) in params.iter_mut() {
        if k == "From" {
            *v = DEMO_CALLER_NUMBER.into();
        }
    }
    let r = roundtrip(&server, &signed_post("/api/twilio/voice", &params, TOKEN)).await;
    assert_eq!(r.status, 200);
    let agent = server.agent.next_conn(T).await;
    let vars = agent.initiation["dynamic_variables"]
        .as_object()
        .unwrap()
        .clone();
    for name in ignis::practice::calls::DYNAMIC_VARIABLE_NAMES {
        assert!(vars.contains_key(name), "{name} missing");
    }
    assert_eq!(vars["caller_number"], DEMO_CALLER_NUMBER);
    let token = vars["secret__ignis_call"].as_str().unwrap().to_owned();

    // The caller's stream adopts that conversation.
    let mut caller = TwilioCall::stream_only(&server, sid).await;

    // Every step of the scripted demo call succeeds with the call's token.
    for step in DEMO_BOOKING_SCRIPT {
        let r = roundtrip(
            &server,
            &tool_request(
                step.method,
                step.path,
                step.query,
                step.body,
                Some(&token),
                TOOLS_TOKEN,
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{}: {}", step.what, r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["ok"], true, "{}: {v}", step.what);
    }

    // Without the call token, with a wrong one, or without the agent secret: refused.
    let identify = &DEMO_BOOKING_SCRIPT[0];
    let identify_as = |call: Option<&str>, secret: &str| {
        tool_request("POST", identify.path, "", identify.body, call, secret)
    };
    let no_call = roundtrip(&server, &identify_as(None, TOOLS_TOKEN)).await;
    assert!(matches!(no_call.status, 401 | 403), "{}", no_call.status);
    let wrong = roundtrip(&server, &identify_as(Some("not-a-call"), TOOLS_TOKEN)).await;
    assert_eq!(wrong.status, 403);
    let no_secret = roundtrip(
        &server,
        &identify_as(Some(&token), "wrong-secret-0123456789"),
    )
    .await;
    assert!(matches!(no_secret.status, 401 | 403));

    // A second call's token cannot reach the first call's refs (P1/A1 belong to call one).
    let sid2 = "CA00000000000000000000000000000002";
    let _ = call_webhook(&server, "/api/twilio/voice", sid2).await;
    let agent2 = server.agent.next_conn(T).await;
    let token2 = agent2.initiation["dynamic_variables"]["secret__ignis_call"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(token, token2);
    let cancel = roundtrip(
        &server,
        &tool_request(
            "POST",
            "/api/appointments/A1/cancel",
            "",
            "{}",
            Some(&token2),
            TOOLS_TOKEN,
        ),
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&cancel.body).unwrap();
    assert_eq!(v["ok"], false, "another call's ref must not resolve: {v}");

    // The call ends (its token then lives only for the grace period; the expiry itself is
    // covered in tests/practice_tools.rs with virtual time).
    caller.hang_up();
    let _ = caller.closed(T).await;
    eventually("call ended", || server.app.calls.live_count() == 0).await;
}

/// The call's token from the agent's `conversation_initiation_client_data`.
fn token_of(agent: &common::fake_agent::AgentConn) -> String {
    agent.initiation["dynamic_variables"]["secret__ignis_call"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `identify_patient` with the call token `token`: the HTTP status.
async fn identify_status(server: &Server, token: &str) -> u16 {
    let step = &DEMO_BOOKING_SCRIPT[0];
    let req = tool_request("POST", step.path, "", step.body, Some(token), TOOLS_TOKEN);
    roundtrip(server, &req).await.status
}

/// A stream that comes after its pre-connect gave up (`PRECONNECT_TIMEOUT_MS`) connects the
/// agent itself, and that agent's token opens the tools: the stream takes the record the
/// pre-connect made over. Before, the new token was refused (`CallExists`) and every tool
/// request of the call failed.
#[tokio::test]
async fn a_stream_after_its_pre_connect_gave_up_gets_working_tools() {
    let dir = TempDir::new("practice-late-stream");
    let server = Server::start_with_practice_db(
        &dir.join("ignis.db"),
        TOOLS_TOKEN,
        &[("PRECONNECT_TIMEOUT_MS", "200")],
    )
    .await;
    let sid = "CA0000000000000000000000000000c003";
    let path = answer_call(&server, sid).await;
    let mut early = server.agent.next_conn(T).await;
    let early_token = token_of(&early);
    assert!(
        early.closed_within(T).await,
        "the pre-connect never gave up"
    );

    let _ws = open_stream_at(&server, &path, &start_message(sid)).await;
    let agent = server.agent.next_conn(T).await;
    let token = token_of(&agent);
    assert_ne!(token, early_token);
    assert_eq!(identify_status(&server, &token).await, 200);
    // The pre-connect's token no longer opens anything.
    assert_eq!(identify_status(&server, &early_token).await, 403);
}
