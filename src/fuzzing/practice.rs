//! Fuzz entry points for the practice tools (issue 7).

use std::cell::RefCell;

use jiff::Timestamp;

use crate::practice::calls::CallToken;
use crate::practice::config::PracticeConfig;
use crate::practice::demo;
use crate::practice::store::{SqliteStore, Store};
use crate::practice::tools::{self, Secrets, ToolRequest};

const SECRET: &str = "fuzz-tools-secret-0123456789";
const AUTH: &str = "Bearer fuzz-tools-secret-0123456789";

struct Fixture {
    store: SqliteStore,
    config: PracticeConfig,
    secrets: Secrets,
    token: String,
    now: Timestamp,
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

fn fixture() -> Fixture {
    let now: Timestamp = "2026-11-25T08:00:00Z".parse().expect("fixed instant");
    let config = PracticeConfig::demo();
    let mut store = SqliteStore::open_in_memory().expect("in-memory store");
    demo::seed(&mut store, &config, now).expect("seed");
    let token = CallToken::from_entropy([0x42; 16]);
    store
        .start_call(
            "CAfuzz",
            &token.hash(),
            "+491701234567",
            "+4930123456",
            now.as_second(),
        )
        .expect("call");
    Fixture {
        store,
        config,
        secrets: Secrets::new(SECRET, None),
        token: token.as_str().to_string(),
        now,
    }
}

/// Routes a fuzzer picks from with the first input byte.
const ROUTES: [(&str, &str); 9] = [
    ("POST", "/api/patients/identify"),
    ("GET", "/api/appointments/slots"),
    ("POST", "/api/appointments"),
    ("POST", "/api/appointments/A1/cancel"),
    ("POST", "/api/requests"),
    ("POST", "/api/emergencies"),
    ("POST", "/api/appointments/S1/cancel"),
    ("GET", "/api/patients/identify"),
    ("POST", "/api/nothing"),
];

/// One tool request with valid credentials for a live call: byte 0 picks the route, the rest is
/// the JSON body (or, for `find_slots`, the query string). The store and call persist across
/// inputs, so sequences of requests build up per-call state. Must never panic, and every reply
/// must be a JSON object with a known status.
pub fn tool_request(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[selector as usize % ROUTES.len()];
    let query = if path.ends_with("/slots") {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        String::new()
    };
    FIXTURE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let f = slot.get_or_insert_with(fixture);
        let req = ToolRequest {
            method,
            path,
            query: &query,
            authorization: Some(AUTH.as_bytes()),
            ignis_call: Some(f.token.as_bytes()),
            body: rest,
        };
        let reply = tools::handle_tool(&mut f.store, &f.config, &f.secrets, &req, f.now);
        assert!(
            matches!(reply.status, 200 | 404 | 405 | 413 | 422),
            "unexpected status {}",
            reply.status
        );
        let v: serde_json::Value = serde_json::from_slice(&reply.body).expect("reply is JSON");
        assert!(v.is_object() && v.get("ok").is_some(), "reply has ok");
    });
}
