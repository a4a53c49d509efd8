//! `ignis demo` and `ignis simulate`: a whole call on this machine through the real server, with
//! real speech (espeak-ng clips), checked in what the caller actually heard.

mod common;

use std::time::Duration;

use common::fake_agent::AgentBehaviour;
use common::scratch::TempDir;
use common::*;
use ignis::audio::format::AgentFormat;
use ignis::driver::demo::{DemoOptions, DemoSummary, run};

/// Seconds of the recording whose 20 ms windows carry speech energy.
fn speech_seconds(heard: &[i16]) -> f64 {
    heard
        .chunks(160)
        .filter(|w| {
            let e = w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64;
            e.sqrt() > 500.0
        })
        .count() as f64
        * 0.02
}

/// `ignis demo` with the bundled clips.
async fn demo(format: AgentFormat, barge_in: bool) -> DemoSummary {
    let options = DemoOptions {
        format,
        wav: None,
        barge_in,
    };
    run(options).await.unwrap()
}

#[tokio::test]
async fn demo_call_in_pass_through_mode() {
    let s = demo(AgentFormat::Ulaw8000, false).await;
    // The bundled clips hold 2.5 s (greeting) and 2.66 s (caller) of speech by this measure
    // (20 ms windows over RMS 500). Both must be heard, nearly whole: the greeting in the
    // first 5 s, the caller's echo after it.
    let (greeting, echo) = s.heard.split_at(s.heard.len().min(5 * 8000));
    let (g, e) = (speech_seconds(greeting), speech_seconds(echo));
    assert!(g >= 2.2, "greeting: {g} s of speech heard");
    assert!(e >= 2.3, "echo: {e} s of speech heard");
    assert_eq!(s.tool_steps, (7, 7), "booking script through the tools");
    assert_eq!(s.dynamic_variables, 11);
    assert_eq!(s.interruptions, 0);
    assert_eq!(s.outcome, "caller_hung_up");
    assert!(s.setup.is_some());
    assert!(s.text.contains("set-up"));
}

#[tokio::test]
async fn demo_call_transcoding_with_barge_in() {
    let s = demo(AgentFormat::Pcm16000, true).await;
    assert!(s.interruptions >= 1, "the caller talked over the greeting");
    assert!(s.clears >= 1, "and Twilio was told to clear");
    // The caller spoke 1.5 s into the greeting: the greeting was cut there (its 2.5 s of speech
    // were not all heard), and the caller's echo (2.66 s of speech) came back afterwards.
    let (greeting, echo) = s.heard.split_at(s.heard.len().min(3 * 8000));
    let (g, e) = (speech_seconds(greeting), speech_seconds(echo));
    assert!(g > 0.5 && g < 1.8, "greeting cut: {g} s heard");
    assert!(e >= 2.3, "echo: {e} s of speech heard");
    assert_eq!(s.tool_steps, (7, 7));
}

#[tokio::test]
async fn simulate_binary_against_a_running_server() {
    let server = Server::start_public_loopback(AgentBehaviour::default()).await;
    let url = format!("ws://{}/api/twilio/stream", server.addr);
    let dir = TempDir::new("simulate");
    let out = dir.join("heard.wav");
    let (url2, out2) = (url.clone(), out.clone());
    let child = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ignis"))
            .args([
                "simulate",
                "--url",
                &url2,
                "--token",
                TOKEN,
                "--seconds",
                "20",
                "--out",
            ])
            .arg(&out2)
            .output()
    });
    // The stand-in agent greets with one second of speech-level audio.
    let agent = server.agent.next_conn(Duration::from_secs(10)).await;
    let greeting: Vec<u8> = (0..8000)
        .map(|i| if i % 2 == 0 { 0x10 } else { 0x90 })
        .collect();
    agent.send_audio(1, &greeting);
    let output = tokio::time::timeout(Duration::from_secs(40), child)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("voice webhook answered 200"), "{stdout}");
    let heard = ignis::audio::wav::parse(&std::fs::read(&out).unwrap()).unwrap();
    assert!(
        speech_seconds(&heard.samples) >= 0.9,
        "the agent's second of audio was heard"
    );
}

/// A raw HTTP/1.1 exchange with the demo server (`Connection: close`): status, head, body.
fn http(addr: &str, request: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// `ignis demo --staff`: after the call the server keeps running with a demo login; over
/// plain HTTP on loopback (no `Secure` cookie there) the staff page shows the call's booking
/// and its requests; Ctrl-C (SIGINT) ends it cleanly.
#[test]
fn demo_with_staff_page() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // Declared before the child, so removed after it is killed.
    let dir = TempDir::new("demo-staff");
    // Killed if this test fails before its Ctrl-C (the demo would wait for one forever).
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let child = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(["demo", "--staff", "--out"])
        .arg(dir.join("heard.wav"))
        .env_clear()
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let (mut url, mut booking, mut password) = (None, None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        println!("demo: {line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["staff", "page", u] => url = Some(u.to_string()),
            ["the", "call's", "booking:", u] => booking = Some(u.to_string()),
            ["login", "name", "demo,", "password", p] => password = Some(p.to_string()),
            _ if line.contains("Ctrl-C") => break,
            _ => {}
        }
    }
    let url = url.expect("the staff page's URL");
    let booking = booking.expect("the booking day's URL");
    let password = password.expect("the demo password");
    let addr = url
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix("/staff"))
        .expect("http://127.0.0.1:PORT/staff")
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let form = format!("name=demo&password={password}");
    let (status, head, _) = http(
        &addr,
        &format!(
            "POST /staff/login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 303, "{head}");
    let set_cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .expect("a session cookie");
    assert!(!set_cookie.contains("Secure"), "http demo: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap();
    let get = |target: &str| {
        http(
            &addr,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
    };
    let target = booking.strip_prefix(&format!("http://{addr}")).unwrap();
    let (status, _, page) = get(target);
    assert_eq!(status, 200);
    // The demo script books S1, moves the seeded A1 to S2 and cancels S1 again.
    assert!(page.contains("von der KI hierher verlegt"), "{page}");
    assert!(page.contains("Weber"));
    let (status, _, today) = get("/staff");
    assert_eq!(status, 200);
    assert!(
        today.contains("hohes Fieber") && today.contains("Ramipril"),
        "{today}"
    );

    // Ctrl-C.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.0.wait().unwrap();
    assert!(status.success(), "after Ctrl-C: {status}");
}
