use std::collections::HashMap;

use super::*;
use crate::setup::Status;

const AC: &str = "AC0123456789abcdef0123456789abcdef";

fn config(extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("PUBLIC_URL", "https://ignis.example.com"),
        ("TWILIO_AUTH_TOKEN", "the-auth-token-123"),
        ("TWILIO_ACCOUNT_SID", AC),
        ("TWILIO_API_BASE", "http://127.0.0.1:9"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_vars(&vars, false).unwrap()
}

fn resp(status: u16, body: &str) -> ClientResponse {
    ClientResponse {
        status,
        body: body.as_bytes().to_vec(),
    }
}

fn number(json: &str) -> IncomingNumber {
    serde_json::from_str(json).unwrap()
}

fn good() -> IncomingNumber {
    number(
        r#"{"sid":"PN1","phone_number":"+493012345678",
        "voice_url":"https://ignis.example.com/api/twilio/voice","voice_method":"POST",
        "status_callback":"https://ignis.example.com/api/twilio/status",
        "status_callback_method":"POST","voice_application_sid":"","trunk_sid":null,
        "voice_receive_mode":"voice","capabilities":{"voice":true,"sms":true}}"#,
    )
}

#[test]
fn credentials_prefer_the_api_key_and_never_show_the_secret() {
    let a = TwilioAuth::from_config(&config(&[])).unwrap();
    assert!(!a.uses_api_key());
    let key = "SK0123456789abcdef0123456789abcdef";
    let b = TwilioAuth::from_config(&config(&[
        ("TWILIO_API_KEY_SID", key),
        ("TWILIO_API_KEY_SECRET", "key-secret-value"),
    ]))
    .unwrap();
    assert!(b.uses_api_key());
    let (_, req) = NumberSearch::start(b.clone(), "+493012345678").unwrap();
    let text = String::from_utf8(req.bytes).unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:key-secret-value"));
    assert!(
        text.contains(&format!("Authorization: Basic {basic}\r\n")),
        "{text}"
    );
    assert!(text.starts_with(&format!(
        "GET /2010-04-01/Accounts/{AC}/IncomingPhoneNumbers.json?PhoneNumber=%2B493012345678&PageSize={LIST_PAGE_SIZE} HTTP/1.1"
    )));
    assert!(!format!("{b:?}").contains("key-secret-value"));
    let mut vars = config(&[]);
    vars.twilio_account_sid = None;
    assert!(TwilioAuth::from_config(&vars).is_none());
    assert!(SetupError::NoAccountSid.is_configuration());
}

#[test]
fn the_search_matches_exactly_and_follows_only_the_same_list() {
    let auth = TwilioAuth::from_config(&config(&[])).unwrap();
    assert_eq!(
        NumberSearch::start(auth.clone(), "030123").err(),
        Some(SetupError::BadNumber)
    );
    let (mut s, _) = NumberSearch::start(auth.clone(), "+493012345678").unwrap();
    let next = format!(
        "/2010-04-01/Accounts/{AC}/IncomingPhoneNumbers.json?PhoneNumber=%2B493012345678&PageSize=50&Page=1&PageToken=PA1"
    );
    let page1 = format!(
        r#"{{"incoming_phone_numbers":[{{"sid":"PN9","phone_number":"+4930123456789"}}],"next_page_uri":"{next}"}}"#
    );
    match s.on_response(&resp(200, &page1)).unwrap() {
        SearchStep::Request(r) => assert_eq!(r.endpoint.target, next),
        other => panic!("{other:?}"),
    }
    let page2 = r#"{"incoming_phone_numbers":[{"sid":"PN1","phone_number":"+493012345678"}],"next_page_uri":null}"#;
    match s.on_response(&resp(200, page2)).unwrap() {
        SearchStep::Found(n) => assert_eq!(n.sid, "PN1"),
        other => panic!("{other:?}"),
    }
    // The last page without it; a next page elsewhere; an error answer.
    let (mut s, _) = NumberSearch::start(auth.clone(), "+493012345678").unwrap();
    let empty = r#"{"incoming_phone_numbers":[],"next_page_uri":null}"#;
    assert!(matches!(
        s.on_response(&resp(200, empty)),
        Err(SetupError::NotFound { .. })
    ));
    let (mut s, _) = NumberSearch::start(auth.clone(), "+493012345678").unwrap();
    let evil = r#"{"incoming_phone_numbers":[],"next_page_uri":"/2010-04-01/Accounts/ACother/IncomingPhoneNumbers.json?Page=1"}"#;
    assert!(matches!(
        s.on_response(&resp(200, evil)),
        Err(SetupError::BadResponse(_))
    ));
    let (mut s, _) = NumberSearch::start(auth, "+493012345678").unwrap();
    let e = s
        .on_response(&resp(
            401,
            r#"{"code":20003,"message":"Authenticate","more_info":"x","status":401}"#,
        ))
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("20003") && text.contains("credentials refused"),
        "{text}"
    );
    assert!(!e.is_configuration());
}

#[test]
fn the_search_stops_after_its_page_limit() {
    let auth = TwilioAuth::from_config(&config(&[])).unwrap();
    let (mut s, _) = NumberSearch::start(auth, "+493012345678").unwrap();
    let page = format!(
        r#"{{"incoming_phone_numbers":[],"next_page_uri":"/2010-04-01/Accounts/{AC}/IncomingPhoneNumbers.json?Page=2"}}"#
    );
    for _ in 1..MAX_LIST_PAGES {
        assert!(matches!(
            s.on_response(&resp(200, &page)),
            Ok(SearchStep::Request(_))
        ));
    }
    assert_eq!(
        s.on_response(&resp(200, &page)).err(),
        Some(SetupError::TooManyPages)
    );
}

#[test]
fn desired_settings_follow_public_url_and_the_fallback() {
    let d = Desired::from_config(&config(&[])).unwrap();
    assert_eq!(d.0.len(), 4);
    assert_eq!(
        d.0[0],
        (
            Field::VoiceUrl,
            "https://ignis.example.com/api/twilio/voice".into()
        )
    );
    let d = Desired::from_config(&config(&[(
        "TWILIO_VOICE_FALLBACK_URL",
        "https://f.example/x",
    )]))
    .unwrap();
    assert_eq!(
        d.0[4],
        (Field::VoiceFallbackUrl, "https://f.example/x".into())
    );
    assert_eq!(d.0[5], (Field::VoiceFallbackMethod, "POST".into()));
    let err =
        Desired::from_config(&config(&[("PUBLIC_URL", "http://ignis.example.com")])).unwrap_err();
    assert_eq!(err, SetupError::PublicUrlNotHttps);
    assert!(err.is_configuration());
}

#[test]
fn plans_change_only_what_differs_and_refuse_overrides() {
    let d = Desired::from_config(&config(&[])).unwrap();
    let p = plan(&good(), &d).unwrap();
    assert!(p.changed().is_empty());
    assert_eq!(p.update_body(), "");
    let mut n = good();
    n.voice_method = Some("GET".into());
    n.status_callback = None;
    n.status_callback_method = Some("post".into()); // case does not matter for methods
    let p = plan(&n, &d).unwrap();
    assert_eq!(p.changed(), ["VoiceMethod", "StatusCallback"]);
    assert_eq!(
        p.update_body(),
        "VoiceMethod=POST&StatusCallback=https%3A%2F%2Fignis.example.com%2Fapi%2Ftwilio%2Fstatus"
    );
    let table = p.render();
    assert!(
        table.contains("* VoiceMethod") && table.contains("(unset)"),
        "{table}"
    );
    assert!(table.lines().next().unwrap().contains("field") && table.contains("| wanted"));

    let mut app = good();
    app.voice_application_sid = Some("AP1".into());
    assert_eq!(plan(&app, &d), Err(Refusal::Application("AP1".into())));
    let mut trunk = good();
    trunk.trunk_sid = Some("TK1".into());
    assert_eq!(plan(&trunk, &d), Err(Refusal::Trunk("TK1".into())));
    let mut fax = good();
    fax.voice_receive_mode = Some("fax".into());
    assert_eq!(plan(&fax, &d), Err(Refusal::Fax));
    let mut mute = good();
    mute.capabilities = Some(Capabilities { voice: Some(false) });
    assert_eq!(plan(&mute, &d), Err(Refusal::NoVoice));
    assert!(
        Refusal::Application("AP1".into())
            .to_string()
            .contains("never be called")
    );
}

#[test]
fn the_update_sends_only_changes_and_is_checked_after() {
    let cfg = config(&[]);
    let auth = TwilioAuth::from_config(&cfg).unwrap();
    let d = Desired::from_config(&cfg).unwrap();
    let mut n = good();
    n.voice_method = Some("GET".into());
    let p = plan(&n, &d).unwrap();
    let req = update_request(&auth, &p).unwrap();
    let text = String::from_utf8(req.bytes).unwrap();
    assert!(text.starts_with(&format!(
        "POST /2010-04-01/Accounts/{AC}/IncomingPhoneNumbers/PN1.json HTTP/1.1\r\n"
    )));
    assert!(text.contains("Content-Type: application/x-www-form-urlencoded\r\n"));
    assert!(text.ends_with("\r\n\r\nVoiceMethod=POST"), "{text}");
    let ok = r#"{"sid":"PN1","phone_number":"+493012345678","voice_url":"https://ignis.example.com/api/twilio/voice","voice_method":"POST","status_callback":"https://ignis.example.com/api/twilio/status","status_callback_method":"POST"}"#;
    assert!(on_update_response(&resp(200, ok), &d).is_ok());
    let stale = ok.replace("\"voice_method\":\"POST\"", "\"voice_method\":\"GET\"");
    assert_eq!(
        on_update_response(&resp(200, &stale), &d).err(),
        Some(SetupError::NotApplied(vec!["VoiceMethod"]))
    );
    let bad = r#"{"code":21206,"message":"VoiceMethod is not valid","status":400}"#;
    let e = on_update_response(&resp(400, bad), &d).unwrap_err();
    assert!(e.to_string().contains("21206"), "{e}");
}

#[test]
fn error_bodies_are_read_tolerantly_and_shortened() {
    let e = ApiError::from_response(&resp(503, "<html>busy</html>"));
    assert_eq!((e.status, e.code, e.message.as_str()), (503, None, ""));
    let long = format!(r#"{{"code":20404,"message":"{}\n"}}"#, "x".repeat(1000));
    let e = ApiError::from_response(&resp(404, &long));
    assert_eq!(e.code, Some(20404));
    assert_eq!(e.message.chars().count(), MAX_ERROR_MESSAGE_CHARS);
    assert!(!e.is_auth());
    assert!(e.fix().contains("errors/20404"));
}

#[test]
fn credentials_in_the_current_urls_are_never_shown() {
    let d = Desired::from_config(&config(&[])).unwrap();
    let mut old = good();
    old.voice_url = Some("https://office:s3cret-pass@old.example/voice?token=s3cret-query".into());
    old.status_callback = Some("https://old.example/status#s3cret-fragment".into());
    let check = number_check(&old, &d);
    let plan = plan(&old, &d).unwrap().render();
    for shown in [check.detail.as_str(), plan.as_str()] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("https://…@old.example/voice?…"), "{shown}");
        assert!(shown.contains("https://old.example/status?…"), "{shown}");
    }
    // What the update sends is ignis's own URLs, untouched.
    assert!(
        plan.contains("https://ignis.example.com/api/twilio/voice"),
        "{plan}"
    );
    // A wanted fallback URL carrying a token is shown without it, and sent whole.
    let d = Desired::from_config(&config(&[(
        "TWILIO_VOICE_FALLBACK_URL",
        "https://f.example/x?token=s3cret-wanted",
    )]))
    .unwrap();
    let p = super::plan(&old, &d).unwrap();
    assert!(!p.render().contains("s3cret"), "{}", p.render());
    assert!(
        p.update_body().contains("s3cret-wanted"),
        "{}",
        p.update_body()
    );
    assert_eq!(without_credentials("POST"), "POST");
    assert_eq!(
        without_credentials("https://a.example"),
        "https://a.example"
    );
}

#[test]
fn doctor_number_check_names_the_fix() {
    let d = Desired::from_config(&config(&[])).unwrap();
    assert_eq!(number_check(&good(), &d).status, Status::Pass);
    let mut get = good();
    get.voice_method = Some("GET".into());
    let c = number_check(&get, &d);
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("VoiceMethod is GET"), "{c}");
    assert!(c.fix.as_deref().unwrap().contains("ignis twilio configure"));
    let mut app = good();
    app.voice_application_sid = Some("AP1".into());
    assert!(
        number_check(&app, &d)
            .fix
            .unwrap()
            .contains("voice_application_sid")
    );
    let auth = SetupError::Api(ApiError {
        status: 401,
        code: Some(20003),
        message: "Authenticate".into(),
    });
    let c = number_error_check(&auth);
    assert!(c.fix.unwrap().starts_with("credentials refused"));
}

#[test]
fn alerts_are_filtered_to_this_host_and_explained() {
    let auth = TwilioAuth::from_config(&config(&[])).unwrap();
    let req = alerts_request(&auth, "error", 1_800_000_000).unwrap();
    assert!(
        req.endpoint.target.starts_with(
            "/v1/Alerts?LogLevel=error&StartDate=2027-01-14T08%3A00%3A00Z&EndDate=2027-01-15T08%3A00%3A00Z&PageSize="
        ),
        "{}",
        req.endpoint.target
    );
    let body = r#"{"alerts":[
        {"sid":"NO1","error_code":"11200","log_level":"error","request_url":"https://ignis.example.com/api/twilio/voice","resource_sid":"CA1","date_created":"2027-01-15T07:00:00Z"},
        {"sid":"NO2","error_code":"31920","log_level":"error","request_url":"wss://IGNIS.example.com/api/twilio/stream","resource_sid":"CA2"},
        {"sid":"NO3","error_code":"11200","log_level":"error","request_url":"https://other.example/voice","resource_sid":"CA3"},
        {"sid":"NO4","error_code":"20003","log_level":"error","request_url":null}
    ],"meta":{"next_page_url":null,"key":"alerts"}}"#;
    let (alerts, more) = parse_alerts(&resp(200, body)).unwrap();
    assert_eq!((alerts.len(), more), (4, false));
    let c = alerts_check(&alerts, "ignis.example.com", more);
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.starts_with("2 alert(s)"), "{c}");
    let fix = c.fix.unwrap();
    assert!(fix.contains("11200") && fix.contains("signature"), "{fix}");
    assert!(fix.contains("31920") && fix.contains("Upgrade"), "{fix}");
    assert!(!fix.contains("CA3"));
    assert_eq!(
        alerts_check(&alerts[2..], "ignis.example.com", false).status,
        Status::Pass
    );
    // Only the first page read and nothing of ours on it: not checked, not passed.
    assert_eq!(
        alerts_check(&alerts[2..], "ignis.example.com", true).status,
        Status::Skip
    );
    // 31921 comes with every call ignis ends: expected, and said so.
    let closed = r#"{"alerts":[
        {"sid":"NO5","error_code":"31921","log_level":"warning","request_url":"wss://ignis.example.com/api/twilio/stream/abc","resource_sid":"CA5"}
    ],"meta":{"next_page_url":null,"key":"alerts"}}"#;
    let (closed, _) = parse_alerts(&resp(200, closed)).unwrap();
    let c = alerts_check(&closed, "ignis.example.com", false);
    assert_eq!(c.status, Status::Pass, "{c}");
    assert!(c.detail.contains("1 × 31921"), "{c}");
    assert_eq!(
        public_host(&config(&[("PUBLIC_URL", "https://h.example:8443")])),
        "h.example"
    );
}

#[test]
fn every_code_of_the_table_is_explained() {
    for code in [
        "11200", "11205", "11206", "11217", "11202", "11220", "11235", "11236", "11237", "12100",
        "12300", "11750", "31901", "31902", "31903", "31910", "31920", "31921", "31922", "31923",
        "31924", "31930", "31931", "31941", "31950", "31951", "21631", "21649",
    ] {
        let (meaning, cause) = explain(code).unwrap_or_else(|| panic!("{code}"));
        assert!(!meaning.is_empty() && !cause.is_empty());
    }
    assert_eq!(explain("99999"), None);
}

#[test]
fn values_from_twilio_are_shown_without_control_characters() {
    let d = Desired::from_config(&config(&[])).unwrap();
    let mut n = good();
    n.voice_url = Some("https://x.example/\u{1b}[2Jv".into());
    let table = plan(&n, &d).unwrap().render();
    assert!(
        !table.contains('\u{1b}') && table.contains("https://x.example/[2Jv"),
        "{table}"
    );
    n.trunk_sid = Some("TK\u{7}1".into());
    assert_eq!(plan(&n, &d), Err(Refusal::Trunk("TK1".into())));
    assert_eq!(
        shown(&"x".repeat(1000)).len(),
        crate::setup::MAX_SHOWN_CHARS
    );
    let e = SetupError::Unreachable("api.twilio.com".into(), "connection refused".into());
    let c = number_error_check(&e);
    assert!(c.detail.contains("api.twilio.com") && c.fix.unwrap().contains("TWILIO_API_BASE"));
    assert!(!e.is_configuration());
}

#[test]
fn what_configure_and_the_doctor_ask_is_decided_from_the_configuration() {
    assert!(matches!(
        configure_target(&config(&[]), None),
        Err(SetupError::NoNumber)
    ));
    let (number, _, _) = configure_target(&config(&[]), Some("+493012345678")).unwrap();
    assert_eq!(number, "+493012345678");
    let with_number = config(&[("TWILIO_PHONE_NUMBER", "+493099999999")]);
    let (number, _, _) = configure_target(&with_number, None).unwrap();
    assert_eq!(number, "+493099999999");
    let mut no_sid = with_number.clone();
    no_sid.twilio_account_sid = None;
    assert!(matches!(
        configure_target(&no_sid, None),
        Err(SetupError::NoAccountSid)
    ));

    let DoctorPlan::Skip(skips) = doctor_plan(&no_sid) else {
        panic!("asks without an account SID")
    };
    assert!(
        skips
            .iter()
            .all(|c| c.status == Status::Skip && c.detail.contains("TWILIO_ACCOUNT_SID")),
        "{skips:?}"
    );
    let DoctorPlan::Ask { number: Err(c), .. } = doctor_plan(&config(&[])) else {
        panic!("asks for no number")
    };
    assert_eq!((c.id, c.status), ("twilio_number", Status::Skip));
    assert!(c.detail.contains("TWILIO_PHONE_NUMBER"));
    let DoctorPlan::Ask {
        number: Ok((n, _)), ..
    } = doctor_plan(&with_number)
    else {
        panic!("does not ask for the number")
    };
    assert_eq!(n, "+493099999999");
}
