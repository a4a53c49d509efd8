//! `ignis demo`: one bridged call on this machine, through the real server and the same code
//! paths a phone call takes (signed webhook, pre-connect, signed stream, bridge, audio paths,
//! practice tools), with a local agent instead of ElevenLabs and a simulated caller instead of
//! Twilio. Writes what the caller heard to a WAV file and prints a summary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::caller::{self, CallerOptions, CallerReport, SpeakAt};
use super::local_agent::{AgentLog, LOCAL_AGENT_ID, LocalAgent, LocalAgentOptions};
use crate::audio::format::AgentFormat;
use crate::audio::{mulaw, wav};
use crate::config::Config;
use crate::practice::{Practice, PracticeSettings};
use crate::routes::App;

/// The greeting the local agent speaks (espeak-ng, German, 8 kHz 16-bit mono).
const GREETING_WAV: &[u8] = include_bytes!("../demo/greet.wav");
/// What the simulated caller says by default (espeak-ng, German, 8 kHz 16-bit mono).
const CALLER_WAV: &[u8] = include_bytes!("../demo/caller.wav");

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The agent's audio format (`ulaw_8000` pass-through or `pcm_16000` transcoding, or any).
    pub format: AgentFormat,
    /// The caller's speech: a WAV file (16-bit PCM, any rate) or the bundled clip.
    pub wav: Option<Vec<u8>>,
    /// Talk over the greeting (exercises barge-in).
    pub barge_in: bool,
}

/// The demo's result.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// What the caller heard, 8 kHz PCM.
    pub heard: Vec<i16>,
    /// Twilio start to the first agent audio at the caller.
    pub setup: Option<Duration>,
    /// Practice tool calls answered ok, and run.
    pub tool_steps: (usize, usize),
    /// Interruptions the agent sent; clears the caller received.
    pub interruptions: u64,
    /// `clear` messages the caller received.
    pub clears: u64,
    /// Dynamic variables the agent received.
    pub dynamic_variables: usize,
    /// The call's recorded outcome.
    pub outcome: String,
    /// Printable summary.
    pub text: String,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The caller's speech as Twilio sends it (8 kHz μ-law): from a WAV file (16-bit PCM, any rate)
/// or the bundled clip.
pub fn caller_speech(wav_bytes: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let caller_wav = wav::parse(wav_bytes.unwrap_or(CALLER_WAV)).map_err(|e| e.to_string())?;
    let caller_pcm = wav::resample_clip(&caller_wav, 8000).map_err(|e| e.to_string())?;
    Ok(caller_pcm
        .iter()
        .map(|&s| mulaw::encode_sample(s))
        .collect())
}

/// The server, its practice and the local agent, running for one demo call.
struct Stage {
    addr: std::net::SocketAddr,
    auth_token: String,
    app: Arc<App>,
    agent: LocalAgent,
    dir: std::path::PathBuf,
    /// The demo call's SID (set once it is placed).
    call_sid: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn randomness(e: std::io::Error) -> String {
    format!("no OS randomness: {e}")
}

/// Starts the local agent, the practice on a throwaway database and the real server.
async fn stage(format: AgentFormat) -> Result<Stage, String> {
    let greeting = wav::parse(GREETING_WAV).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let public = format!("http://{addr}");
    let auth_token = super::random_hex(16).map_err(randomness)?;
    let tools_token = super::random_hex(16).map_err(randomness)?;
    let agent = LocalAgent::start(LocalAgentOptions {
        format,
        greeting: greeting.samples,
        tools: Some((public.clone(), tools_token.clone())),
    })
    .await
    .map_err(|e| e.to_string())?;

    let vars: HashMap<String, String> = [
        ("PUBLIC_URL", public.as_str()),
        ("TWILIO_AUTH_TOKEN", auth_token.as_str()),
        ("ELEVENLABS_AGENT_ID", LOCAL_AGENT_ID),
        ("ELEVENLABS_API_BASE", agent.base.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = Config::from_vars(&vars, false).map_err(|e| e.to_string())?;

    // The practice on a throwaway database with the demo patients.
    let dir = std::env::temp_dir().join(format!(
        "ignis-demo-{}-{}",
        std::process::id(),
        super::random_hex(4).map_err(randomness)?
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let db = dir.join("ignis.db").to_string_lossy().into_owned();
    let settings = PracticeSettings::from_lookup(|k| match k {
        "TOOLS_TOKEN" => Some(tools_token.clone()),
        "IGNIS_DB" => Some(db.clone()),
        _ => None,
    })
    .map_err(|e| e.to_string())?;
    let (practice, _thread) = Practice::open(
        &settings,
        crate::practice::config::PracticeConfig::demo(),
        super::practice_now(),
    )
    .map_err(|e| e.to_string())?;

    let app = Arc::new(App::with_practice(config, practice));
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve(listener, app.clone(), async {
        let _ = stop_rx.await;
    }));
    Ok(Stage {
        addr,
        auth_token,
        app,
        agent,
        dir,
        call_sid: String::new(),
        stop,
        server,
    })
}

/// Runs the demo call.
pub async fn run(opts: DemoOptions) -> Result<DemoSummary, String> {
    let (stage, summary) = call(opts).await?;
    stage.stop().await;
    Ok(summary)
}

/// The name of `ignis demo --staff`'s staff account.
pub const DEMO_STAFF_NAME: &str = "demo";
/// Random bytes of the demo staff password (printed once, as hex).
const DEMO_PASSWORD_BYTES: usize = 12;

/// `ignis demo --staff`: the server still running after the call, with a staff login.
pub struct StaffDemo {
    /// The staff page: `http://127.0.0.1:PORT/staff`.
    pub url: String,
    /// The staff page on the day of the demo call's booking (`…/staff?day=YYYY-MM-DD`).
    pub booking_url: Option<String>,
    /// The account's name ([`DEMO_STAFF_NAME`]).
    pub name: &'static str,
    /// Its random password.
    pub password: String,
    stage: Stage,
}

impl StaffDemo {
    /// Stops the server and removes the demo's database.
    pub async fn stop(self) {
        self.stage.stop().await;
    }
}

/// Runs the demo call, then leaves the server running with the demo staff account.
pub async fn run_with_staff(opts: DemoOptions) -> Result<(DemoSummary, StaffDemo), String> {
    let (stage, summary) = call(opts).await?;
    let password = super::random_hex(DEMO_PASSWORD_BYTES).map_err(randomness)?;
    let mut salt = [0u8; crate::practice::staff::auth::SALT_BYTES];
    super::os_random(&mut salt).map_err(randomness)?;
    let app = Arc::clone(&stage.app);
    let (pw, sid) = (password.clone(), stage.call_sid.clone());
    // argon2id and the store's blocking call: not on the async workers.
    let day = tokio::task::spawn_blocking(move || add_demo_staff(&app, &pw, salt, &sid))
        .await
        .map_err(|e| e.to_string())??;
    let url = format!("http://{}/staff", stage.addr);
    Ok((
        summary,
        StaffDemo {
            booking_url: day.map(|d| format!("{url}?day={d}")),
            url,
            name: DEMO_STAFF_NAME,
            password,
            stage,
        },
    ))
}

/// Adds the demo staff account; the local day of the appointment the call booked, if any.
fn add_demo_staff(
    app: &App,
    password: &str,
    salt: [u8; crate::practice::staff::auth::SALT_BYTES],
    call_sid: &str,
) -> Result<Option<jiff::civil::Date>, String> {
    let practice = app.practice.as_ref().ok_or("the demo has no practice")?;
    let phc =
        crate::practice::staff::auth::hash_password(password, salt).map_err(|e| e.to_string())?;
    let now = super::practice_now().as_second();
    let sid = call_sid.to_owned();
    let booked = practice
        .store()
        .call_blocking(move |s| {
            s.add_staff_user(DEMO_STAFF_NAME, &phc, now)?;
            let all = s.staff_day_appointments(0, i64::MAX, 100)?;
            Ok(all
                .into_iter()
                .filter(|a| a.call_sid.as_deref() == Some(sid.as_str()))
                .map(|a| a.row.start)
                .max())
        })
        .map_err(|e| format!("store: {e:?}"))?
        .map_err(|e: crate::practice::store::StoreError| e.to_string())?;
    Ok(booked.and_then(|start| {
        let at = jiff::Timestamp::from_second(start).ok()?;
        Some(crate::practice::calendar::local(&practice.config(), at).date)
    }))
}

impl Stage {
    /// Stops the server, waits for it, removes the demo's database.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the demo call on a new stage; the stage keeps running.
async fn call(opts: DemoOptions) -> Result<(Stage, DemoSummary), String> {
    let speech = caller_speech(opts.wav.as_deref())?;
    let stage = stage(opts.format).await?;
    let addr = stage.addr;
    let call_sid = format!("CA{}", super::random_hex(16).map_err(randomness)?);
    let report = caller::run(CallerOptions {
        stream_url: format!("ws://{addr}/api/twilio/stream"),
        webhook_url: Some(format!("http://{addr}/api/twilio/voice")),
        auth_token: stage.auth_token.clone(),
        call_sid: call_sid.clone(),
        from: crate::practice::demo::DEMO_CALLER_NUMBER.to_owned(),
        to: "+493000000000".to_owned(),
        speech,
        speak_at: if opts.barge_in {
            SpeakAt::After(Duration::from_millis(1500))
        } else {
            SpeakAt::AfterGreeting
        },
        tail: Duration::from_secs(6),
        max_duration: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
    })
    .await;
    // Let the call's end reach the registry and the metrics.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut stage = stage;
    stage.call_sid = call_sid.clone();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            stage.stop().await;
            return Err(e.to_string());
        }
    };
    let log = stage
        .agent
        .log
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    let outcome = stage
        .app
        .calls
        .outcome(&call_sid)
        .map_or("unknown", |o| o.as_str());
    let summary = summarize(opts.format, report, &log, outcome);
    Ok((stage, summary))
}

/// The demo's figures, and their printable summary.
fn summarize(
    format: AgentFormat,
    report: CallerReport,
    log: &AgentLog,
    outcome: &str,
) -> DemoSummary {
    let setup = match (report.started_at, report.first_audio_at) {
        (Some(s), Some(a)) => ms(a.duration_since(s)),
        _ => "no agent audio".into(),
    };
    let inbound = match (report.first_speech_sent_at, log.first_speech_received_at) {
        (Some(s), Some(r)) if r >= s => ms(r.duration_since(s)),
        _ => "n/a (no speech detected)".into(),
    };
    // The first echo audio to reach the caller after the agent sent it.
    let outbound = log
        .first_echo_sent_at
        .and_then(|sent| {
            report
                .audio_arrivals
                .iter()
                .find(|&&t| t >= sent)
                .map(|t| t.duration_since(sent))
        })
        .map_or("n/a (no echo)".into(), ms);
    let heard_secs = report.heard.len() as f64 / 8000.0;
    let text = format!(
        "ignis demo: one call through the real server ({format}, {mode})\n\
         \x20 set-up     Twilio start -> first agent audio at the caller: {setup}\n\
         \x20 latency    caller -> agent, first speech frame sent -> agent received it: {inbound}\n\
         \x20            agent -> caller, echo sent -> caller received it: {outbound}\n\
         \x20 frames     {sent} sent by the caller, {recv} heard ({heard_secs:.1} s of audio)\n\
         \x20 barge-in   {interruptions} interruption(s), {clears} clear(s) received by the caller\n\
         \x20 agent      {pongs}/{pings} pings answered, {vars} dynamic variables received\n\
         \x20 practice   {ok}/{steps} tool calls answered ok (identify, slots, book, reschedule, cancel, request, emergency)\n\
         \x20 ending     {ended}; call outcome: {outcome}\n",
        format = format.as_str(),
        mode = if format.is_ulaw() {
            "pass-through"
        } else {
            "transcoding"
        },
        sent = report.frames_sent,
        recv = report.frames_received,
        interruptions = log.interruptions,
        clears = report.clears,
        pongs = log.pongs,
        pings = log.pings,
        vars = log.dynamic_variable_names.len(),
        ok = log.tool_steps_ok,
        steps = log.tool_steps,
        ended = report.ended_by,
    );
    DemoSummary {
        heard: report.heard,
        setup: report
            .started_at
            .zip(report.first_audio_at)
            .map(|(s, a)| a.duration_since(s)),
        tool_steps: (log.tool_steps_ok, log.tool_steps),
        interruptions: log.interruptions,
        clears: report.clears,
        dynamic_variables: log.dynamic_variable_names.len(),
        outcome: outcome.to_owned(),
        text,
    }
}
