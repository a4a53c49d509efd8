//! The staff page's accounts and sessions (issue 14 point 3): `ignis staff add/list/remove`
//! through the real binary, then login, rate limits, CSRF, Origin, logout and the security
//! headers through the real server on loopback; the 8 h idle expiry through the core with a
//! time input.

mod common;
mod practice_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Resp, Server, roundtrip};
use ignis::practice::Practice;
use ignis::practice::staff::auth::{ACCOUNT_MAX_FAILURES, LOGIN_MAX_FAILURES, LOGIN_WINDOW_SECS};
use ignis::practice::staff::{
    LOGIN_BUSY_RETRY_SECS, MAX_CONCURRENT_LOGINS, StaffOutcome, StaffReply, StaffRequest,
};
use ignis::practice::store::{STAFF_SESSION_IDLE_SECS, STAFF_SESSION_MAX_SECS, SqliteStore, Store};
use practice_support::staff_core::{
    PASSWORD, core_login, core_login_with, csrf_of_session, get_query, post_form, practice,
    staff_call,
};
use practice_support::{TOOLS_TOKEN, temp_dir, wed_morning};

const ORIGIN: &str = common::PUBLIC;

fn ignis(dir: &Path, args: &[&str], stdin: &str) -> Output {
    common::ignis_on_db(dir, &dir.join("ignis.db"), TOOLS_TOKEN, args, stdin)
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts the headers every /staff reply carries (BRIEF-14, issue 14 point 3).
fn assert_security_headers(r: &Resp) {
    let csp = r.header("content-security-policy").expect("CSP");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("same-origin"));
    assert!(r.header("cache-control").is_some());
}

async fn request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut raw =
        format!("{method} {path} HTTP/1.1\r\nHost: ignis.example.com\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        raw.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    let r = roundtrip(server, raw.as_bytes()).await;
    assert_security_headers(&r);
    r
}

async fn login(server: &Server, name: &str, password: &str, from: &str) -> Resp {
    let body = common::urlencode(&common::fields(&[("name", name), ("password", password)]));
    request(
        server,
        "POST",
        "/staff/login",
        &[("Origin", ORIGIN), ("X-Real-IP", from)],
        &body,
    )
    .await
}

/// The cookie pair (`__Host-ignis_staff=…` on https) of a successful login.
fn session_cookie(r: &Resp) -> String {
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/staff"));
    let c = r.header("set-cookie").expect("Set-Cookie");
    c.split(';').next().unwrap().to_owned()
}

/// Status, body and header names+values except `Date` and `Retry-After` (seconds left of a
/// window, which tick): what a client can compare.
fn answer(r: &Resp) -> (u16, Vec<u8>, Vec<(String, String)>) {
    let mut h: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("date") && !n.eq_ignore_ascii_case("retry-after"))
        .cloned()
        .collect();
    h.sort();
    (r.status, r.body.clone(), h)
}

#[tokio::test]
async fn add_login_logout_csrf_and_origin() {
    let dir = temp_dir("staff-auth");
    let db = dir.join("ignis.db");
    let added = ignis(&dir, &["staff", "add", "anna"], &format!("{PASSWORD}\n"));
    assert!(added.status.success(), "{}", output_text(&added));
    let listed = ignis(&dir, &["staff", "list"], "");
    assert_eq!(listed.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("anna"));
    for o in [&added, &listed] {
        assert!(!output_text(o).contains(PASSWORD));
    }
    let server = Server::start_with_practice_db(&db, TOOLS_TOKEN, &[]).await;
    without_a_session(&server).await;
    let cookie = login_sets_a_browser_session_cookie(&server).await;
    let csrf = csrf_of_session(&db);
    posts_need_csrf_and_origin(&server, &cookie, &csrf).await;
    logout_ends_the_session(&server, &cookie, &csrf).await;
    audit_has_login_and_logout_and_no_password(&dir, &db);
    remove_ends_the_account(&dir);
}

/// Without a session: GET → login, POST → 403; the login form; a foreign origin's login.
async fn without_a_session(server: &Server) {
    let r = request(server, "GET", "/staff", &[], "").await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/staff/login"))
    );
    let r = request(
        server,
        "POST",
        "/staff/irgendwas",
        &[("Origin", ORIGIN)],
        "csrf=x",
    )
    .await;
    assert_eq!(r.status, 403);
    let form = request(server, "GET", "/staff/login", &[], "").await;
    assert_eq!(form.status, 200);
    assert!(
        form.text()
            .contains("<form method=\"post\" action=\"/staff/login\"")
    );
    assert!(form.text().contains("Passwort"));

    // A login from a foreign origin is refused before the password is looked at.
    let body = common::urlencode(&common::fields(&[("name", "anna"), ("password", PASSWORD)]));
    let r = request(
        server,
        "POST",
        "/staff/login",
        &[("Origin", "https://evil.example")],
        &body,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
}

/// A login sets a browser-session cookie: no `Max-Age`/`Expires`, so the browser keeps it
/// while it runs and the server's 8 h idle expiry alone ends the session (issue 14 review,
/// point 3: a `Max-Age` set once at login would end an active session after 8 h).
async fn login_sets_a_browser_session_cookie(server: &Server) -> String {
    let ok = login(server, "anna", PASSWORD, "192.0.2.10").await;
    let set_cookie = ok.header("set-cookie").unwrap().to_owned();
    // https: the `__Host-` name, which browsers accept only with `Secure` and `Path=/`.
    assert!(
        set_cookie.starts_with("__Host-ignis_staff="),
        "{set_cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(
            set_cookie.split("; ").any(|a| a == attr),
            "{attr} in {set_cookie}"
        );
    }
    for attr in ["max-age", "expires"] {
        assert!(
            !set_cookie.to_ascii_lowercase().contains(attr),
            "{attr} in {set_cookie}"
        );
    }
    session_cookie(&ok)
}

/// With the session GET reaches the views; POSTs need the CSRF token and a same-origin (or
/// no) Origin.
async fn posts_need_csrf_and_origin(server: &Server, cookie: &str, csrf: &str) {
    // With the session: GET reaches the views (no redirect to the login).
    let r = request(server, "GET", "/staff", &[("Cookie", cookie)], "").await;
    assert_ne!(r.header("location"), Some("/staff/login"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // POSTs need the CSRF token and a same-origin (or no) Origin.
    let path = "/staff/requests/R-1/done";
    let r = request(
        server,
        "POST",
        path,
        &[("Cookie", cookie), ("Origin", ORIGIN)],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "no CSRF token");
    let wrong = format!("csrf={}", "0".repeat(64));
    let r = request(server, "POST", path, &[("Cookie", cookie)], &wrong).await;
    assert_eq!(r.status, 403, "wrong CSRF token");
    let r = request(
        server,
        "POST",
        path,
        &[
            ("Cookie", cookie),
            ("Origin", "https://evil.example"),
            ("X-CSRF-Token", csrf),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "foreign Origin");
    let r = request(
        server,
        "POST",
        path,
        &[("Cookie", cookie), ("X-CSRF-Token", csrf)],
        "",
    )
    .await;
    assert_ne!(
        r.status, 403,
        "header token and no Origin pass to the views"
    );
    let r = request(
        server,
        "POST",
        path,
        &[("Cookie", cookie)],
        &format!("csrf={csrf}"),
    )
    .await;
    assert_ne!(r.status, 403, "form token passes to the views");
}

/// Logout needs CSRF too, then the cookie is dead.
async fn logout_ends_the_session(server: &Server, cookie: &str, csrf: &str) {
    let r = request(server, "POST", "/staff/logout", &[("Cookie", cookie)], "").await;
    assert_eq!(r.status, 403);
    let r = request(
        server,
        "POST",
        "/staff/logout",
        &[("Cookie", cookie)],
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().starts_with("/staff/login"));
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = request(server, "GET", "/staff", &[("Cookie", cookie)], "").await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/staff/login"))
    );
}

/// The audit has the login and the logout, and nothing anywhere holds the password.
fn audit_has_login_and_logout_and_no_password(dir: &Path, db: &Path) {
    // The audit has the login and the logout, and nothing anywhere holds the password.
    let conn = rusqlite::Connection::open(db).unwrap();
    let audit: Vec<(String, String, String)> = conn
        .prepare("SELECT who, what, outcome FROM staff_audit ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(audit.contains(&("anna".into(), "login".into(), "ok".into())));
    assert!(audit.contains(&("anna".into(), "logout".into(), "ok".into())));
    drop(conn);
    for file in ["ignis.db", "ignis.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(file)) {
            assert!(
                !bytes
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes())
            );
        }
    }
}

/// `staff remove` ends the account; a second remove is refused.
fn remove_ends_the_account(dir: &Path) {
    let removed = ignis(dir, &["staff", "remove", "anna"], "");
    assert_eq!(removed.status.code(), Some(0), "{}", output_text(&removed));
    let again = ignis(dir, &["staff", "remove", "anna"], "");
    assert_eq!(again.status.code(), Some(1));
    let listed = ignis(dir, &["staff", "list"], "");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("anna"));
}

#[tokio::test]
async fn same_answer_for_unknown_user_and_wrong_password_then_rate_limits() {
    let dir = temp_dir("staff-limit");
    let db = dir.join("ignis.db");
    add_accounts_and_refuse_bad_input(&dir);
    let server = Server::start_with_practice_db(&db, TOOLS_TOKEN, &[]).await;
    let wrong_password = login(&server, "anna", "falsch-falsch-falsch", "192.0.2.1").await;
    let unknown_user = login(&server, "niemand", "falsch-falsch-falsch", "192.0.2.2").await;
    assert_eq!(wrong_password.status, 403);
    assert_eq!(answer(&wrong_password), answer(&unknown_user));
    assert!(wrong_password.header("set-cookie").is_none());
    per_account_limit(&server).await;
    per_address_limit(&server).await;
    audit_of_logins(&db);
}

/// `staff add` for anna and ben; bad input exits 2 and adds nothing, a taken name exits 1.
fn add_accounts_and_refuse_bad_input(dir: &Path) {
    assert!(
        ignis(dir, &["staff", "add", "anna"], &format!("{PASSWORD}\n"))
            .status
            .success()
    );
    assert!(
        ignis(dir, &["staff", "add", "ben"], &format!("{PASSWORD}\n"))
            .status
            .success()
    );
    // Bad input exits 2 and adds nothing.
    let short = ignis(dir, &["staff", "add", "carla"], "kurz\n");
    assert_eq!(short.status.code(), Some(2));
    assert_eq!(
        ignis(dir, &["staff", "add", "Carla"], &format!("{PASSWORD}\n"))
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        ignis(dir, &["staff", "add", "anna"], &format!("{PASSWORD}\n"))
            .status
            .code(),
        Some(1)
    );
}

/// With the account-window table full, names without a window of their own share the
/// overflow window. Once that is locked they are refused (429) without a write. A refused name
/// that is no account counts against the address, so one address cannot go on trying ever new
/// names: after five, even a desk trusted for its account is refused there by the address's own
/// limit. A refused real account does not (its colleagues behind the same address keep logging
/// in); its next attempts from that address stop in memory.
#[tokio::test]
async fn refusals_by_the_shared_overflow_window_count_against_the_address() {
    use ignis::practice::store::{LOGIN_OVERFLOW_KEY, MAX_LOGIN_WINDOWS};
    let dir = temp_dir("staff-overflow");
    let db = dir.join("ignis.db");
    add_accounts_and_refuse_bad_input(&dir);
    let server = Server::start_with_practice_db(&db, TOOLS_TOKEN, &[]).await;
    let desk = "192.0.2.77";
    session_cookie(&login(&server, "ben", PASSWORD, desk).await);
    let now = jiff::Timestamp::now().as_second();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
         WHERE i < {MAX_LOGIN_WINDOWS}) INSERT INTO staff_login_window (key, started, attempts) \
         SELECT 'u' || i, {now}, 1 FROM n; \
         INSERT INTO staff_login_window (key, started, attempts) \
         VALUES ('{LOGIN_OVERFLOW_KEY}', {now}, {ACCOUNT_MAX_FAILURES});"
    ))
    .unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let windows = count("SELECT COUNT(*) FROM staff_login_window");
    // Five colleagues without windows of their own, each refused through the locked overflow
    // window (twice: the second stops in memory), from one office address: the sixth still
    // logs in there.
    let colleagues = ["anna", "carla", "dora", "emil", "finn"];
    for name in &colleagues[1..] {
        let added = ignis(&dir, &["staff", "add", name], &format!("{PASSWORD}\n"));
        assert!(added.status.success(), "{}", output_text(&added));
    }
    let office = "192.0.2.79";
    for name in colleagues {
        for _ in 0..2 {
            assert_eq!(login(&server, name, PASSWORD, office).await.status, 429);
        }
    }
    session_cookie(&login(&server, "ben", PASSWORD, office).await);
    for i in 0..LOGIN_MAX_FAILURES {
        let r = login(&server, &format!("neu{i}"), "falsch-falsch-falsch", desk).await;
        assert_eq!(r.status, 429, "{}", r.text());
    }
    // Refused without a write: no window for the new names, the shared count unchanged.
    assert_eq!(count("SELECT COUNT(*) FROM staff_login_window"), windows);
    assert_eq!(
        count("SELECT attempts FROM staff_login_window WHERE key = '+'"),
        i64::from(ACCOUNT_MAX_FAILURES)
    );
    // The address has spent its five: ben's own desk is refused there now, not elsewhere
    // (his login made him a window of his own, so the overflow window does not hold him).
    assert_eq!(login(&server, "ben", PASSWORD, desk).await.status, 429);
    session_cookie(&login(&server, "ben", PASSWORD, "192.0.2.78").await);
}

/// Per account: anna has 1 failure; 19 more from five addresses (none of which reaches its own
/// limit) lock her out everywhere but at the desk she logged in from; unknown names alike.
async fn per_account_limit(server: &Server) {
    let desk = "192.0.2.200";
    session_cookie(&login(server, "anna", PASSWORD, desk).await);
    let spread = |i: u32| format!("198.51.100.{}", i / (LOGIN_MAX_FAILURES - 1));
    for i in 0..ACCOUNT_MAX_FAILURES - 1 {
        let r = login(server, "anna", "falsch-falsch-falsch", &spread(i)).await;
        assert_eq!(r.status, 403);
    }
    // Even with the right password, and the refusal does not depend on the password.
    let locked = login(server, "anna", PASSWORD, "203.0.113.50").await;
    assert_eq!(locked.status, 429);
    assert!(locked.header("set-cookie").is_none());
    // RFC 9110 §10.2.3: how long until the window ends, in whole seconds.
    let wait: i64 = locked
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        (1..=LOGIN_WINDOW_SECS).contains(&wait),
        "Retry-After: {wait}"
    );
    let locked_wrong = login(server, "anna", "falsch-falsch-falsch", "203.0.113.51").await;
    assert_eq!(answer(&locked), answer(&locked_wrong));
    // Refusals of the locked account do not count against the address: after more of them
    // than the address's own limit, it still logs in to another account.
    for _ in 0..=LOGIN_MAX_FAILURES {
        let again = login(server, "anna", PASSWORD, "203.0.113.50").await;
        assert_eq!(answer(&locked), answer(&again));
    }
    session_cookie(&login(server, "ben", PASSWORD, "203.0.113.50").await);
    // The attack does not lock anna out at her desk (staff review, point 2).
    session_cookie(&login(server, "anna", PASSWORD, desk).await);
    // Unknown names are limited the same way (nothing tells which accounts exist).
    for i in 0..ACCOUNT_MAX_FAILURES - 1 {
        login(server, "niemand", "falsch-falsch-falsch", &spread(20 + i)).await;
    }
    let locked_unknown = login(server, "niemand", PASSWORD, "203.0.113.52").await;
    assert_eq!(answer(&locked), answer(&locked_unknown));
}

/// Per address: five failures from one address lock it, not the others.
async fn per_address_limit(server: &Server) {
    // Per address: five failures from one address on different names lock that address, not
    // the others.
    for i in 0..5 {
        let r = login(
            server,
            &format!("gast{i}"),
            "falsch-falsch-falsch",
            "192.0.2.99",
        )
        .await;
        assert_eq!(r.status, 403);
    }
    assert_eq!(
        login(server, "ben", PASSWORD, "192.0.2.99").await.status,
        429
    );
    let ok = login(server, "ben", PASSWORD, "192.0.2.100").await;
    session_cookie(&ok);
}

/// The audit names existing accounts only; refused attempts are there too.
fn audit_of_logins(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let count = |who: &str, outcome: &str| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM staff_audit WHERE who = ?1 AND what = 'login' AND outcome = ?2",
            [who, outcome],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(count("anna", "failed"), i64::from(ACCOUNT_MAX_FAILURES));
    // A refused attempt is audited once, when the limit trips, not each time (review point 4).
    assert_eq!(count("anna", "rate_limited"), 1);
    assert_eq!(count("ben", "rate_limited"), 1);
    assert_eq!(count("ben", "ok"), 2);
    assert_eq!(count("niemand", "failed"), 0);
    assert_eq!(count("anna", "ok"), 2);
    assert_eq!(count("-", "failed"), i64::from(ACCOUNT_MAX_FAILURES + 5));
}

fn get(p: &Practice, cookie: &str, now: jiff::Timestamp) -> StaffReply {
    get_path(p, "/staff", cookie, now)
}

fn get_path(p: &Practice, path: &str, cookie: &str, now: jiff::Timestamp) -> StaffReply {
    get_query(p, path, "", cookie, now)
}

/// Starts a login through the core: the password check it asks for, or the reply.
fn core_start_login(
    p: &Practice,
    password: &str,
    client: &str,
    now: jiff::Timestamp,
) -> StaffOutcome {
    let body = format!("name=anna&password={password}");
    let req = StaffRequest {
        method: "POST",
        path: "/staff/login",
        query: "",
        cookies: vec![],
        origin: Some(ORIGIN.as_bytes()),
        csrf_header: None,
        body: body.as_bytes(),
        client: client.parse().unwrap(),
    };
    staff_call(p, &req, now)
}

/// The core's tests post from the origin the HTTP tests' server serves.
#[test]
fn the_core_origin_is_the_servers() {
    assert_eq!(practice_support::staff_core::ORIGIN, common::PUBLIC);
}

/// Parallel logins (issue 14 review, point 1): at most MAX_CONCURRENT_LOGINS checks run at
/// once, the next is answered 503 without a check; each attempt counts as a failure when its
/// check starts, so attempts whose checks never finish still reach the limit.
#[test]
fn parallel_logins_are_capped_and_counted_when_they_start() {
    let dir = temp_dir("staff-parallel");
    let (p, _thread) = practice(&dir);
    let t0 = wed_morning();
    let running: Vec<_> = (0..MAX_CONCURRENT_LOGINS)
        .map(
            |_| match core_start_login(&p, "falsch-falsch-falsch", "192.0.2.7", t0) {
                StaffOutcome::Verify(pending) => pending,
                StaffOutcome::Reply(r) => panic!("no check started: {}", r.status),
            },
        )
        .collect();
    let StaffOutcome::Reply(busy) = core_start_login(&p, PASSWORD, "192.0.2.8", t0) else {
        panic!("a check beyond the cap was started");
    };
    assert_eq!(busy.status, 503);
    assert_eq!(busy.retry_after, Some(LOGIN_BUSY_RETRY_SECS));
    // The checks end without finish_login (say, the client went away): their slots are free
    // again, and their failures stay counted.
    drop(running);
    let fifth = core_start_login(&p, "falsch-falsch-falsch", "192.0.2.7", t0);
    assert!(matches!(fifth, StaffOutcome::Verify(_)));
    drop(fifth);
    let StaffOutcome::Reply(limited) = core_start_login(&p, PASSWORD, "192.0.2.7", t0) else {
        panic!("the address's five failures did not lock it");
    };
    assert_eq!(limited.status, 429);
}

/// A successful login takes back the failure counted when its check started: logging in
/// more often than the limit from one address never locks it.
#[test]
fn successful_logins_do_not_count_against_the_limit() {
    let dir = temp_dir("staff-success");
    let (p, _thread) = practice(&dir);
    let t0 = wed_morning();
    for i in 0..=LOGIN_MAX_FAILURES {
        core_login(&p, t0, 10 + i as u8);
    }
}

/// The audit's view lines, oldest first.
fn audited_views(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join("core.db")).unwrap();
    let mut q = conn
        .prepare("SELECT what FROM staff_audit WHERE what LIKE 'staff:%' ORDER BY id")
        .unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A poll shows a day's patient lists too (issue 14 review, point 2): it is audited when its
/// day differs from the day last audited for the session, with the resolved date.
#[test]
fn polls_of_another_day_are_audited_with_the_date() {
    let dir = temp_dir("staff-live-audit");
    let (p, _thread) = practice(&dir);
    let t0 = wed_morning();
    let cookie = core_login(&p, t0, 6);
    let poll =
        |query: &str| assert_eq!(get_query(&p, "/staff/live", query, &cookie, t0).status, 200);
    assert_eq!(get(&p, &cookie, t0).status, 200);
    poll("");
    poll("day=2026-11-25");
    poll("day=2026-12-02");
    poll("day=2026-12-02");
    poll("");
    // Back on a day already audited for this session: not again (two tabs of one session on
    // two days would otherwise audit every poll: staff review, point 3).
    assert_eq!(
        audited_views(&dir),
        ["staff:view day=2026-11-25", "staff:live day=2026-12-02"]
    );
}

/// No audit row, no patient data: when the audit write fails (a full disk, a statement
/// timeout) the page is withheld with a 503, and the day is audited once writes work again.
#[test]
fn a_view_whose_audit_row_cannot_be_written_shows_nothing() {
    let dir = temp_dir("staff-audit-fails");
    let (p, _thread) = practice(&dir);
    let t0 = wed_morning();
    let cookie = core_login(&p, t0, 7);
    let db = rusqlite::Connection::open(dir.join("core.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_views BEFORE INSERT ON staff_audit WHEN NEW.what LIKE 'staff:%' \
         BEGIN SELECT RAISE(FAIL, 'disk full'); END;",
    )
    .unwrap();
    for (path, query) in [
        ("/staff", "day=2026-11-25"),
        ("/staff/live", "day=2026-11-25"),
    ] {
        let r = get_query(&p, path, query, &cookie, t0);
        assert_eq!((r.status, r.patient_data), (503, false), "{path}");
    }
    db.execute_batch("DROP TRIGGER refuse_views;").unwrap();
    let r = get_query(&p, "/staff/live", "day=2026-11-25", &cookie, t0);
    assert_eq!((r.status, r.patient_data), (200, true));
    assert_eq!(audited_views(&dir), ["staff:live day=2026-11-25"]);
}

/// A change is audited before it is made (staff review, point 4): when its row cannot be
/// written the request stays open (503), so no done or undo escapes the audit.
#[test]
fn a_change_whose_audit_row_cannot_be_written_is_not_made() {
    use ignis::practice::store::{CallerDetails, NewRequest, RequestCategory, Urgency};
    let dir = temp_dir("staff-change-audit");
    let t0 = wed_morning();
    let mut store = SqliteStore::open(&dir.join("core.db")).unwrap();
    let created = store
        .create_request(&NewRequest {
            category: RequestCategory::Callback,
            patient_id: None,
            caller: Some(CallerDetails {
                family_name: "Fremd".into(),
                given_name: None,
                birth_date: None,
            }),
            details: None,
            urgency: Urgency::Routine,
            callback_number: Some("+4930123456".into()),
            callback_window: None,
            note: None,
            call_sid: "CA0000000000000000000000000000c0de".into(),
            assurance: None,
            caller_number: "+4930123456".into(),
            fingerprint: None,
            now: t0.as_second(),
        })
        .unwrap();
    drop(store);
    let (p, _thread) = practice(&dir);
    let cookie = core_login(&p, t0, 17);
    let db_path = dir.join("core.db");
    let csrf = csrf_of_session(&db_path);
    let path = format!("/staff/requests/{}/done", created.ref_code);
    let body = format!("csrf={csrf}");
    let done = |p: &Practice| post_form(p, &path, &body, &cookie, t0).status;
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let done_at = || -> Option<i64> {
        db.query_row(
            "SELECT done_at FROM request WHERE ref_code = ?1",
            [&created.ref_code],
            |r| r.get(0),
        )
        .unwrap()
    };
    db.execute_batch(
        "CREATE TRIGGER refuse_changes BEFORE INSERT ON staff_audit \
         WHEN NEW.what LIKE 'staff:request_done%' BEGIN SELECT RAISE(FAIL, 'disk full'); END;",
    )
    .unwrap();
    assert_eq!(done(&p), 503);
    assert_eq!(done_at(), None, "marked done without an audit row");
    db.execute_batch("DROP TRIGGER refuse_changes;").unwrap();
    assert_eq!(done(&p), 303);
    assert!(done_at().is_some());
    let what = format!("staff:request_done ref={}", created.ref_code);
    let rows: Vec<String> = db
        .prepare("SELECT outcome FROM staff_audit WHERE what = ?1 ORDER BY id")
        .unwrap()
        .query_map([&what], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, ["attempt", "ok"]);
}

/// A method a route does not take is 405 with `Allow` (review point 8; RFC 9110 §15.5.6),
/// also when the view's router refuses it after the session check.
#[test]
fn wrong_methods_are_405_with_allow() {
    let dir = temp_dir("staff-405");
    let (p, _thread) = practice(&dir);
    let t0 = wed_morning();
    let cookie = core_login(&p, t0, 7);
    let done = get_path(&p, "/staff/requests/R-1/done", &cookie, t0);
    assert_eq!((done.status, done.allow), (405, Some("POST")));
    let logout = get_path(&p, "/staff/logout", &cookie, t0);
    assert_eq!((logout.status, logout.allow), (405, Some("POST")));
    assert_eq!(get(&p, &cookie, t0).allow, None);
}

#[test]
fn session_expires_after_eight_idle_hours() {
    let dir = temp_dir("staff-idle");
    let (p, _thread) = practice(&dir);
    let t0 = wed_morning();
    let cookie = core_login(&p, t0, 3);

    let idle = jiff::SignedDuration::from_secs(STAFF_SESSION_IDLE_SECS);
    let second = jiff::SignedDuration::from_secs(1);
    let to_login =
        |r: &StaffReply| r.status == 303 && r.location.as_deref() == Some("/staff/login");
    // Used 3 h in, then again just before 8 h without use are up: still in.
    let t1 = t0 + jiff::SignedDuration::from_hours(3);
    assert!(!to_login(&get(&p, &cookie, t1)));
    assert!(!to_login(&get(&p, &cookie, t1 + idle - second)));
    // 8 h and a second without use: out, and the cookie is cleared.
    let cookie = core_login(&p, t0, 13);
    let expired = get(&p, &cookie, t0 + idle + second);
    assert!(to_login(&expired));
    assert!(expired.set_cookie.unwrap().contains("Max-Age=0"));
}

/// However much it is used, a session ends 12 h after its login (staff review, point 6:
/// OWASP "absolute timeout").
#[test]
fn session_expires_twelve_hours_after_login_however_used() {
    let dir = temp_dir("staff-absolute");
    let (p, _thread) = practice(&dir);
    let t0 = wed_morning();
    let cookie = core_login(&p, t0, 14);
    let hour = jiff::SignedDuration::from_hours(1);
    for h in 1..12 {
        assert_eq!(get(&p, &cookie, t0 + hour * h).status, 200, "after {h} h");
    }
    let max = jiff::SignedDuration::from_secs(STAFF_SESSION_MAX_SECS);
    let r = get(&p, &cookie, t0 + max);
    assert_eq!(
        (r.status, r.location.as_deref()),
        (303, Some("/staff/login"))
    );
}

/// A login from a browser that has a session ends that session (staff review, point 6).
#[test]
fn a_new_login_ends_the_browsers_previous_session() {
    let dir = temp_dir("staff-relogin");
    let (p, _thread) = practice(&dir);
    let t0 = wed_morning();
    let old = core_login(&p, t0, 15);
    assert_eq!(get(&p, &old, t0).status, 200);
    let new = core_login_with(&p, t0, 16, Some(&old));
    assert_ne!(new, old);
    assert_eq!(get(&p, &new, t0).status, 200);
    assert_eq!(
        get(&p, &old, t0).status,
        303,
        "the old session still opens the page"
    );
}

/// The open page polls /staff/live every second; that is not use, so an unattended page is
/// still logged out after 8 h (issue 14 point 3), while a real page view does count.
#[test]
fn polls_do_not_keep_a_session_alive() {
    let dir = temp_dir("staff-idle-polls");
    let (p, _thread) = practice(&dir);
    let t0 = wed_morning();
    let cookie = core_login(&p, t0, 4);
    let idle = jiff::SignedDuration::from_secs(STAFF_SESSION_IDLE_SECS);
    let hour = jiff::SignedDuration::from_hours(1);
    // Polls through the 8 h are answered (the session is alive)...
    for h in 1..8 {
        let r = get_path(&p, "/staff/live", &cookie, t0 + hour * h);
        assert_eq!(r.status, 200, "poll after {h} h");
    }
    // ...but did not move the window: just past 8 h since the login, a poll is turned away.
    let late = get_path(
        &p,
        "/staff/live",
        &cookie,
        t0 + idle + jiff::SignedDuration::from_secs(1),
    );
    assert_eq!(late.status, 303);
    assert_eq!(late.location.as_deref(), Some("/staff/login"));

    // A page view is use: the window moves with it, and polls afterwards ride on it.
    let cookie = core_login(&p, t0, 5);
    assert_eq!(get(&p, &cookie, t0 + hour * 3).status, 200);
    let r = get_path(&p, "/staff/live", &cookie, t0 + hour * 10);
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn assets_and_unknown_paths_carry_the_headers_too() {
    let dir = temp_dir("staff-headers");
    let server = Server::start_with_practice_db(&dir.join("ignis.db"), TOOLS_TOKEN, &[]).await;
    for (method, path, status) in [
        ("GET", "/staff/assets/nope.js", Some(404)),
        ("GET", "/staff/login", Some(200)),
        ("HEAD", "/staff", Some(303)),
        ("GET", "/staff/logout", Some(405)),
        ("PUT", "/staff/login", Some(405)),
        // Served by the views half (404 until it ships the file).
        ("GET", "/staff/assets/staff.css", None),
    ] {
        let r = request(&server, method, path, &[], "").await;
        if let Some(status) = status {
            assert_eq!(r.status, status, "{method} {path}");
        }
    }
}

/// One raw HTTP/1.1 exchange with the real binary (`Connection: close`).
fn raw_exchange(port: u16, request: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn real_binary_logs_never_show_the_password_and_http_cookies_lack_secure() {
    use std::io::BufRead;
    let dir = temp_dir("staff-binary");
    assert!(
        ignis(&dir, &["staff", "add", "anna"], &format!("{PASSWORD}\n"))
            .status
            .success()
    );
    let port = common::free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .env_clear()
        .current_dir(&dir)
        .envs([
            ("PUBLIC_URL", origin.as_str()),
            ("TWILIO_AUTH_TOKEN", common::TOKEN),
            ("PORT", &port.to_string()),
            ("BIND", "127.0.0.1"),
            ("TOOLS_TOKEN", TOOLS_TOKEN),
            ("LOG_FORMAT", "text"),
            ("RUST_LOG", "debug"),
        ])
        .env("IGNIS_DB", dir.join("ignis.db"))
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("ignis did not start");
        let up = line.contains("ignis listening");
        log.push(line);
        if up {
            break;
        }
    }
    let post = |password: &str| {
        let body = format!("name=anna&password={password}");
        raw_exchange(
            port,
            &format!(
                "POST /staff/login HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {origin}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let wrong = post("Falsches-Passwort-99");
    assert!(wrong.starts_with("HTTP/1.1 403"), "{wrong}");
    let ok = post(PASSWORD);
    assert!(ok.starts_with("HTTP/1.1 303"), "{ok}");
    let cookie = ok
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains("Secure"), "PUBLIC_URL is http: {cookie}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    log.extend(rx.try_iter());
    let log = log.join("\n");
    assert!(log.contains("staff login"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains("Falsches-Passwort-99"));
    assert!(
        !log.contains(
            cookie
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches("Set-Cookie: ")
        )
    );
}
