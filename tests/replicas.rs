//! Several ignis processes on one PostgreSQL behind the shipped `deploy/replicas/nginx.conf`
//! (issue 15 point 6; docs/replicas.md §4–5): real `ignis serve` processes in fleet mode, a real
//! nginx, a real PostgreSQL, signed Twilio requests over TLS, and one stand-in agent for all
//! replicas. Each test has its own database server, replicas and nginx (`tests/common/replicas.rs`).
//!
//! The rolling upgrade at the end is the README's procedure ("Several replicas and zero-downtime
//! upgrades"), step by step.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::call_params;
use common::fake_agent::{AgentConn, user_audio};
use common::fake_twilio::TwilioCall;
use common::replicas::*;
use ignis::fleet::LEASE_TTL;
use ignis::practice::demo::DEMO_CALLER_NUMBER;
use ignis::practice::tools::error::UNAVAILABLE_MESSAGE;
use serde_json::Value;

/// How long a replica's lease may outlive it: `LEASE_TTL` (docs/replicas.md §3) plus generous
/// slack.
const LEASE_LAPSES_WITHIN: Duration = Duration::from_secs(LEASE_TTL.as_secs() + 15);

/// CallSids of one test: `CA` + 32 hex digits.
fn sid(test: u8, i: u32) -> String {
    format!("CA{test:02x}{i:030x}")
}

fn json(r: &common::Resp) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON: {}", r.text()))
}

/// The identify request of the demo patient Maria Weber (docs/practice-tools.md §3.2).
const IDENTIFY: &str = r#"{"family_name":"Weber","given_name":"Maria","birth_date":"1972-08-22"}"#;

/// The call's tool token, as the agent received it (`secret__ignis_call`).
fn token_of(agent: &AgentConn) -> String {
    agent.initiation["dynamic_variables"]["secret__ignis_call"]
        .as_str()
        .expect("secret__ignis_call")
        .to_owned()
}

/// A live call: the caller's stream and the agent conversation bridged to it.
struct Live {
    a: Answered,
    caller: TwilioCall,
    agent: AgentConn,
}

/// Audio both ways, byte for byte: the bridge runs.
async fn audio_flows(live: &mut Live, seed: u8) {
    let greeting = pattern(1600, seed);
    live.agent.send_audio(1, &greeting);
    assert_eq!(
        live.caller.audio(greeting.len(), T).await,
        greeting,
        "agent → caller on {}",
        live.a.sid
    );
    let speech = pattern(1600, seed.wrapping_add(101));
    live.caller.send_audio(&speech);
    let msgs = live.agent.recv_audio(speech.len(), T).await;
    assert_eq!(
        user_audio(&msgs),
        speech,
        "caller → agent on {}",
        live.a.sid
    );
}

/// The agent ends the conversation normally: the caller's stream closes with 1000 (nothing is
/// cut) and `<Connect action>` through nginx answers the hang-up, not the fallback.
async fn ends_normally(fleet: &Fleet, mut live: Live) {
    live.agent.close(1000);
    let (code, _) = live.caller.closed(T).await;
    assert_eq!(code, Some(1000), "{} closed abnormally", live.a.sid);
    let r = fleet.via_nginx(&fleet.stream_ended(&live.a)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("<Hangup/>") && !r.text().contains("<Dial>"),
        "{}: {}",
        live.a.sid,
        r.text()
    );
}

/// A call answered (through nginx) by replica `n`. Voice webhooks are sent one after another
/// until one lands there (round robin); the others are then ended by their status callback (the
/// caller hung up before the stream). Sent in between, the callbacks would take every other
/// turn of the round robin.
async fn answer_on(fleet: &Fleet, n: usize, sids: &mut impl Iterator<Item = String>) -> Answered {
    let mut elsewhere = Vec::new();
    for _ in 0..8 {
        let a = fleet.answer(&sids.next().unwrap()).await;
        if a.owner == replica_id(n) {
            for other in &elsewhere {
                hang_up_before_stream(fleet, other).await;
            }
            return a;
        }
        elsewhere.push(a);
    }
    panic!("nginx never sent a voice webhook to ignis-{n}");
}

/// Twilio's final status callback for a call whose stream never opened.
async fn hang_up_before_stream(fleet: &Fleet, a: &Answered) {
    let r = fleet
        .via_nginx(&fleet.status_callback(&a.sid, "completed"))
        .await;
    assert!(r.status < 300, "status callback: {} {}", r.status, r.text());
}

/// The agent conversation that serves `a`'s stream once it is open: `preconnected` (taken at
/// the webhook, before the stream), or, when nginx sent the stream to another replica (the
/// owner's own upstream can still hold the failure mark of its restart for `fail_timeout`,
/// docs/replicas.md §5.1), the one the adopting replica opened (the pre-connected one is
/// closed then).
async fn serving_agent(fleet: &Fleet, a: &Answered, preconnected: AgentConn) -> AgentConn {
    let deadline = Instant::now() + T;
    let runs_on = loop {
        if let Some(r) = fleet.stream_replica(&a.sid).await {
            break r;
        }
        assert!(Instant::now() < deadline, "no stream replica for {}", a.sid);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if runs_on == a.owner {
        preconnected
    } else {
        fleet.agent_for(&a.sid, T).await
    }
}

/// Answers a call on replica `n`, opens its stream through nginx and checks the audio.
async fn live_on(fleet: &Fleet, n: usize, sids: &mut impl Iterator<Item = String>) -> Live {
    let a = answer_on(fleet, n, sids).await;
    let caller = fleet.open_stream(&a).await;
    let agent = fleet.agent_for(&a.sid, T).await;
    let mut live = Live { a, caller, agent };
    audio_flows(&mut live, n as u8).await;
    // nginx routed the stream by its replica segment to the replica that answered.
    assert_eq!(
        fleet.stream_replica(&live.a.sid).await,
        Some(replica_id(n)),
        "{}",
        live.a.stream_path
    );
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_spread_and_callbacks_streams_and_stream_ended_work_on_any_replica() {
    let fleet = Fleet::start(2, &[]).await;
    let mut sids = (1..).map(|i| sid(1, i));

    // Voice webhooks through nginx land on both replicas (round robin); their status
    // callbacks end them wherever they land.
    let mut owners = BTreeMap::new();
    let mut calls = Vec::new();
    for _ in 0..4 {
        let a = fleet.answer(&sids.next().unwrap()).await;
        *owners.entry(a.owner.clone()).or_insert(0) += 1;
        calls.push(a);
    }
    assert_eq!(owners.len(), 2, "{owners:?}");
    for a in &calls {
        hang_up_before_stream(&fleet, a).await;
    }
    fleet.wait_leases(0, T).await;

    // A call on ignis-1 ends normally; its stream-ended at ignis-2 answers from the shared
    // outcome.
    let live = live_on(&fleet, 1, &mut sids).await;
    let a = live.a.clone();
    ends_normally(&fleet, live).await;
    let r = fleet.replica(2).direct(&fleet.stream_ended(&a)).await;
    assert!(r.text().contains("<Hangup/>"), "{}", r.text());
    assert_eq!(
        fleet.call_row(&a.sid).await,
        Some(("ended".into(), Some("completed".into())))
    );

    // A call on ignis-1 whose status callback (the caller hung up) reaches ignis-2: the stream
    // and the agent on ignis-1 are torn down (NOTIFY).
    let mut live = live_on(&fleet, 1, &mut sids).await;
    let r = fleet
        .replica(2)
        .direct(&fleet.status_callback(&live.a.sid, "completed"))
        .await;
    assert!(r.status < 300, "{}", r.text());
    live.caller.closed(T).await;
    assert!(
        live.agent.closed_within(T).await,
        "the agent was not closed"
    );

    // A call answered by ignis-1 whose stream reaches ignis-2: ignis-2 claims it, ignis-1's
    // pre-connected agent is closed at once, and ignis-2's own agent takes the call.
    let a = answer_on(&fleet, 1, &mut sids).await;
    let mut preconnected = fleet.agent_for(&a.sid, T).await;
    let caller = fleet.open_stream_at(&a, 2).await;
    assert!(
        preconnected.closed_within(T).await,
        "ignis-1's pre-connected agent stayed open"
    );
    let agent = fleet.agent_for(&a.sid, T).await;
    let mut live = Live { a, caller, agent };
    audio_flows(&mut live, 7).await;
    // Its stream-ended goes (by the URL) to ignis-1, which did not run the stream: it answers
    // from the shared outcome.
    ends_normally(&fleet, live).await;

    fleet.wait_leases(0, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tool_requests_find_their_call_on_any_replica_and_follow_a_taken_over_call() {
    let fleet = Fleet::start(2, &[]).await;
    let mut sids = (1..).map(|i| sid(7, i));

    // A call on ignis-1: its tool requests work at ignis-2 and through nginx.
    let live = live_on(&fleet, 1, &mut sids).await;
    let token = token_of(&live.agent);
    let identify = fleet.tool("POST", "/api/patients/identify", IDENTIFY, &token);
    // ignis-1 first (see the note on the taken-over call below).
    for r in [
        fleet.replica(1).direct(&identify).await,
        fleet.replica(2).direct(&identify).await,
        fleet.via_nginx(&identify).await,
    ] {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(json(&r)["ok"], true, "{}", r.text());
    }
    // (After the call, its token lives on for CALL_GRACE_SECS: tests/practice_tools.rs.)
    ends_normally(&fleet, live).await;

    // A call answered by ignis-1 whose stream reaches ignis-2: ignis-2's agent gets a new
    // token that works everywhere, and the pre-connected agent's token stops working.
    let a = answer_on(&fleet, 1, &mut sids).await;
    let preconnected = fleet.agent_for(&a.sid, T).await;
    let old_token = token_of(&preconnected);
    let caller = fleet.open_stream_at(&a, 2).await;
    let agent = fleet.agent_for(&a.sid, T).await;
    let new_token = token_of(&agent);
    assert_ne!(new_token, old_token);
    let live = Live { a, caller, agent };
    // ignis-2 first: its own request is queued behind the token's registration, so after its
    // answer the token is committed for every replica. (A request at another replica within
    // milliseconds of the agent's connect could come before that commit: docs/replicas.md §6.)
    for n in [2, 1] {
        let r = fleet
            .replica(n)
            .direct(&fleet.tool("POST", "/api/patients/identify", IDENTIFY, &new_token))
            .await;
        assert_eq!(json(&r)["ok"], true, "ignis-{n}: {}", r.text());
        let r = fleet
            .replica(n)
            .direct(&fleet.tool("POST", "/api/patients/identify", IDENTIFY, &old_token))
            .await;
        assert_eq!(r.status, 403, "ignis-{n}: {}", r.text());
        assert_eq!(json(&r)["error"], "call_not_active");
    }
    ends_normally(&fleet, live).await;
    fleet.wait_leases(0, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_the_replicas_calls_play_to_their_end_and_releases_its_leases() {
    let mut fleet = Fleet::start(2, &[("DRAIN_SECONDS", "60")]).await;
    let mut sids = (1..).map(|i| sid(2, i));
    let mut live = live_on(&fleet, 1, &mut sids).await;
    fleet.wait_leases(1, T).await;

    fleet.replica(1).sigterm();
    fleet.replica(1).wait_ready_status(503, T).await;
    assert!(
        fleet.replica_mut(1).running(),
        "ignis-1 quit with a live call"
    );

    // New calls go to ignis-2: three voice webhooks in a row, of which nginx's round robin
    // sends at least one to ignis-1 first; its 503 is retried on ignis-2.
    let mut new_calls = Vec::new();
    for _ in 0..3 {
        let a = fleet.answer(&sids.next().unwrap()).await;
        assert_eq!(a.owner, "ignis-2", "a draining replica took a new call");
        new_calls.push(a);
    }
    let retried = |l: &[String]| l.iter().any(|l| l.contains("upstream=503, 200"));
    let voice = fleet
        .access_lines_until("POST /api/twilio/voice", retried)
        .await;
    assert!(
        retried(&voice),
        "no voice webhook was retried after ignis-1's 503: {voice:#?}"
    );
    for a in &new_calls {
        hang_up_before_stream(&fleet, a).await;
    }

    // ignis-1's call goes on: audio both ways, its tools, then a normal end.
    audio_flows(&mut live, 21).await;
    let token = token_of(&live.agent);
    let r = fleet
        .via_nginx(&fleet.tool("POST", "/api/patients/identify", IDENTIFY, &token))
        .await;
    assert_eq!(json(&r)["ok"], true, "{}", r.text());
    let sid_1 = live.a.sid.clone();
    ends_normally(&fleet, live).await;

    // With its last call over, ignis-1 exits by itself, long before DRAIN_SECONDS.
    let status = fleet.replica_mut(1).exited_within(T).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "ignis-1 did not exit cleanly: {status:?}"
    );
    assert_eq!(
        fleet.call_row(&sid_1).await,
        Some(("ended".into(), Some("completed".into())))
    );
    assert!(fleet.heartbeat_released("ignis-1").await);
    fleet.wait_leases(0, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_sends_the_caller_to_a_person_within_a_second_and_leaks_no_lease() {
    let mut fleet = Fleet::start(2, &[]).await;
    let mut sids = (1..).map(|i| sid(3, i));
    let mut live = live_on(&fleet, 1, &mut sids).await;
    fleet.wait_leases(1, T).await;

    fleet.replica_mut(1).sigkill();
    // nginx closes Twilio's socket when ignis-1's side is gone; Twilio then asks the
    // `<Connect action>` (ignis-1's URL: nginx falls back to ignis-2).
    live.caller.closed(T).await;
    let lost = Instant::now();
    let r = fleet.via_nginx(&fleet.stream_ended(&live.a)).await;
    let answered_after = lost.elapsed();
    assert!(
        r.text()
            .contains(&format!("<Dial><Number>{FALLBACK_NUMBER}</Number></Dial>")),
        "{}",
        r.text()
    );
    assert!(
        answered_after < Duration::from_secs(1),
        "fallback after {answered_after:?}"
    );
    // nginx tried ignis-1 (the URL's replica), then its backup.
    let ignis_2 = format!("127.0.0.1:{}", fleet.replica(2).port);
    let tried = fleet
        .access_lines_until("POST /api/twilio/stream-ended/ignis-1", |l| !l.is_empty())
        .await;
    assert!(
        tried.len() == 1 && tried[0].contains(&format!(", {ignis_2} ")),
        "{tried:#?}"
    );

    // New calls go to ignis-2.
    let a = fleet.answer(&sids.next().unwrap()).await;
    assert_eq!(a.owner, "ignis-2");
    hang_up_before_stream(&fleet, &a).await;

    // Nobody cleans up after a SIGKILL: the dead replica's lease lapses with its heartbeat.
    fleet.wait_leases(0, LEASE_LAPSES_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_bookings_of_one_slot_through_three_replicas_one_wins() {
    const CALLS: u32 = 40;
    let fleet = Fleet::start(3, &[]).await;

    // 40 live calls from the demo patient's number, spread over the three replicas.
    let mut lives = Vec::new();
    let mut owners = BTreeMap::new();
    for i in 1..=CALLS {
        let mut params = call_params(&sid(4, i));
        for (k, v) in params.iter_mut() {
            if k == "From" {
                *v = DEMO_CALLER_NUMBER.into();
            }
        }
        let a = fleet.answer_with(&params).await;
        *owners.entry(a.owner.clone()).or_insert(0) += 1;
        let caller = fleet.open_stream(&a).await;
        let agent = fleet.agent_for(&a.sid, T).await;
        lives.push(Live { a, caller, agent });
    }
    assert_eq!(owners.len(), 3, "{owners:?}");

    // Each call identifies the patient and is offered the same first slot.
    let mut first_starts = Vec::new();
    let mut bookings = Vec::new();
    for live in &lives {
        let token = token_of(&live.agent);
        let r = fleet
            .via_nginx(&fleet.tool("POST", "/api/patients/identify", IDENTIFY, &token))
            .await;
        let v = json(&r);
        assert_eq!(v["match"], "unique", "{v}");
        let patient = v["patient_ref"].as_str().unwrap().to_owned();
        let r = fleet
            .via_nginx(&fleet.tool(
                "GET",
                "/api/appointments/slots?visit_type=kontrolle",
                "",
                &token,
            ))
            .await;
        let v = json(&r);
        let slot = &v["slots"][0];
        first_starts.push(slot["start"].as_str().unwrap().to_owned());
        let body = format!(
            r#"{{"slot_ref":"{}","patient_ref":"{patient}","visit_type":"kontrolle","reason_short":"Kontrolle"}}"#,
            slot["slot_ref"].as_str().unwrap()
        );
        bookings.push(fleet.tool("POST", "/api/appointments", &body, &token));
    }
    first_starts.dedup();
    assert_eq!(first_starts.len(), 1, "{first_starts:?}");

    // All 40 book it at once, through nginx onto the three replicas: exactly one wins.
    let tasks: Vec<_> = bookings
        .into_iter()
        .map(|raw| {
            let caller = fleet.caller.clone();
            tokio::spawn(async move { caller.roundtrip(&raw).await })
        })
        .collect();
    let mut results = BTreeMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = json(&r);
        let what = if v["ok"] == true {
            "booked".to_owned()
        } else {
            v["error"].as_str().unwrap_or("?").to_owned()
        };
        *results.entry(what).or_insert(0) += 1;
    }
    assert_eq!(
        results,
        BTreeMap::from([("booked".to_owned(), 1), ("slot_taken".to_owned(), 39)])
    );
    // ... and the bookings did run on all three replicas.
    let booked_at: std::collections::BTreeSet<String> = fleet
        .access_lines_until("POST /api/appointments", |l| l.len() >= CALLS as usize)
        .await
        .iter()
        .filter_map(|l| {
            l.split(" via=")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(booked_at.len(), 3, "{booked_at:?}");

    for mut live in lives {
        live.caller.hang_up();
        live.caller.closed(T).await;
    }
    fleet.wait_leases(0, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_mid_call_keeps_the_audio_and_tools_say_so_then_recover() {
    let fleet = Fleet::start(2, &[]).await;
    let mut sids = (1..).map(|i| sid(5, i));
    let mut live = live_on(&fleet, 1, &mut sids).await;
    let token = token_of(&live.agent);
    let identify = fleet.tool("POST", "/api/patients/identify", IDENTIFY, &token);
    assert_eq!(json(&fleet.via_nginx(&identify).await)["ok"], true);

    fleet.pg.stop();
    // The audio path never waits for the database.
    audio_flows(&mut live, 51).await;
    // Tool requests fail with an error the agent can say: ignis's answer every time, on every
    // replica (nginx does not turn the 503s into its own 502).
    for target in ["nginx", "nginx again", "ignis-1", "ignis-2"] {
        let r = match target {
            "ignis-1" => fleet.replica(1).direct(&identify).await,
            "ignis-2" => fleet.replica(2).direct(&identify).await,
            _ => fleet.via_nginx(&identify).await,
        };
        assert_eq!(r.status, 503, "{target}: {}", r.text());
        let v = json(&r);
        assert_eq!(v["ok"], false, "{target}: {v}");
        assert_eq!(v["error"], "unavailable", "{target}: {v}");
        assert_eq!(
            v["message"], UNAVAILABLE_MESSAGE,
            "{target}: no message for the agent: {v}"
        );
    }
    audio_flows(&mut live, 52).await;
    // New calls get the fallback (a person), and the replicas say they are not ready.
    let r = fleet
        .via_nginx(&fleet.webhook("/api/twilio/voice", &call_params(&sids.next().unwrap())))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("<Dial>") && !r.text().contains("<Stream"),
        "{}",
        r.text()
    );
    for n in [1, 2] {
        fleet.replica(n).wait_ready_status(503, T).await;
    }
    audio_flows(&mut live, 54).await;

    fleet.pg.start_server();
    for n in [1, 2] {
        fleet.replica(n).wait_ready().await;
    }
    let mut recovered = None;
    for _ in 0..100 {
        let r = fleet.via_nginx(&identify).await;
        if r.status == 200 {
            recovered = Some(json(&r));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = recovered.expect("tools did not recover after the database came back");
    assert_eq!(v["ok"], true, "{v}");
    audio_flows(&mut live, 53).await;
    ends_normally(&fleet, live).await;
    // New calls are taken again.
    let again = live_on(&fleet, 2, &mut sids).await;
    ends_normally(&fleet, again).await;
    fleet.wait_leases(0, T).await;
}

/// README.md, "Several replicas and zero-downtime upgrades", step by step, on both replicas,
/// with calls live on both throughout: nothing is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_upgrade_as_the_readme_describes_cuts_no_call() {
    let mut fleet = Fleet::start(2, &[("DRAIN_SECONDS", "60")]).await;
    let mut sids = (1..).map(|i| sid(6, i));
    let mut lives: Vec<Live> = Vec::new();
    for n in [1, 2] {
        lives.push(live_on(&fleet, n, &mut sids).await);
    }
    for n in [1, 2] {
        let id = replica_id(n);
        // 1. SIGTERM the replica.
        fleet.replica(n).sigterm();
        // 2. Its /health/ready turns 503.
        fleet.replica(n).wait_ready_status(503, T).await;
        // New calls go to the other replica, and stay live through this upgrade.
        let a = fleet.answer(&sids.next().unwrap()).await;
        assert_ne!(a.owner, id, "the draining replica took a new call");
        let preconnected = fleet.agent_for(&a.sid, T).await;
        let caller = fleet.open_stream(&a).await;
        let agent = serving_agent(&fleet, &a, preconnected).await;
        let mut new = Live { a, caller, agent };
        audio_flows(&mut new, 60 + n as u8).await;
        // 3. Its calls finish (audio flows until the agent ends them normally).
        let (mine, others): (Vec<Live>, Vec<Live>) =
            lives.into_iter().partition(|l| l.a.owner == id);
        lives = others;
        lives.push(new);
        assert!(!mine.is_empty());
        for mut live in mine {
            audio_flows(&mut live, 70 + n as u8).await;
            ends_normally(&fleet, live).await;
        }
        // ... and it exits by itself.
        let status = fleet.replica_mut(n).exited_within(T).await;
        assert!(status.is_some_and(|s| s.success()), "{id}: {status:?}");
        assert!(fleet.heartbeat_released(&id).await, "{id}'s leases");
        // 4. Start the new version (the same binary here), 5. wait until it is ready.
        fleet.replica_mut(n).spawn();
        fleet.replica(n).wait_ready().await;
        // 6. Before the next replica: nginx sends new calls to this one again (its 503s
        // marked it failed for fail_timeout).
        let mut back = false;
        // Bounded generously (30 s): nginx retries a peer fail_timeout (10 s) after its last
        // failure; on a loaded machine the restart itself can add a refused attempt.
        for _ in 0..60 {
            let a = fleet.answer(&sids.next().unwrap()).await;
            hang_up_before_stream(&fleet, &a).await;
            if a.owner == id {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !back {
            for line in fleet.access_lines("POST /api/twilio/") {
                eprintln!("nginx: {line}");
            }
        }
        assert!(back, "nginx does not send calls to the upgraded {id}");
    }
    // The calls started during the upgrade were never cut.
    for mut live in lives {
        audio_flows(&mut live, 90).await;
        ends_normally(&fleet, live).await;
    }
    fleet.wait_leases(0, T).await;
}

/// The staff login limiter holds across replicas: nginx sends one client address to one
/// replica (`upstream ignis_staff`, by address), so after five failures from it the sixth
/// attempt is refused (429) even with the right password. Round robin spread the five over
/// the two replicas (3 + 2), under each one's limit, and let the sixth in.
#[tokio::test]
async fn failed_staff_logins_from_one_address_are_limited_across_replicas() {
    use ignis::practice::staff::auth::{LOGIN_MAX_FAILURES, hash_password};
    const PASSWORD: &str = "Korrekt-Pferd-Batterie-7";
    let fleet = Fleet::start(2, &[]).await;
    let phc = hash_password(PASSWORD, [5; 16]).unwrap();
    fleet
        .db()
        .await
        .execute(
            "INSERT INTO staff_user (name, phc, created_at) VALUES ('anna', $1, 0)",
            &[&phc],
        )
        .await
        .unwrap();
    let host = fleet.caller.authority();
    let login = |password: &str| {
        let body = format!("name=anna&password={password}");
        format!(
            "POST /staff/login HTTP/1.1\r\nHost: {host}\r\nOrigin: https://{host}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    for i in 0..LOGIN_MAX_FAILURES {
        let r = fleet.via_nginx(&login("falsch-falsch-falsch")).await;
        assert_eq!(r.status, 403, "attempt {i}: {}", r.text());
    }
    let r = fleet.via_nginx(&login(PASSWORD)).await;
    // ignis's lock-out page, not nginx's own limit_req 429.
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("Zu viele Fehlversuche"), "{}", r.text());
    let n = LOGIN_MAX_FAILURES as usize + 1;
    let via: std::collections::BTreeSet<String> = fleet
        .access_lines_until("POST /staff/login", |l| l.len() >= n)
        .await
        .iter()
        .filter_map(|l| Some(l.split(" via=").nth(1)?.split(' ').next()?.to_owned()))
        .collect();
    assert_eq!(via.len(), 1, "{via:?}");
}

/// The per-account limit holds across replicas: its window is in the database. Guesses at one
/// account from four addresses, half on each replica (ten each, under
/// `ACCOUNT_MAX_FAILURES` = 20 on either alone), lock it for a fifth address on either
/// replica, even with the right password; the audit has one refusal. Before, each replica
/// counted its own ten and let the right password in (303). The desk the account logged in
/// from stays exempt on every replica (the trusted addresses are in the database too).
#[tokio::test]
async fn failed_staff_logins_at_one_account_are_limited_across_replicas() {
    use ignis::practice::staff::auth::{ACCOUNT_MAX_FAILURES, LOGIN_MAX_FAILURES, hash_password};
    const PASSWORD: &str = "Korrekt-Pferd-Batterie-7";
    let fleet = Fleet::start(2, &[]).await;
    let db = fleet.db().await;
    let phc = hash_password(PASSWORD, [5; 16]).unwrap();
    db.execute(
        "INSERT INTO staff_user (name, phc, created_at) VALUES ('anna', $1, 0)",
        &[&phc],
    )
    .await
    .unwrap();
    let host = fleet.caller.authority();
    // Straight to each replica: the peer is loopback, so ignis takes `X-Real-IP` as the
    // client's address, as behind nginx.
    let login = |address: &str, password: &str| {
        let body = format!("name=anna&password={password}");
        format!(
            "POST /staff/login HTTP/1.1\r\nHost: {host}\r\nX-Real-IP: {address}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    // anna's desk: she logs in there through the first replica.
    let desk = "192.0.2.200";
    let r = fleet.replicas[0].direct(&login(desk, PASSWORD)).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let addresses = ACCOUNT_MAX_FAILURES / LOGIN_MAX_FAILURES;
    for a in 0..addresses {
        for i in 0..LOGIN_MAX_FAILURES {
            let to = &fleet.replicas[((a + i) % 2) as usize];
            let r = to
                .direct(&login(&format!("198.51.100.{a}"), "falsch-falsch-falsch"))
                .await;
            assert_eq!(r.status, 403, "address {a}, attempt {i}: {}", r.text());
        }
    }
    for to in &fleet.replicas {
        let r = to.direct(&login("203.0.113.9", PASSWORD)).await;
        assert_eq!(r.status, 429, "{}: {}", to.id, r.text());
        assert!(r.text().contains("Zu viele Fehlversuche"), "{}", r.text());
    }
    // Her desk is trusted by every replica (the store remembers it), so the attack does not
    // lock her out there, whichever replica answers.
    for to in &fleet.replicas {
        let r = to.direct(&login(desk, PASSWORD)).await;
        assert_eq!(r.status, 303, "{}: {}", to.id, r.text());
    }
    let refusals: i64 = db
        .query_one(
            "SELECT count(*) FROM staff_audit WHERE who = 'anna' AND outcome = 'rate_limited'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refusals, 1, "the lock-out is audited once for the fleet");
}

/// What the kit promises that the live tests do not reach: the routing names every replica the
/// compose file runs, the single-host kit's stream settings are kept, and the drain outlasts
/// nobody's patience.
#[test]
fn shipped_replicas_kit_routes_every_replica_and_keeps_the_stream_settings() {
    let conf = SHIPPED_REPLICAS_CONF;
    let compose = SHIPPED_REPLICAS_COMPOSE;
    for n in 1..=SHIPPED_REPLICAS {
        let id = replica_id(n);
        let addr = shipped_addr(n);
        assert!(
            compose.contains(&format!("REPLICA_ID: {id}")),
            "{id} in the compose file"
        );
        let ip = addr.trim_end_matches(":8080");
        assert!(
            compose.contains(&format!("ipv4_address: {ip}")),
            "{id} at {ip} in the compose file"
        );
        assert!(
            conf.contains(&format!(
                "~^/api/twilio/stream(-ended)?/{id}(/|$)  ignis_{n};"
            )),
            "{id}'s map line"
        );
        assert!(conf.contains(&format!("upstream ignis_{n} {{")));
        // In ignis_any, ignis_staff, and as primary or backup in every replica's upstream.
        assert_eq!(conf.matches(&addr).count(), 2 + SHIPPED_REPLICAS, "{addr}");
    }
    // Every proxy_pass follows the map, with no URI part (signatures cover the raw target).
    for line in conf.lines().map(str::trim) {
        if line.starts_with("proxy_pass") {
            assert_eq!(line, "proxy_pass http://$ignis_upstream;");
        }
        assert!(!line.starts_with("rewrite"), "{line}");
    }
    // Retries: dead replicas everywhere, but a request already sent only for Twilio's webhooks
    // (a tool POST that reached a replica must never run twice); draining ones (503) for
    // Twilio's webhooks only.
    let webhooks = &conf[conf.find("location /api/twilio/ {").unwrap()..];
    let webhooks = &webhooks[..webhooks.find('}').unwrap()];
    assert!(
        webhooks.contains("proxy_next_upstream error timeout http_502 http_503 non_idempotent;")
    );
    let retries: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("proxy_next_upstream "))
        .collect();
    assert_eq!(
        retries,
        [
            "proxy_next_upstream error timeout;",
            "proxy_next_upstream error timeout http_502 http_503 non_idempotent;"
        ]
    );
    let stream = &conf[conf.find("location /api/twilio/stream/ {").unwrap()..];
    let stream = &stream[..stream.find('}').unwrap()];
    for line in [
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_read_timeout 3600s;",
        "proxy_send_timeout 3600s;",
        "proxy_buffering off;",
    ] {
        assert!(stream.contains(line), "{line} on the stream route");
    }
    // The drain outlasts nobody: Docker waits longer than DRAIN_SECONDS for each replica.
    let graces: Vec<u64> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("stop_grace_period:"))
        .map(|v| v.trim().trim_end_matches('s').parse().unwrap())
        .collect();
    assert!(
        graces
            .iter()
            .filter(|&&g| g > ignis::config::DEFAULT_DRAIN_SECONDS)
            .count()
            >= 2,
        "{graces:?}"
    );
    assert!(compose.contains("image: postgres:15"));
    assert!(compose.contains("- ignis-pg:/var/lib/postgresql/data"));
    // The recipe for a third replica produces a conf the test fleet can run.
    let three = add_replica(conf, 3);
    assert!(three.contains("upstream ignis_3 {"));
    for n in 1..=3 {
        assert_eq!(three.matches(&shipped_addr(n)).count(), 2 + 3, "{n}");
    }
    let staff = &three[three.find("upstream ignis_staff {").unwrap()..];
    let staff = &staff[..staff.find('}').unwrap()];
    assert!(staff.contains("hash $remote_addr consistent;"));
    assert!(!staff.contains("backup"), "{staff}");
    assert!(SHIPPED_REPLICAS_README.contains("## Adding a replica"));
}
