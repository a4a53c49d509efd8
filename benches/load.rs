//! Load generator (issue 6, part 2): N concurrent simulated Twilio calls, paced in real time, with
//! tone-onset probes both ways, pings, and an interruption now and then, against a separate
//! `ignis serve` process (pinned with `taskset`) and a stand-in agent hosted here.
//!
//! A `harness = false` bench rather than a `src/bin` binary: it needs no library or product
//! change, uses only dev-time code, and cargo hands it the path of the `ignis` binary built with
//! the same profile (`CARGO_BIN_EXE_ignis`).
//!
//! ```text
//! taskset -c 0 cargo bench --bench load -- --calls 1,100,300 --format ulaw_8000 --secs 30
//! ```
//! Options: `--calls N[,N…]` (default 100), `--format ulaw_8000|pcm_16000`, `--secs` steady-state
//! window (30), `--warmup` (5), `--ramp` calls started per second (100), `--probe-ms` (2000),
//! `--ignis-cpu` core for ignis (1; `none` = no taskset), `--soak-call-secs S` (calls end after
//! a random 0.5·S–1.5·S and are replaced, so calls start and end continuously), `--ignis-prefix
//! "CMD ARGS"` runs ignis under a profiler (e.g. `valgrind --tool=massif`; after `taskset`),
//! `--workload light|conversation` (light: a 200 ms agent burst per probe period, a silent caller
//! with tone probes; conversation: agent turns of 1–5 s, the caller speaking in between, onsets at
//! every position of the frame; steady: the issue-16 report's setup, the agent speaking 750 ms of
//! every second in real-time 250 ms chunks, light's caller; `support/loadgen.rs`),
//! `--backends sqlite[,postgres]` runs each call count once per store backend, side by side in
//! one run (`postgres` needs `--database-url postgres://…`: ignis then runs as a replica with
//! `DATABASE_URL` set, its call coordination and tools on that database; docs/replicas.md),
//! `--bridges ignis[,node][,floor]` runs each call count once per bridge, side by side in one
//! run, each pinned to `--ignis-cpu` (issue 16 point 6; BENCHMARKS.md "Side by side with the Node
//! example and the floor"): `node` is ElevenLabs' official Twilio example, prepared outside the
//! repository by `benches/peer/node-example.sh` and given with `--node-dir DIR`; `floor` is
//! `support/floor.rs`, this binary re-executed with `--serve-floor PORT AGENT_WS_URL`. Their
//! callers connect straight to `/media-stream` (no webhook); ignis's go through the signed
//! webhook as before.
//! `--audio-stages inline[,pipeline]` runs each call count once per `AUDIO_STAGES` mode, side by
//! side in one run (pipeline: the shared DSP pool, one worker per core ignis may use, so one
//! with `--ignis-cpu 1`; pool drops are logged as warnings).

#[path = "support/floor.rs"]
mod floor;
#[path = "support/loadgen.rs"]
mod loadgen;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ignis::audio::AudioStages;
use ignis::audio::format::AgentFormat;
use loadgen::{AgentOptions, CallOptions, CallerFrames, Stats, Workload};

#[derive(Clone)]
struct Args {
    calls: Vec<usize>,
    format: AgentFormat,
    workload: Workload,
    secs: u64,
    warmup: u64,
    ramp: u64,
    probe_ms: u64,
    ignis_cpu: Option<String>,
    soak_call_secs: Option<u64>,
    /// Words run before the ignis binary (a profiler), after `taskset`.
    ignis_prefix: Vec<String>,
    /// Store backends to run, in order.
    backends: Vec<Backend>,
    /// `DATABASE_URL` for the `postgres` backend.
    database_url: Option<String>,
    /// `AUDIO_STAGES` modes to run, in order (`--audio-stages`).
    audio_stages: Vec<AudioStages>,
    /// The mode of the run in progress (passed to ignis as `AUDIO_STAGES`).
    stages: AudioStages,
    /// Bridges to run, in order.
    bridges: Vec<Bridge>,
    /// The Node example's scratch directory (`benches/peer/node-example.sh`).
    node_dir: Option<std::path::PathBuf>,
}

/// The bridge under load (issue 16 point 6).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bridge {
    Ignis,
    /// ElevenLabs' official Twilio Node example.
    Node,
    /// Parse and forward, nothing else (`support/floor.rs`).
    Floor,
}

impl Bridge {
    fn parse(s: &str) -> Option<Bridge> {
        match s {
            "ignis" => Some(Bridge::Ignis),
            "node" => Some(Bridge::Node),
            "floor" => Some(Bridge::Floor),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Bridge::Ignis => "ignis",
            Bridge::Node => "node",
            Bridge::Floor => "floor",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

fn args() -> Args {
    let mut a = Args {
        calls: vec![100],
        format: AgentFormat::Ulaw8000,
        workload: Workload::Light,
        secs: 30,
        warmup: 5,
        ramp: 100,
        probe_ms: 2000,
        ignis_cpu: Some("1".into()),
        soak_call_secs: None,
        ignis_prefix: Vec::new(),
        backends: vec![Backend::Sqlite],
        database_url: None,
        bridges: vec![Bridge::Ignis],
        node_dir: None,
        audio_stages: vec![AudioStages::Inline],
        stages: AudioStages::Inline,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        let num = |v: &str| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("bad number {v}"))
        };
        match argv[i].as_str() {
            "--calls" => a.calls = v.split(',').map(|n| num(n) as usize).collect(),
            "--format" => {
                a.format = loadgen::parse_format(&v).expect("--format ulaw_8000|pcm_16000|…")
            }
            "--workload" => {
                a.workload = Workload::parse(&v).expect("--workload light|conversation|steady")
            }
            "--secs" => a.secs = num(&v),
            "--warmup" => a.warmup = num(&v),
            "--ramp" => a.ramp = num(&v).max(1),
            "--probe-ms" => a.probe_ms = num(&v),
            "--ignis-cpu" => a.ignis_cpu = (v != "none").then_some(v),
            "--soak-call-secs" => a.soak_call_secs = Some(num(&v)),
            "--ignis-prefix" => a.ignis_prefix = v.split_whitespace().map(String::from).collect(),
            "--backends" => {
                a.backends = v
                    .split(',')
                    .map(|b| match b {
                        "sqlite" => Backend::Sqlite,
                        "postgres" | "pg" => Backend::Postgres,
                        other => panic!("--backends sqlite,postgres, not {other}"),
                    })
                    .collect()
            }
            "--database-url" => a.database_url = Some(v),
            "--bridges" => {
                a.bridges = v
                    .split(',')
                    .map(|b| Bridge::parse(b).expect("--bridges ignis,node,floor"))
                    .collect()
            }
            "--node-dir" => a.node_dir = Some(v.into()),
            "--audio-stages" => a.audio_stages = parse_audio_stages(&v),
            _ => {
                i += 1; // `--bench` and friends from cargo
                continue;
            }
        }
        i += 2;
    }
    a
}

/// `--audio-stages inline,pipeline`.
fn parse_audio_stages(v: &str) -> Vec<AudioStages> {
    v.split(',')
        .map(|m| {
            AudioStages::ALL
                .into_iter()
                .find(|s| s.name() == m)
                .unwrap_or_else(|| panic!("--audio-stages inline,pipeline, not {m}"))
        })
        .collect()
}

/// utime + stime in seconds, and VmRSS in KiB, of a process.
fn proc_sample(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let cpu = (ticks(11) + ticks(12)) as f64 / 100.0; // CLK_TCK = 100
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    if floor::serve_if_asked() {
        return;
    }
    let a = args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert!(
        !a.backends.contains(&Backend::Postgres) || a.database_url.is_some(),
        "--backends postgres needs --database-url postgres://…"
    );
    assert!(
        !a.bridges.contains(&Bridge::Node)
            || a.node_dir
                .as_ref()
                .is_some_and(|d| d.join("index.js").is_file()),
        "--bridges node needs --node-dir DIR prepared by benches/peer/node-example.sh"
    );
    let mut rows = Vec::new();
    for &n in &a.calls {
        for &bridge in &a.bridges {
            // The store backend and the audio stages are ignis's; the other bridges run once.
            let (backends, stages) = if bridge == Bridge::Ignis {
                (&a.backends[..], &a.audio_stages[..])
            } else {
                (&[Backend::Sqlite][..], &[AudioStages::Inline][..])
            };
            for &backend in backends {
                for &stages in stages {
                    let a = Args {
                        stages,
                        ..a.clone()
                    };
                    rows.push(rt.block_on(run(&a, n, bridge, backend)));
                }
            }
        }
    }
    summary(&a, &rows);
}

/// Spawns the Node example or the floor (`bridge`), pinned like ignis, logging to `log`.
fn spawn_peer(
    a: &Args,
    bridge: Bridge,
    port: u16,
    agent_base: &str,
    log: &std::path::Path,
) -> Child {
    let mut cmd = match &a.ignis_cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]);
            c
        }
        None => Command::new("env"),
    };
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    match bridge {
        Bridge::Node => {
            let dir = a.node_dir.clone().unwrap_or_default();
            cmd.arg("node")
                .arg("index.js")
                .current_dir(dir)
                .env("ELEVENLABS_API_BASE", agent_base)
                .env("ELEVENLABS_AGENT_ID", loadgen::AGENT_ID)
                .env("ELEVENLABS_API_KEY", loadgen::API_KEY)
                .env("PORT", port.to_string());
        }
        Bridge::Floor | Bridge::Ignis => {
            let exe = std::env::current_exe().expect("bench executable");
            let ws = agent_base.replacen("http", "ws", 1);
            cmd.arg(exe)
                .arg(floor::SERVE_FLOOR)
                .arg(port.to_string())
                .arg(format!(
                    "{ws}/v1/convai/conversation?agent_id={}",
                    loadgen::AGENT_ID
                ));
        }
    }
    let log = std::fs::File::create(log).expect("log file");
    cmd.stdout(Stdio::from(log.try_clone().expect("log file")))
        .stderr(Stdio::from(log));
    cmd.spawn().expect("spawn the bridge")
}

fn spawn_ignis(
    a: &Args,
    n: usize,
    backend: Backend,
    port: u16,
    agent_base: &str,
    token: &str,
    dir: &std::path::Path,
) -> Child {
    let exe = env!("CARGO_BIN_EXE_ignis");
    let mut words: Vec<&str> = Vec::new();
    if let Some(cpu) = &a.ignis_cpu {
        words.extend(["taskset", "-c", cpu]);
    }
    words.extend(a.ignis_prefix.iter().map(String::as_str));
    words.push(exe);
    let mut cmd = Command::new(words[0]);
    cmd.args(&words[1..]);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("PORT", port.to_string())
        .env("BIND", "127.0.0.1")
        .env("TWILIO_AUTH_TOKEN", token)
        .env("ELEVENLABS_AGENT_ID", loadgen::AGENT_ID)
        .env("ELEVENLABS_API_BASE", agent_base)
        .env("IGNIS_DB", dir.join("ignis.db"))
        .env("MAX_CALLS", (n + 100).to_string())
        .env("MAX_CONNECTIONS", (2 * n + 200).to_string())
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env("AUDIO_STAGES", a.stages.name())
        .current_dir(dir);
    if backend == Backend::Postgres
        && let Some(url) = &a.database_url
    {
        // A fresh replica name per run, so the leases of an earlier run's process never count.
        cmd.env("DATABASE_URL", url).env(
            "REPLICA_ID",
            format!("bench-{}-{n}", std::process::id() % 100_000),
        );
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::from(
        std::fs::File::create(dir.join("ignis.log")).expect("log file"),
    ));
    cmd.spawn().expect("spawn ignis")
}

/// Starts the stand-in agent, then ignis on a free port, and waits until it accepts connections.
async fn launch(
    a: &Args,
    n: usize,
    (bridge, backend): (Bridge, Backend),
    stats: &Arc<Stats>,
    token: &str,
) -> (Child, u16, std::path::PathBuf) {
    let agent_base = loadgen::start_agent_workload(
        AgentOptions {
            format: a.format,
            probe_every: Duration::from_millis(a.probe_ms),
            interrupt_every: 5,
            ping_every: Duration::from_secs(2),
        },
        a.workload,
        stats.clone(),
    )
    .await
    .expect("agent");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("ignis-load-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let child = match bridge {
        Bridge::Ignis => spawn_ignis(a, n, backend, port, &agent_base, token, &dir),
        _ => spawn_peer(a, bridge, port, &agent_base, &dir.join("ignis.log")),
    };
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} did not start, see {dir:?}",
            bridge.as_str()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    (child, port, dir)
}

async fn run(a: &Args, n: usize, bridge: Bridge, backend: Backend) -> Row {
    let stats = Arc::new(Stats::default());
    let token = "load-generator-auth-token-0123456789";
    let (mut child, port, dir) = launch(a, n, (bridge, backend), &stats, token).await;
    // ignis the process; with taskset it execs, so the pid is the same.
    let pid = child.id();
    let (_, rss_idle) = proc_sample(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let mut calls = Calls {
        a,
        n,
        stream_url: match bridge {
            Bridge::Ignis => format!("ws://127.0.0.1:{port}/api/twilio/stream"),
            _ => format!("ws://127.0.0.1:{port}/media-stream"),
        },
        token,
        direct: bridge != Bridge::Ignis,
        frames: Arc::new(CallerFrames::for_workload(a.workload)),
        stats: stats.clone(),
        stop: stop.clone(),
        next_sid: 0,
        rng: 0x9e37_79b9_7f4a_7c15u64,
        handles: Vec::new(),
    };
    let t_start = Instant::now();
    for i in 0..n {
        calls.spawn(i);
        let due = t_start + Duration::from_micros((i as u64 + 1) * 1_000_000 / a.ramp);
        tokio::time::sleep_until(due.into()).await;
    }
    eprintln!(
        "[load] {n} calls ({}, {} workload) started in {:.1} s; warm-up {} s, window {} s; {} pid {pid}",
        a.format.as_str(),
        a.workload.as_str(),
        t_start.elapsed().as_secs_f64(),
        a.warmup,
        a.secs,
        bridge.as_str()
    );
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    let w = measure_window(a, pid, &stats, &mut calls).await;
    stop.store(true, Relaxed);
    for h in calls.handles {
        let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
    }
    let (_, rss_after) = proc_sample(pid);
    let outcomes = match bridge {
        Bridge::Ignis => ignis_outcomes(port).await,
        _ => "n/a".into(),
    };
    stop_ignis(&mut child);
    let log = std::fs::read_to_string(dir.join("ignis.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("Error"))
        .collect();

    report(
        a,
        (n, bridge, backend),
        &stats,
        &Figures {
            window: w.window,
            load: w.load,
            cpu: w.cpu,
            rss: [rss_idle, w.rss_end, w.rss_max, rss_after],
            active_min: w.active_min,
            outcomes,
            warnings: &warnings,
            rss_timeline: w.rss_timeline,
        },
    )
}

/// The simulated calls of a run, and what starting one needs.
struct Calls<'a> {
    a: &'a Args,
    n: usize,
    stream_url: String,
    token: &'a str,
    /// Callers connect straight to the bridge's stream (no webhook): not ignis.
    direct: bool,
    frames: Arc<CallerFrames>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    next_sid: u64,
    rng: u64,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Calls<'_> {
    /// Starts call `i` of `n` (its caller frames at its own phase of the 20 ms frame).
    fn spawn(&mut self, i: usize) {
        self.next_sid += 1;
        let duration = soak_duration(self.a, &mut self.rng);
        let n = self.n;
        self.handles.push(tokio::spawn(loadgen::call(
            CallOptions {
                stream_url: self.stream_url.clone(),
                auth_token: self.token.to_owned(),
                call_sid: loadgen::call_sid(self.next_sid),
                duration,
                probe_every: Duration::from_millis(self.a.probe_ms),
                phase: Duration::from_micros((i as u64 * 20_000 / n.max(1) as u64) % 20_000),
                direct: self.direct,
            },
            self.frames.clone(),
            self.stats.clone(),
            self.stop.clone(),
        )));
    }
}

/// What the steady-state window measured of the bridge process.
struct Window {
    /// Seconds.
    window: f64,
    load: String,
    /// CPU seconds over the window.
    cpu: f64,
    /// RSS, KiB.
    rss_end: u64,
    rss_max: u64,
    active_min: usize,
    rss_timeline: Vec<(u64, u64)>,
}

/// The steady-state window: samples the bridge's CPU and RSS every second, prints progress,
/// and in a soak replaces ended calls.
async fn measure_window(a: &Args, pid: u32, stats: &Stats, calls: &mut Calls<'_>) -> Window {
    let (cpu0, _) = proc_sample(pid);
    let w0 = Instant::now();
    stats.recording.store(true, Relaxed);
    let mut rss_max = 0;
    let mut active_min = usize::MAX;
    // The RSS timeline proves the soak's "RSS stays flat".
    let mut seen = (0usize, 0usize, 0usize);
    let mut rss_timeline: Vec<(u64, u64)> = Vec::new();
    let rss_every = (a.secs / 10).max(1);
    while w0.elapsed() < Duration::from_secs(a.secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu, rss) = proc_sample(pid);
        rss_max = rss_max.max(rss);
        let active = stats.active.load(Relaxed);
        active_min = active_min.min(active);
        if a.soak_call_secs.is_some() {
            // Replace ended calls.
            calls.handles.retain(|h| !h.is_finished());
            for i in calls.handles.len()..calls.n {
                calls.spawn(i);
            }
        }
        let el = w0.elapsed().as_secs_f64();
        if (el.round() as u64).is_multiple_of(rss_every) {
            rss_timeline.push((el.round() as u64, rss));
        }
        if (el as u64).is_multiple_of(5) || el as u64 >= a.secs {
            let cpu_pct = (cpu - cpu0) / el * 100.0;
            progress(a, stats, &mut seen, (el, active, cpu_pct, rss));
        }
    }
    let window = w0.elapsed().as_secs_f64();
    let (cpu1, rss_end) = proc_sample(pid);
    stats.recording.store(false, Relaxed);
    let load = loadavg();
    eprintln!();
    Window {
        window,
        load,
        cpu: cpu1 - cpu0,
        rss_end,
        rss_max,
        active_min,
        rss_timeline,
    }
}

/// A soak call's random length (0.5–1.5 × `--soak-call-secs`), or `None` without a soak.
fn soak_duration(a: &Args, rng: &mut u64) -> Option<Duration> {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    a.soak_call_secs
        .map(|s| Duration::from_millis(s * 500 + *rng % (s * 1000).max(1)))
}

/// One progress line: p99s over the samples since the previous line (re-sorting every sample
/// of a 30-minute soak every 5 s would load the generator). `now`: (elapsed s, active calls,
/// ignis CPU %, ignis RSS KiB).
fn progress(
    a: &Args,
    stats: &Stats,
    seen: &mut (usize, usize, usize),
    now: (f64, usize, f64, u64),
) {
    let (el, active, cpu_pct, rss) = now;
    let (late, n_late) = recent_p99(&stats.late_us, seen.2);
    let ((p_up, n_up), (p_down, n_down)) = (
        recent_p99(&stats.up_us, seen.0),
        recent_p99(&stats.down_us, seen.1),
    );
    *seen = (n_up, n_down, n_late);
    eprint!(
        "\r[load] {el:4.0}/{secs} s  active {active}  probes up {n_up} down {n_down}  last 5 s: p99 up {p_up:.2} down {p_down:.2} ms, send-late p99 {late:.2} ms  bridge cpu {cpu_pct:.1} %  rss {} MiB  failed {}   ",
        rss / 1024,
        stats.calls_failed.load(Relaxed),
        secs = a.secs,
    );
    let _ = std::io::stderr().flush();
}

/// What the window measured, besides `Stats`.
struct Figures<'a> {
    window: f64,
    load: String,
    /// ignis CPU seconds over the window.
    cpu: f64,
    /// ignis RSS, KiB: idle, end of window, max, after hang-up.
    rss: [u64; 4],
    active_min: usize,
    outcomes: String,
    warnings: &'a [&'a str],
    rss_timeline: Vec<(u64, u64)>,
}

/// Prints one run's results; returns its summary row.
fn report(a: &Args, run: (usize, Bridge, Backend), stats: &Stats, f: &Figures<'_>) -> Row {
    let (n, bridge, backend) = run;
    let mut up = stats.up_us.lock().unwrap().clone();
    let mut down = stats.down_us.lock().unwrap().clone();
    let mut row = Row::new((n, bridge, backend), stats, f, (&mut up, &mut down));
    row.stages = a.stages;
    println!(
        "\n== {} bridge, {n} calls, {} workload, {} agent, {} store, {} audio stages, window {:.0} s, loadavg {}, bridge on cpu {}",
        bridge.as_str(),
        a.workload.as_str(),
        a.format.as_str(),
        backend.as_str(),
        a.stages.name(),
        f.window,
        f.load,
        a.ignis_cpu.as_deref().unwrap_or("any")
    );
    latency_lines(a, stats, &mut up, &mut down);
    cost_lines(n, bridge, f);
    audio_lines(a, n, stats, f.window);
    call_lines(a, stats, f);
    row
}

/// The added-latency lines of a run's report (`up`, `down`: the samples, µs).
fn latency_lines(a: &Args, stats: &Stats, up: &mut [i64], down: &mut [i64]) {
    let up_by = match a.workload {
        Workload::Light | Workload::Steady => "",
        Workload::Conversation => " (by arrival)",
    };
    println!(
        "  caller -> agent added latency{up_by}: {}",
        loadgen::fmt_ms(up)
    );
    println!("  agent -> caller added latency: {}", loadgen::fmt_ms(down));
    if a.workload == Workload::Conversation {
        let mut mapped = stats.up_mapped_us.lock().unwrap().clone();
        println!(
            "  caller -> agent, sample-mapped: {}",
            loadgen::fmt_ms(&mut mapped)
        );
    }
    let mut late: Vec<i64> = stats
        .late_us
        .lock()
        .unwrap()
        .iter()
        .map(|&x| x as i64)
        .collect();
    println!(
        "  generator send lateness:       {}",
        loadgen::fmt_ms(&mut late)
    );
}

/// The bridge's CPU and RSS lines of a run's report.
fn cost_lines(n: usize, bridge: Bridge, f: &Figures<'_>) {
    let (cpu, window) = (f.cpu, f.window);
    let [rss_idle, rss_end, rss_max, rss_after] = f.rss;
    println!(
        "  {} CPU: {:.1} % of a core, {:.4} % of a core per call ({:.1} µs CPU per call-second)",
        bridge.as_str(),
        cpu / window * 100.0,
        cpu / (n as f64 * window) * 100.0,
        cpu / (n as f64 * window) * 1e6
    );
    println!(
        "  {} RSS: idle {} KiB, end of window {} KiB, max {} KiB, after hang-up {} KiB; per call {:.1} KiB",
        bridge.as_str(),
        rss_idle,
        rss_end,
        rss_max,
        rss_after,
        (rss_end as f64 - rss_idle as f64) / n as f64
    );
}

/// The audio-accounting lines of a run's report: lost and duplicated audio, turns,
/// interruptions, probes and message rates.
fn audio_lines(a: &Args, n: usize, stats: &Stats, window: f64) {
    println!(
        "  audio lost/duplicated: up {}/{} ms, down {}/{} ms (over {} ended calls)",
        stats.up_lost.load(Relaxed) / 8,
        stats.up_dup.load(Relaxed) / 8,
        stats.down_lost.load(Relaxed) / 8,
        stats.down_dup.load(Relaxed) / 8,
        stats.calls_ok.load(Relaxed)
    );
    if a.workload == Workload::Conversation {
        let (cut, turns) = (stats.down_cut.load(Relaxed) / 8, stats.turns.load(Relaxed));
        let interruptions = stats.interruptions.load(Relaxed).max(1);
        println!(
            "  agent turns {turns}; audio cut by interruptions (held by ignis, dropped by design, not in lost): {cut} ms, {} ms per interruption",
            cut / interruptions
        );
    }
    interruption_lines(stats);
    println!(
        "  probes sent up {} down {}; pings {} pongs {}; interruptions {} clears {}; marks {}",
        stats.probes_up_sent.load(Relaxed),
        stats.probes_down_sent.load(Relaxed),
        stats.pings.load(Relaxed),
        stats.pongs.load(Relaxed),
        stats.interruptions.load(Relaxed),
        stats.clears.load(Relaxed),
        stats.marks.load(Relaxed),
    );
    let per_call_second =
        |v: &std::sync::atomic::AtomicU64| v.load(Relaxed) as f64 / (n as f64 * window);
    println!(
        "  to the caller: {:.1} media msgs/s and {:.2} marks/s per call",
        per_call_second(&stats.media_to_caller),
        per_call_second(&stats.window_marks),
    );
}

/// The calls, outcomes, warnings and errors lines of a run's report.
fn call_lines(a: &Args, stats: &Stats, f: &Figures<'_>) {
    println!(
        "  calls: started {} ok {} failed {}; agent conversations {}; min active in window {}",
        stats.calls_started.load(Relaxed),
        stats.calls_ok.load(Relaxed),
        stats.calls_failed.load(Relaxed),
        stats.agent_conversations.load(Relaxed),
        if f.active_min == usize::MAX {
            0
        } else {
            f.active_min
        }
    );
    println!("  ignis call outcomes (/metrics): {}", f.outcomes);
    println!("  bridge warnings and errors logged: {}", f.warnings.len());
    for w in f.warnings.iter().take(5) {
        println!("    {w}");
    }
    let orphans = stats.calls_without_agent.lock().unwrap().clone();
    if !orphans.is_empty() {
        println!(
            "  calls that ended before their agent conversation began (not in lost/dup): {}, lasting {:?} ms",
            orphans.len(),
            orphans
        );
    }
    if a.soak_call_secs.is_some() {
        let line: Vec<String> = f
            .rss_timeline
            .iter()
            .map(|(t, r)| format!("{t} s {:.1}", *r as f64 / 1024.0))
            .collect();
        println!("  ignis RSS over the window (MiB): {}", line.join(", "));
    }
    if let Some(e) = stats.first_error.lock().unwrap().as_ref() {
        println!("  first error: {e}");
    }
}

/// Barge-in and message-rate lines of a run's report.
fn interruption_lines(stats: &Stats) {
    let mut after = stats.clear_after_us.lock().unwrap().clone();
    let mut queued = stats.clear_queued_us.lock().unwrap().clone();
    println!(
        "  agent interruption -> clear at the caller: {}",
        loadgen::fmt_ms(&mut after)
    );
    println!(
        "  audio queued at Twilio when the clear landed (sent, unplayed, dropped): {}",
        loadgen::fmt_ms(&mut queued)
    );
}

/// One line of the side-by-side table.
struct Row {
    bridge: Bridge,
    backend: Backend,
    stages: AudioStages,
    calls: usize,
    /// % of a core per call.
    cpu: f64,
    /// p50 and p99, ms, caller -> agent and agent -> caller.
    up: (f64, f64),
    down: (f64, f64),
    /// Lost audio, ms, up and down.
    lost: (u64, u64),
    rss_per_call_kib: f64,
    media_per_call_s: f64,
    /// Audio queued at Twilio when a clear landed, ms: p50 and max.
    queued: (f64, f64),
    failed: u64,
}

impl Row {
    fn new(
        run: (usize, Bridge, Backend),
        stats: &Stats,
        f: &Figures<'_>,
        (up, down): (&mut [i64], &mut [i64]),
    ) -> Row {
        let (calls, bridge, backend) = run;
        let p50_p99 = |v: &mut [i64]| {
            loadgen::percentiles(v).map_or((f64::NAN, f64::NAN), |p| {
                (p.1 as f64 / 1e3, p.3 as f64 / 1e3)
            })
        };
        let mut queued = stats.clear_queued_us.lock().unwrap().clone();
        let queued = loadgen::percentiles(&mut queued).map_or((f64::NAN, f64::NAN), |p| {
            (p.1 as f64 / 1e3, p.4 as f64 / 1e3)
        });
        let call_secs = calls as f64 * f.window;
        Row {
            bridge,
            backend,
            stages: AudioStages::Inline,
            calls,
            cpu: f.cpu / call_secs * 100.0,
            up: p50_p99(up),
            down: p50_p99(down),
            lost: (
                stats.up_lost.load(Relaxed) / 8,
                stats.down_lost.load(Relaxed) / 8,
            ),
            rss_per_call_kib: (f.rss[1] as f64 - f.rss[0] as f64) / calls as f64,
            media_per_call_s: stats.media_to_caller.load(Relaxed) as f64 / call_secs,
            queued,
            failed: stats.calls_failed.load(Relaxed),
        }
    }
}

/// The side-by-side table of every run (Markdown, for BENCHMARKS.md).
fn summary(a: &Args, rows: &[Row]) {
    println!(
        "\n== side by side: {} workload, {} agent, each bridge on cpu {}\n",
        a.workload.as_str(),
        a.format.as_str(),
        a.ignis_cpu.as_deref().unwrap_or("any")
    );
    println!(
        "| bridge | calls | CPU % per call | up p50 / p99 ms | down p50 / p99 ms | lost up / down ms | RSS per call KiB | media msgs/s per call | queued at clear p50 / max ms | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let name = match (r.bridge, r.backend, r.stages) {
            (Bridge::Ignis, Backend::Postgres, AudioStages::Inline) => "ignis (postgres)",
            (Bridge::Ignis, Backend::Postgres, AudioStages::Pipeline) => {
                "ignis (postgres, pipeline)"
            }
            (Bridge::Ignis, Backend::Sqlite, AudioStages::Pipeline) => "ignis (pipeline)",
            (b, _, _) => b.as_str(),
        };
        // "–": no samples (no interruption in the window, say).
        let ms = |x: f64, digits: usize| {
            if x.is_nan() {
                "–".to_owned()
            } else {
                format!("{x:.digits$}")
            }
        };
        println!(
            "| {name} | {} | {:.4} | {} / {} | {} / {} | {} / {} | {:.1} | {:.1} | {} / {} | {} |",
            r.calls,
            r.cpu,
            ms(r.up.0, 2),
            ms(r.up.1, 2),
            ms(r.down.0, 2),
            ms(r.down.1, 2),
            r.lost.0,
            r.lost.1,
            r.rss_per_call_kib,
            r.media_per_call_s,
            ms(r.queued.0, 0),
            ms(r.queued.1, 0),
            r.failed
        );
    }
}

/// SIGTERM (graceful: with no calls left ignis exits at once, and a profiler given with
/// `--ignis-prefix` writes its report), then SIGKILL after 30 s.
fn stop_ignis(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// ignis's own count of finished calls by outcome, from `GET /metrics` (no token is set here).
async fn ignis_outcomes(port: u16) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    let Ok(Some(text)) = tokio::time::timeout(Duration::from_secs(5), fetch).await else {
        return "unavailable".into();
    };
    let found: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ignis_calls_total{outcome=\""))
        .filter_map(|l| l.split_once("\"} "))
        .filter(|(_, n)| *n != "0")
        .map(|(o, n)| format!("{o} {n}"))
        .collect();
    if found.is_empty() {
        "none".into()
    } else {
        found.join(", ")
    }
}

/// p99 (ms) of the samples (µs) added since index `from`, and the new length.
fn recent_p99<T: Copy + Into<i64>>(v: &std::sync::Mutex<Vec<T>>, from: usize) -> (f64, usize) {
    let v = v.lock().unwrap();
    let mut recent: Vec<i64> = v[from.min(v.len())..].iter().map(|&x| x.into()).collect();
    let p = loadgen::percentiles(&mut recent).map_or(f64::NAN, |p| p.3 as f64 / 1e3);
    (p, v.len())
}
