//! Shared helpers for the `practice_*` integration tests.
#![allow(dead_code)]

// The scratch directory of `tests/common`, for the binaries built without `common`. Those with
// both hold two copies of it, which is harmless: neither copy's directories clash (see there).
#[allow(clippy::duplicate_mod)]
#[path = "../common/scratch.rs"]
pub mod scratch;
pub mod staff_core;

use std::sync::atomic::{AtomicU32, Ordering};

use ignis::practice::calls::CallToken;
use ignis::practice::config::PracticeConfig;
use ignis::practice::demo;
use ignis::practice::store::{SqliteStore, Store};
use ignis::practice::tools::{self, Secrets, ToolRequest};
use jiff::Timestamp;
use serde_json::Value;

pub use scratch::TempDir;

pub const TOOLS_TOKEN: &str = "tools-secret-for-tests-0123";
/// Worth 32 random bytes (`openssl rand -base64 32`): weaker ones stop start-up.
pub const ADMIN_TOKEN: &str = "QcxnDkwjTMZi+i6H4+FczVfQmZcziAos72nDCyyNgjc=";
/// Maria Weber's number (demo patient with a seeded appointment).
pub const WEBER_PHONE: &str = "+491701234567";
pub const OTHER_PHONE: &str = "+491609999999";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, unique directory under the system temp dir, removed when dropped.
pub fn temp_dir(name: &str) -> TempDir {
    TempDir::new(name)
}

pub fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Wednesday 25 November 2026, 09:00 in Berlin: the practice is open.
pub fn wed_morning() -> Timestamp {
    at("2026-11-25T08:00:00Z")
}

pub struct Env {
    pub store: Box<dyn Store>,
    pub config: PracticeConfig,
    pub secrets: Secrets,
    /// Last: removed after the store is closed.
    pub dir: TempDir,
}

impl Env {
    /// A seeded demo database in a temp file, as a fresh `ignis serve` would have it at `now`.
    pub fn new(name: &str, now: Timestamp) -> Env {
        let dir = temp_dir(name);
        let store = SqliteStore::open(&dir.join("ignis.db")).unwrap();
        Env::with_store(Box::new(store), dir, now)
    }

    /// The same over any store (e.g. PostgreSQL, `backend.rs`); `dir` is removed on drop.
    pub fn with_store(mut store: Box<dyn Store>, dir: TempDir, now: Timestamp) -> Env {
        let config = PracticeConfig::demo();
        demo::seed(store.as_mut(), &config, now).unwrap();
        Env {
            store,
            config,
            secrets: Secrets::new(TOOLS_TOKEN, Some(ADMIN_TOKEN)),
            dir,
        }
    }

    /// Starts a call and returns its token.
    pub fn call(&mut self, sid: &str, caller: &str, now: Timestamp) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut entropy = [0u8; 16];
        entropy[..4].copy_from_slice(&n.to_le_bytes());
        entropy[4..8].copy_from_slice(&std::process::id().to_le_bytes());
        entropy[8] = sid.len() as u8;
        let token = CallToken::from_entropy(entropy);
        self.store
            .start_call(sid, &token.hash(), caller, "+4930123456", now.as_second())
            .unwrap();
        token.as_str().to_string()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        &mut self,
        auth: Option<&str>,
        call: Option<&str>,
        method: &str,
        path: &str,
        query: &str,
        body: &str,
        now: Timestamp,
    ) -> (u16, Value) {
        let auth = auth.map(|a| format!("Bearer {a}"));
        let req = ToolRequest {
            method,
            path,
            query,
            authorization: auth.as_deref().map(str::as_bytes),
            ignis_call: call.map(str::as_bytes),
            body: body.as_bytes(),
        };
        let r = tools::handle_tool(self.store.as_mut(), &self.config, &self.secrets, &req, now);
        (r.status, r.body_json())
    }

    pub fn post(&mut self, token: &str, path: &str, body: &str, now: Timestamp) -> (u16, Value) {
        self.raw(Some(TOOLS_TOKEN), Some(token), "POST", path, "", body, now)
    }

    pub fn get(&mut self, token: &str, path: &str, query: &str, now: Timestamp) -> (u16, Value) {
        self.raw(Some(TOOLS_TOKEN), Some(token), "GET", path, query, "", now)
    }

    /// identify_patient, asserting a 200.
    pub fn identify(
        &mut self,
        token: &str,
        family: &str,
        given: Option<&str>,
        dob: &str,
        now: Timestamp,
    ) -> Value {
        let body = match given {
            Some(g) => {
                format!(r#"{{"family_name":"{family}","given_name":"{g}","birth_date":"{dob}"}}"#)
            }
            None => format!(r#"{{"family_name":"{family}","birth_date":"{dob}"}}"#),
        };
        let (s, v) = self.post(token, "/api/patients/identify", &body, now);
        assert_eq!(s, 200, "{v}");
        v
    }

    /// find_slots, asserting a 200.
    pub fn slots(&mut self, token: &str, query: &str, now: Timestamp) -> Value {
        let (s, v) = self.get(token, "/api/appointments/slots", query, now);
        assert_eq!(s, 200, "{v}");
        v
    }

    pub fn book(&mut self, token: &str, body: &str, now: Timestamp) -> Value {
        let (s, v) = self.post(token, "/api/appointments", body, now);
        assert_eq!(s, 200, "{v}");
        v
    }
}

/// Queues a tool request of the call `token` on the practice as the server does
/// (`Practice::handle_tool`; `path` may carry `?query`); the receiver gets the reply.
pub fn submit_tool(
    p: &ignis::practice::Practice,
    token: &str,
    (method, path): (&str, &str),
    body: &str,
    now: Timestamp,
) -> crossbeam_channel::Receiver<ignis::practice::tools::ToolReply> {
    let auth = format!("Bearer {TOOLS_TOKEN}");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let req = ToolRequest {
        method,
        path,
        query,
        authorization: Some(auth.as_bytes()),
        ignis_call: Some(token.as_bytes()),
        body: body.as_bytes(),
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    p.handle_tool(req, now, move |r| {
        let _ = tx.send(r);
    });
    rx
}

/// Registers a call from `caller` through `Practice::start_call` (as the webhook does) and
/// waits for the commit; the call's dynamic variables (its token in `secret__ignis_call`).
pub fn start_practice_call(
    p: &ignis::practice::Practice,
    (sid, caller): (&str, &str),
    seed: u8,
    now: Timestamp,
) -> serde_json::Map<String, Value> {
    let info = ignis::practice::calls::CallInfo {
        call_sid: sid,
        caller_number: caller,
        called_number: "+4930123456",
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    let vars = p
        .start_call(info, [seed; 16], now, move |r| {
            let _ = tx.send(r);
        })
        .unwrap();
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the registration's commit")
        .unwrap();
    vars
}
