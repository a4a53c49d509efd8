//! `ignis twilio configure` (the real binary) against the Twilio REST stand-in on loopback: the
//! plan, exactly the changed fields written, idempotence, the refusals and their exit codes, and
//! no secret in the output.

#[path = "common/scratch.rs"]
mod scratch;

use std::process::{Command, Output};

use ignis::driver::sim::twilio_api::TwilioApiServer;
use ignis::sim::twilio_api::{PhoneNumber, TwilioApi, Write};
use scratch::TempDir;

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "auth-token-secret-3f9a1c77e2";
const KEY_SID: &str = "SK0123456789abcdef0123456789abcdef";
const KEY_SECRET: &str = "api-key-secret-8d2b4e61c0";
const NUMBER: &str = "+493012345678";
const PN: &str = "PN0123456789abcdef0123456789abcdef";
const PUBLIC: &str = "https://ignis.example.com";

/// A stand-in with one account and `numbers`, on its own runtime.
struct Twilio {
    server: TwilioApiServer,
    _rt: tokio::runtime::Runtime,
}

impl Twilio {
    fn start(numbers: Vec<PhoneNumber>) -> Twilio {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut api = TwilioApi::new(ACCOUNT, TOKEN);
        api.api_keys.push((KEY_SID.into(), KEY_SECRET.into()));
        api.numbers = numbers;
        let server = rt.block_on(TwilioApiServer::start(api)).unwrap();
        Twilio { server, _rt: rt }
    }

    /// The accepted writes; also checks that nothing else was even attempted.
    fn writes(&self) -> Vec<Write> {
        let state = self.server.state();
        let posts = state.requests.iter().filter(|(m, _)| m != "GET").count();
        assert_eq!(posts, state.writes.len(), "{:?}", state.requests);
        state.writes.clone()
    }
}

fn number() -> PhoneNumber {
    let mut n = PhoneNumber::new(PN, NUMBER);
    n.voice_url = Some("https://demo.twilio.com/welcome/voice/".into());
    n.voice_method = "GET".into();
    n
}

/// Runs `ignis twilio configure ARGS` with a clean environment plus `vars` (a value of "" unsets).
fn configure(t: &Twilio, vars: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ignis"));
    let dir = TempDir::new("twilio-configure");
    c.env_clear().current_dir(&dir);
    let base = t.server.base();
    let defaults = [
        ("PUBLIC_URL", PUBLIC),
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("TWILIO_ACCOUNT_SID", ACCOUNT),
        ("TWILIO_PHONE_NUMBER", NUMBER),
        ("TWILIO_API_BASE", base.as_str()),
        ("TWILIO_MONITOR_API_BASE", base.as_str()),
    ];
    for (k, v) in defaults {
        c.env(k, v);
    }
    for (k, v) in vars {
        c.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = c.args(["twilio", "configure"]).args(args).output().unwrap();
    drop(dir);
    let (out, err) = (
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    );
    for secret in [TOKEN, KEY_SECRET, "wrong-token-0000000000"] {
        assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
    }
    (status.code().unwrap_or(-1), out, err)
}

fn number_writes(t: &Twilio) -> Vec<Vec<(String, String)>> {
    t.writes()
        .into_iter()
        .map(|w| match w {
            Write::Number { sid, fields } => {
                assert_eq!(sid, PN);
                fields
            }
            other => panic!("unexpected write {other:?}"),
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn dry_run_shows_the_plan_and_writes_nothing() {
    let t = Twilio::start(vec![number()]);
    let (code, out, err) = configure(&t, &[], &["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    // The number masked like everywhere (its last three digits), the SID in full.
    assert!(out.contains("+…678") && out.contains(PN), "{out}");
    assert!(!out.contains(NUMBER), "{out}");
    assert!(out.contains("field") && out.contains("now") && out.contains("wanted"));
    assert!(out.contains("* VoiceUrl") && out.contains("https://demo.twilio.com/welcome/voice/"));
    assert!(
        out.contains("https://ignis.example.com/api/twilio/voice"),
        "{out}"
    );
    assert!(
        out.contains("* VoiceMethod") && out.contains("* StatusCallback "),
        "{out}"
    );
    // Already POST: shown, not changed.
    assert!(out.contains("  StatusCallbackMethod"), "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert!(t.writes().is_empty());
    println!("{out}");
}

#[test]
fn a_real_run_sets_exactly_the_changed_fields_and_a_second_run_is_a_no_op() {
    let mut n = number();
    n.status_callback_method = "GET".into();
    let t = Twilio::start(vec![n]);
    let (code, out, err) = configure(&t, &[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        number_writes(&t),
        vec![pairs(&[
            ("VoiceUrl", "https://ignis.example.com/api/twilio/voice"),
            ("VoiceMethod", "POST"),
            (
                "StatusCallback",
                "https://ignis.example.com/api/twilio/status"
            ),
            ("StatusCallbackMethod", "POST"),
        ])]
    );
    assert!(out.contains("done"), "{out}");
    println!("{out}");
    let state = t.server.state().number(NUMBER).cloned().unwrap();
    assert_eq!(state.voice_method, "POST");

    let (code, out, _) = configure(&t, &[], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("already configured"), "{out}");
    assert_eq!(t.writes().len(), 1, "the second run wrote");
    let (code, out, _) = configure(&t, &[], &["--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("already configured"), "{out}");
}

#[test]
fn application_and_trunk_overrides_are_refused_with_an_explanation() {
    let mut app = number();
    app.voice_application_sid = Some("AP0123456789abcdef0123456789abcdef".into());
    let t = Twilio::start(vec![app]);
    let (code, _, err) = configure(&t, &[], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("voice_application_sid"), "{err}");
    assert!(
        err.contains("never be called") && err.contains("VoiceApplicationSid"),
        "{err}"
    );
    assert!(t.writes().is_empty());

    let mut trunk = number();
    trunk.trunk_sid = Some("TK0123456789abcdef0123456789abcdef".into());
    let t = Twilio::start(vec![trunk]);
    let (code, _, err) = configure(&t, &[], &["--dry-run"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("trunk_sid") && err.contains("TrunkSid"),
        "{err}"
    );
    assert!(t.writes().is_empty());
}

#[test]
fn a_number_without_voice_or_in_fax_mode_is_refused() {
    let mut no_voice = number();
    no_voice.voice = false;
    let t = Twilio::start(vec![no_voice]);
    let (code, _, err) = configure(&t, &[], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no voice capability"), "{err}");

    let mut fax = number();
    fax.voice_receive_mode = "fax".into();
    let t = Twilio::start(vec![fax]);
    let (code, _, err) = configure(&t, &[], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("fax"), "{err}");
    assert!(t.writes().is_empty());
}

#[test]
fn bad_configuration_exits_2() {
    let t = Twilio::start(vec![number()]);
    let (code, _, err) = configure(&t, &[("PUBLIC_URL", "http://ignis.example.com")], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("https://"), "{err}");
    let (code, _, err) = configure(&t, &[("TWILIO_ACCOUNT_SID", "")], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TWILIO_ACCOUNT_SID"), "{err}");
    let (code, _, err) = configure(&t, &[("TWILIO_PHONE_NUMBER", "")], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--number"), "{err}");
    let (code, _, _) = configure(&t, &[], &["--number", "030123"]);
    assert_eq!(code, 2);
    assert!(t.writes().is_empty());
}

#[test]
fn refused_credentials_and_unknown_numbers_exit_1_with_the_fix() {
    let t = Twilio::start(vec![number()]);
    let (code, _, err) = configure(&t, &[("TWILIO_AUTH_TOKEN", "wrong-token-0000000000")], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("20003"), "{err}");
    assert!(
        err.contains("credentials refused: check TWILIO_API_KEY_SID/SECRET or TWILIO_AUTH_TOKEN"),
        "{err}"
    );
    // Another account's SID with these credentials: Twilio answers 401 too.
    let other = "AC11111111111111111111111111111111";
    let (code, _, err) = configure(&t, &[("TWILIO_ACCOUNT_SID", other)], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("credentials refused"), "{err}");
    let (code, _, err) = configure(&t, &[], &["--number", "+493099999999"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("+…999 is not a number of this account"),
        "{err}"
    );
    assert!(t.writes().is_empty());
}

#[test]
fn the_number_is_found_on_a_later_page_among_partial_matches() {
    // 60 longer numbers contain NUMBER (the filter matches partially), listed first.
    let mut numbers: Vec<PhoneNumber> = (0..60)
        .map(|i| PhoneNumber::new(&format!("PN{:032x}", i + 1000), &format!("{NUMBER}{i:02}")))
        .collect();
    numbers.push(number());
    let t = Twilio::start(numbers);
    let (code, out, err) = configure(&t, &[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(PN), "{out}");
    assert_eq!(number_writes(&t).len(), 1);
    let state = t.server.state();
    let lists: Vec<&str> = state
        .requests
        .iter()
        .filter(|(m, target)| m == "GET" && target.contains("IncomingPhoneNumbers.json?"))
        .map(|(_, target)| target.as_str())
        .collect();
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert!(lists[1].contains("&Page=1&PageToken="), "{lists:?}");
    assert_eq!(state.number(NUMBER).unwrap().voice_method, "POST");
    assert_eq!(
        state.number(&format!("{NUMBER}00")).unwrap().voice_url,
        None
    );
}

#[test]
fn api_key_credentials_are_used_when_set() {
    let t = Twilio::start(vec![number()]);
    // The auth token in the environment is wrong: only the API key can succeed.
    let vars = [
        ("TWILIO_AUTH_TOKEN", "wrong-token-0000000000"),
        ("TWILIO_API_KEY_SID", KEY_SID),
        ("TWILIO_API_KEY_SECRET", KEY_SECRET),
    ];
    let (code, out, err) = configure(&t, &vars, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("API key"), "{out}");
    assert_eq!(number_writes(&t).len(), 1);
    let (code, _, err) = configure(
        &t,
        &[
            ("TWILIO_API_KEY_SID", KEY_SID),
            ("TWILIO_API_KEY_SECRET", "wrong-token-0000000000"),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("credentials refused"), "{err}");
}

#[test]
fn a_fallback_url_is_set_when_given() {
    let t = Twilio::start(vec![number()]);
    let fallback = "https://handler.twilio.com/twiml/EH0123";
    let (code, out, err) = configure(&t, &[("TWILIO_VOICE_FALLBACK_URL", fallback)], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let writes = number_writes(&t);
    assert_eq!(writes.len(), 1);
    // VoiceFallbackMethod is already POST: not sent.
    assert_eq!(
        writes[0],
        pairs(&[
            ("VoiceUrl", "https://ignis.example.com/api/twilio/voice"),
            ("VoiceMethod", "POST"),
            (
                "StatusCallback",
                "https://ignis.example.com/api/twilio/status"
            ),
            ("VoiceFallbackUrl", fallback),
        ])
    );
    let (code, out, _) = configure(&t, &[("TWILIO_VOICE_FALLBACK_URL", fallback)], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("already configured"), "{out}");
}
