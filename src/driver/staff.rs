//! The staff page's I/O (issue 14, docs/staff.md): requests below `/staff` handed to the
//! practice's store thread, password checks on tokio's blocking pool, and the `ignis staff`
//! commands (`add`, `list`, `remove`) on the same store as `serve`.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;

use super::startup::{StartError, database, load_vars, open_practice};
use crate::cli::StaffCommand;
use crate::config::PracticeVars;
use crate::http::{RequestHead, Response};
use crate::practice::Practice;
use crate::practice::staff::auth::{self, SALT_BYTES, SESSION_ENTROPY_BYTES};
use crate::practice::staff::{self, Site, StaffOutcome, StaffReply, StaffRequest};
use crate::routes::App;

/// Runtime workers of an `ignis staff` command on PostgreSQL (they only drive its connection).
const COMMAND_RUNTIME_WORKERS: usize = 1;

/// Most `Cookie` header fields handed to the core (it bounds their size itself).
const MAX_COOKIE_HEADERS: usize = 8;
/// Longest a staff request waits for the store (the tools' bound, under nginx's 30 s).
const STAFF_REPLY_TIMEOUT: std::time::Duration = super::connection::TOOL_REPLY_TIMEOUT;

/// Answers a request below `/staff`.
pub(super) async fn reply(
    app: &App,
    head: &RequestHead,
    body: &[u8],
    peer: SocketAddr,
) -> Response {
    let staff_reply = match &app.practice {
        Some(practice) => run(practice, app, head, body, peer).await,
        None => staff::unavailable(),
    };
    let done = staff::finish(staff_reply, head.header("if-none-match"));
    let mut resp = Response::new(done.status).body(done.body);
    resp.headers = done.headers;
    resp
}

async fn run(
    practice: &Practice,
    app: &App,
    head: &RequestHead,
    body: &[u8],
    peer: SocketAddr,
) -> StaffReply {
    let site = Site::from_public_url(&app.config.public_url);
    let req = StaffRequest {
        method: head.method.as_str(),
        path: head.path(),
        query: head.query(),
        cookies: head
            .headers_named("cookie")
            .take(MAX_COOKIE_HEADERS)
            .collect(),
        origin: head.header("origin"),
        csrf_header: head.header("x-csrf-token"),
        body,
        client: auth::client_address(peer.ip(), head.header("x-real-ip")),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    practice.handle_staff(&req, &site, super::practice_now(), move |o| {
        let _ = tx.send(o);
    });
    // Bounded like a tool request: a stalled store answers 503, not a page that never loads.
    let pending = match tokio::time::timeout(STAFF_REPLY_TIMEOUT, rx).await {
        Ok(Ok(StaffOutcome::Reply(r))) => return r,
        Ok(Ok(StaffOutcome::Verify(p))) => p,
        Ok(Err(_)) | Err(_) => return staff::unavailable(),
    };
    // argon2id takes ~50-100 ms of CPU: not on an async worker, not on the store's writer.
    let checked = tokio::task::spawn_blocking(move || {
        let ok = pending.verify();
        let mut entropy = [0u8; SESSION_ENTROPY_BYTES];
        let entropy = super::os_random(&mut entropy).ok().map(|()| entropy);
        (pending, ok, entropy)
    })
    .await;
    let Ok((pending, ok, entropy)) = checked else {
        return staff::unavailable();
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    practice.finish_login(
        pending,
        ok,
        entropy,
        &site,
        super::practice_now(),
        move |r| {
            let _ = tx.send(r);
        },
    );
    match tokio::time::timeout(STAFF_REPLY_TIMEOUT, rx).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) | Err(_) => staff::unavailable(),
    }
}

/// `ignis staff …`: exit 0 done, 1 refused or failed (name taken, unknown account, store
/// error), 2 bad configuration or input (invalid name or password).
pub fn command(cmd: &StaffCommand) -> Result<(), StartError> {
    let vars = load_vars().map_err(StartError::Config)?;
    let practice_vars =
        PracticeVars::parse(|k| vars.get(k).cloned()).map_err(StartError::Practice)?;
    // With DATABASE_URL the accounts live in PostgreSQL; its pool needs a (small) runtime.
    let rt = match practice_vars.database_url {
        Some(_) => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(COMMAND_RUNTIME_WORKERS)
                .enable_all()
                .build()
                .map_err(StartError::Runtime)?,
        ),
        None => None,
    };
    let db = match &rt {
        Some(rt) => database(&practice_vars, rt)?,
        None => None,
    };
    let open = || open_practice(&practice_vars, db.as_ref());
    match cmd {
        StaffCommand::Add { name } => {
            auth::validate_name(name).map_err(|e| StartError::Usage(format!("{name}: {e}")))?;
            let password = read_new_password(name)?;
            let mut salt = [0u8; SALT_BYTES];
            super::os_random(&mut salt).map_err(StartError::NoRandomness)?;
            let phc = auth::hash_password(&password, salt)
                .map_err(|e| StartError::Usage(e.to_string()))?;
            let (practice, _thread) = open()?;
            let (n, now) = (name.clone(), super::practice_now().as_second());
            let added = on_store(&practice, move |s| {
                let added = s.add_staff_user(&n, &phc, now)?;
                if added {
                    account_audit(s, now, "account_added", &n);
                }
                Ok(added)
            })?;
            if !added {
                return Err(StartError::Failed(format!("a staff account {name} exists")));
            }
            println!("staff account {name} added");
        }
        StaffCommand::List => {
            let (practice, _thread) = open()?;
            let users = on_store(&practice, |s| s.staff_users())?;
            if users.is_empty() {
                println!("no staff accounts (add one with `ignis staff add NAME`)");
            }
            for u in users {
                let created = jiff::Timestamp::from_second(u.created_at)
                    .map_or_else(|_| u.created_at.to_string(), |t| t.to_string());
                println!("{}\tcreated {created}", u.name);
            }
        }
        StaffCommand::Remove { name } => {
            let (practice, _thread) = open()?;
            let (n, now) = (name.clone(), super::practice_now().as_second());
            let removed = on_store(&practice, move |s| {
                let removed = s.remove_staff_user(&n)?;
                if removed {
                    account_audit(s, now, "account_removed", &n);
                }
                Ok(removed)
            })?;
            if !removed {
                return Err(StartError::Failed(format!("no staff account {name}")));
            }
            println!("staff account {name} removed (its sessions ended)");
        }
    }
    Ok(())
}

/// The audit row of an account change made on the command line (who: `(cli)`, which no
/// account name can be). The change is
/// made either way: the operator is told when its row could not be written.
fn account_audit(s: &mut dyn crate::practice::store::Store, at: i64, what: &str, name: &str) {
    if let Err(e) = s.staff_audit(at, "(cli)", &format!("{what} name={name}"), "ok") {
        eprintln!("warning: the audit row of this change could not be written: {e}");
    }
}

fn on_store<T: Send + 'static>(
    practice: &Practice,
    f: impl FnOnce(&mut dyn crate::practice::store::Store) -> crate::practice::store::StoreResult<T>
    + Send
    + 'static,
) -> Result<T, StartError> {
    practice
        .store()
        .call_blocking(f)
        .map_err(|e| StartError::Failed(format!("store: {e:?}")))?
        .map_err(|e| StartError::Failed(e.to_string()))
}

/// The new password: asked twice without echo on a terminal, else the first line of stdin.
fn read_new_password(name: &str) -> Result<String, StartError> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {name}: "))
            .map_err(|e| StartError::Usage(format!("cannot read the password: {e}")))?;
        auth::validate_password(&first).map_err(|e| StartError::Usage(e.to_string()))?;
        let again = rpassword::prompt_password("Again: ")
            .map_err(|e| StartError::Usage(format!("cannot read the password: {e}")))?;
        if first != again {
            return Err(StartError::Usage(auth::PasswordError::Mismatch.to_string()));
        }
        first
    } else {
        first_line_of_stdin()?
    };
    auth::validate_password(&password).map_err(|e| StartError::Usage(e.to_string()))?;
    Ok(password)
}

/// The first line of standard input, without its line end, read up to
/// [`auth::MAX_PASSWORD_BYTES`] + 2 bytes (longer is refused by the password rules).
fn first_line_of_stdin() -> Result<String, StartError> {
    use std::io::Read;
    let mut line = Vec::new();
    std::io::stdin()
        .lock()
        .take(auth::MAX_PASSWORD_BYTES as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(|e| StartError::Usage(format!("cannot read the password: {e}")))?;
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| StartError::Usage("the password is not UTF-8".into()))
}
