use super::*;

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const PN: &str = "PN0123456789abcdef0123456789abcdef";

fn api() -> TwilioApi {
    let mut api = TwilioApi::new(AC, "token");
    api.api_keys.push(("SKkey".into(), "keysecret".into()));
    api.numbers.push(PhoneNumber::new(PN, "+493012345678"));
    api.calls.push(("CA1".into(), "in-progress".into()));
    api
}

fn basic(user: &str, pass: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Authorization: Basic {enc}\r\n")
}

/// Sends `method target` with `auth` (a header line or "") and a form `body`.
fn call(api: &mut TwilioApi, method: &str, target: &str, auth: &str, body: &str) -> (u16, Value) {
    let raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (head, body) = read_request(raw.as_bytes()).unwrap().unwrap();
    let resp = api.handle(&head, &body, 1_800_000_000);
    let v = serde_json::from_slice(&resp.body).unwrap();
    (resp.status, v)
}

fn list(q: &str) -> String {
    format!("/2010-04-01/Accounts/{AC}/IncomingPhoneNumbers.json{q}")
}

#[test]
fn authentication_is_basic_with_the_token_or_an_api_key_of_this_account() {
    let mut api = api();
    let (s, v) = call(&mut api, "GET", &list(""), "", "");
    assert_eq!(
        (s, v["code"].as_u64(), v["status"].as_u64()),
        (401, Some(20003), Some(401))
    );
    assert!(v["message"].is_string() && v["more_info"].is_string());
    assert_eq!(
        call(&mut api, "GET", &list(""), &basic(AC, "nope"), "").0,
        401
    );
    assert_eq!(
        call(&mut api, "GET", &list(""), &basic(AC, "token"), "").0,
        200
    );
    assert_eq!(
        call(&mut api, "GET", &list(""), &basic("SKkey", "keysecret"), "").0,
        200
    );
    assert_eq!(
        call(&mut api, "GET", &list(""), &basic("SKkey", "token"), "").0,
        401
    );
    // Valid credentials, another account in the path.
    let other = "/2010-04-01/Accounts/AC11111111111111111111111111111111/IncomingPhoneNumbers.json";
    let (s, v) = call(&mut api, "GET", other, &basic(AC, "token"), "");
    assert_eq!((s, v["code"].as_u64()), (401, Some(20003)));
}

#[test]
fn unknown_sids_are_404_and_wrong_methods_405() {
    let mut api = api();
    let auth = basic(AC, "token");
    let unknown = format!("/2010-04-01/Accounts/{AC}/IncomingPhoneNumbers/PNffff.json");
    let (s, v) = call(&mut api, "GET", &unknown, &auth, "");
    assert_eq!((s, v["code"].as_u64()), (404, Some(20404)));
    let (s, v) = call(
        &mut api,
        "POST",
        &format!("/2010-04-01/Accounts/{AC}/Calls/CA9.json"),
        &auth,
        "Status=completed",
    );
    assert_eq!((s, v["code"].as_u64()), (404, Some(20404)));
    assert_eq!(call(&mut api, "DELETE", &list(""), &auth, "").0, 405);
    assert_eq!(call(&mut api, "POST", "/v1/Alerts", &auth, "").0, 405);
    assert!(api.writes.is_empty());
}

#[test]
fn lists_match_partially_with_wildcards_and_page() {
    assert!(matches_partially("+493012345678", "+4930"));
    assert!(matches_partially("+493012345678", "2345"));
    assert!(matches_partially("+493012345678", "+49**12"));
    assert!(!matches_partially("+493012345678", "+4940"));
    assert!(!matches_partially("+49301", "+493012"));
    let mut api = api();
    for i in 0..5 {
        api.numbers.push(PhoneNumber::new(
            &format!("PN{i}"),
            &format!("+493012345678{i}"),
        ));
    }
    api.numbers.push(PhoneNumber::new("PNx", "+4940111"));
    let auth = basic(AC, "token");
    let (s, v) = call(
        &mut api,
        "GET",
        &list("?PhoneNumber=%2B4930*2345678&PageSize=4"),
        &auth,
        "",
    );
    assert_eq!(s, 200);
    assert_eq!(v["incoming_phone_numbers"].as_array().unwrap().len(), 4);
    assert_eq!(
        (v["page"].as_u64(), v["page_size"].as_u64()),
        (Some(0), Some(4))
    );
    assert!(v["previous_page_uri"].is_null());
    let next = v["next_page_uri"].as_str().unwrap().to_owned();
    assert!(
        next.starts_with(&list("?PhoneNumber=%2B4930%2A2345678&PageSize=4&Page=1")),
        "{next}"
    );
    assert_eq!(
        v["uri"],
        list("?PhoneNumber=%2B4930%2A2345678&PageSize=4&Page=0")
    );
    let (_, v) = call(&mut api, "GET", &next, &auth, "");
    let page: Vec<&str> = v["incoming_phone_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["phone_number"].as_str().unwrap())
        .collect();
    assert_eq!(page, ["+4930123456783", "+4930123456784"]);
    assert!(v["next_page_uri"].is_null());
    assert_eq!(
        call(&mut api, "GET", &list("?PageSize=1001"), &auth, "").0,
        400
    );
}

#[test]
fn a_number_has_the_documented_fields() {
    let mut api = api();
    let path = format!("/2010-04-01/Accounts/{AC}/IncomingPhoneNumbers/{PN}.json");
    let (s, v) = call(&mut api, "GET", &path, &basic(AC, "token"), "");
    assert_eq!(s, 200);
    for field in [
        "sid",
        "account_sid",
        "phone_number",
        "friendly_name",
        "voice_url",
        "voice_method",
        "voice_fallback_url",
        "voice_fallback_method",
        "status_callback",
        "status_callback_method",
        "voice_application_sid",
        "trunk_sid",
        "voice_receive_mode",
        "capabilities",
        "status",
        "uri",
        "date_created",
        "date_updated",
        "api_version",
    ] {
        assert!(v.get(field).is_some(), "{field}");
    }
    assert_eq!(v["capabilities"]["voice"], true);
    assert_eq!(v["uri"], path);
    assert!(v["date_created"].as_str().unwrap().ends_with("+0000"));
}

#[test]
fn updates_apply_known_fields_validate_methods_and_log_the_form() {
    let mut api = api();
    let auth = basic(AC, "token");
    let path = format!("/2010-04-01/Accounts/{AC}/IncomingPhoneNumbers/{PN}.json");
    let (s, v) = call(&mut api, "POST", &path, &auth, "VoiceMethod=PUT");
    assert_eq!(
        (s, v["code"].as_u64()),
        (400, Some(u64::from(CODE_INVALID_METHOD)))
    );
    let (s, _) = call(&mut api, "POST", &path, &auth, "VoiceUrl=not-a-url");
    assert_eq!(s, 400);
    assert!(api.writes.is_empty(), "a refused update is not a write");
    let body = "VoiceUrl=https%3A%2F%2Fa.example%2Fv&VoiceMethod=GET&Unknown=1";
    let (s, v) = call(&mut api, "POST", &path, &auth, body);
    assert_eq!(s, 200);
    assert_eq!(
        (v["voice_url"].as_str(), v["voice_method"].as_str()),
        (Some("https://a.example/v"), Some("GET"))
    );
    assert_eq!(api.numbers[0].date_updated, 1_800_000_000);
    assert_eq!(
        api.writes,
        [Write::Number {
            sid: PN.into(),
            fields: vec![
                ("VoiceUrl".into(), "https://a.example/v".into()),
                ("VoiceMethod".into(), "GET".into()),
                ("Unknown".into(), "1".into()),
            ],
        }]
    );
    // An application and a trunk exclude each other; "" clears.
    let ap = "AP0123456789abcdef0123456789abcdef";
    let tk = "TK0123456789abcdef0123456789abcdef";
    call(&mut api, "POST", &path, &auth, &format!("TrunkSid={tk}"));
    let (_, v) = call(
        &mut api,
        "POST",
        &path,
        &auth,
        &format!("VoiceApplicationSid={ap}"),
    );
    assert_eq!(
        (
            v["voice_application_sid"].as_str(),
            v["trunk_sid"].is_null()
        ),
        (Some(ap), true)
    );
    let (_, v) = call(&mut api, "POST", &path, &auth, "VoiceApplicationSid=");
    assert_eq!(v["voice_application_sid"], "");
    assert_eq!(call(&mut api, "POST", &path, &auth, "TrunkSid=TK12").0, 400);
}

#[test]
fn call_updates_are_recorded() {
    let mut api = api();
    let auth = basic(AC, "token");
    let path = format!("/2010-04-01/Accounts/{AC}/Calls/CA1.json");
    assert_eq!(
        call(
            &mut api,
            "POST",
            &path,
            &auth,
            "Twiml=x&Url=https%3A%2F%2Fa"
        )
        .0,
        400
    );
    assert_eq!(call(&mut api, "GET", &path, &auth, "").0, 405);
    let (s, v) = call(&mut api, "POST", &path, &auth, "Twiml=%3CResponse%2F%3E");
    assert_eq!((s, v["status"].as_str()), (200, Some("in-progress")));
    let (_, v) = call(&mut api, "POST", &path, &auth, "Status=completed");
    assert_eq!(v["status"], "completed");
    assert_eq!(
        api.writes[0],
        Write::Call {
            sid: "CA1".into(),
            fields: vec![("Twiml".into(), "<Response/>".into())]
        }
    );
}

#[test]
fn monitor_lists_alerts_by_level_and_date_and_fetches_one() {
    let mut api = api();
    let t = 1_800_000_000;
    api.alerts = vec![
        Alert::new(
            "NO1",
            "11200",
            "error",
            "https://ignis.example.com/api/twilio/voice",
            "CA1",
            t - 3600,
        ),
        Alert::new(
            "NO2",
            "31930",
            "warning",
            "wss://ignis.example.com/api/twilio/stream",
            "CA2",
            t - 60,
        ),
        Alert::new(
            "NO3",
            "11205",
            "error",
            "https://x.example/v",
            "CA3",
            t - 3 * 86_400,
        ),
    ];
    let auth = basic("SKkey", "keysecret");
    let start = crate::http::date::rfc3339(t - 86_400);
    let q = format!("/v1/Alerts?LogLevel=error&StartDate={start}&EndDate=2027-12-31&PageSize=50");
    let (s, v) = call(&mut api, "GET", &q, &auth, "");
    assert_eq!(s, 200);
    let sids: Vec<&str> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["sid"].as_str().unwrap())
        .collect();
    assert_eq!(sids, ["NO1"]);
    assert_eq!(v["meta"]["key"], "alerts");
    assert!(v["meta"]["next_page_url"].is_null());
    assert!(
        v["meta"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://monitor.twilio.com/v1/Alerts?LogLevel=error")
    );
    assert!(v["alerts"][0].get("response_body").is_none());
    let (_, v) = call(&mut api, "GET", "/v1/Alerts?PageSize=1", &auth, "");
    assert_eq!(v["alerts"][0]["sid"], "NO2", "newest first");
    assert!(v["meta"]["next_page_url"].is_string());
    let (s, v) = call(&mut api, "GET", "/v1/Alerts/NO1", &auth, "");
    assert_eq!((s, v["error_code"].as_str()), (200, Some("11200")));
    assert!(v.get("response_body").is_some());
    assert_eq!(call(&mut api, "GET", "/v1/Alerts/NO9", &auth, "").0, 404);
    assert_eq!(
        call(&mut api, "GET", "/v1/Alerts?StartDate=yesterday", &auth, "").0,
        400
    );
    assert_eq!(call(&mut api, "GET", "/v1/Alerts", "", "").0, 401);
}
