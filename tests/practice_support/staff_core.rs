//! The staff page through the core (`Practice::handle_staff`, no sockets): a practice with
//! one account, its login, its session's CSRF token, and form posts.

use std::path::Path;

use ignis::practice::Practice;
use ignis::practice::config::PracticeConfig;
use ignis::practice::staff::auth::SESSION_ENTROPY_BYTES;
use ignis::practice::staff::{Site, StaffOutcome, StaffReply, StaffRequest};
use ignis::practice::store::{SqliteStore, Store, StoreThread};
use ignis::practice::tools::Secrets;
use jiff::Timestamp;

use super::TOOLS_TOKEN;

/// The password of the account `anna`.
pub const PASSWORD: &str = "Korrekt-Pferd-Batterie-7";
/// The site's origin (`common::PUBLIC`, which the HTTP tests' server uses).
pub const ORIGIN: &str = "https://ignis.example.com";

/// A practice on `dir/core.db` (the demo configuration) with the account `anna`.
pub fn practice(dir: &Path) -> (Practice, StoreThread) {
    let mut store = SqliteStore::open(&dir.join("core.db")).unwrap();
    let phc = ignis::practice::staff::auth::hash_password(PASSWORD, [5; 16]).unwrap();
    store.add_staff_user("anna", &phc, 0).unwrap();
    Practice::with_store(
        PracticeConfig::demo(),
        Secrets::new(TOOLS_TOKEN, None),
        Box::new(store),
    )
    .unwrap()
}

pub fn site() -> Site {
    Site {
        origin: ORIGIN.into(),
        secure: true,
    }
}

pub fn staff_call(p: &Practice, req: &StaffRequest<'_>, now: Timestamp) -> StaffOutcome {
    let (tx, rx) = crossbeam_channel::bounded(1);
    p.handle_staff(req, &site(), now, move |o| {
        let _ = tx.send(o);
    });
    rx.recv().unwrap()
}

/// Logs anna in through the core at `t0` (the session token made from `entropy`); the
/// session cookie pair.
pub fn core_login(p: &Practice, t0: Timestamp, entropy: u8) -> String {
    core_login_with(p, t0, entropy, None)
}

/// A login whose request carries `cookie` (`name=value`), if given.
pub fn core_login_with(p: &Practice, t0: Timestamp, entropy: u8, cookie: Option<&str>) -> String {
    let body = format!("name=anna&password={PASSWORD}");
    let req = StaffRequest {
        method: "POST",
        path: "/staff/login",
        query: "",
        cookies: cookie.map(str::as_bytes).into_iter().collect(),
        origin: Some(ORIGIN.as_bytes()),
        csrf_header: None,
        body: body.as_bytes(),
        client: "127.0.0.1".parse().unwrap(),
    };
    let StaffOutcome::Verify(pending) = staff_call(p, &req, t0) else {
        panic!("login did not ask for the password check");
    };
    let ok = pending.verify();
    assert!(ok);
    let (tx, rx) = crossbeam_channel::bounded(1);
    p.finish_login(
        pending,
        ok,
        Some([entropy; SESSION_ENTROPY_BYTES]),
        &site(),
        t0,
        move |r| {
            let _ = tx.send(r);
        },
    );
    let reply = rx.recv().unwrap();
    assert_eq!(reply.status, 303);
    let cookie = reply.set_cookie.unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// The CSRF token of the only session (the views put it into their forms; read here from
/// the database so these tests do not depend on the views' markup).
pub fn csrf_of_session(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT csrf FROM staff_session ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// A GET with the session `cookie`.
pub fn get_query(
    p: &Practice,
    path: &str,
    query: &str,
    cookie: &str,
    now: Timestamp,
) -> StaffReply {
    let req = StaffRequest {
        method: "GET",
        path,
        query,
        cookies: vec![cookie.as_bytes()],
        origin: None,
        csrf_header: None,
        body: b"",
        client: "127.0.0.1".parse().unwrap(),
    };
    match staff_call(p, &req, now) {
        StaffOutcome::Reply(r) => r,
        StaffOutcome::Verify(_) => panic!("GET asked for a password check"),
    }
}

/// A form POST with the session `cookie`, from the site's origin.
pub fn post_form(p: &Practice, path: &str, body: &str, cookie: &str, now: Timestamp) -> StaffReply {
    let req = StaffRequest {
        method: "POST",
        path,
        query: "",
        cookies: vec![cookie.as_bytes()],
        origin: Some(ORIGIN.as_bytes()),
        csrf_header: None,
        body: body.as_bytes(),
        client: "127.0.0.1".parse().unwrap(),
    };
    match staff_call(p, &req, now) {
        StaffOutcome::Reply(r) => r,
        StaffOutcome::Verify(_) => panic!("a form post asked for a password check"),
    }
}
