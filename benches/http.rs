//! Front-door costs: request-head parsing, form decoding, signature validation, and the
//! Media Streams message parse/write that every 20 ms frame pays.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use ignis::http::{form, request_head};
use ignis::twilio::media_stream;
use ignis::twilio::signature::{self, AuthToken, SigningKeys};

const WEBHOOK: &[u8] = b"POST /api/twilio/voice HTTP/1.1\r\nHost: ignis.example.com\r\n\
User-Agent: TwilioProxy/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
X-Twilio-Signature: PRK5RD3zeVvjtaILPrdflaYKzvE=\r\nI-Twilio-Idempotency-Token: 3f0b7c1e\r\n\
Accept: */*\r\nCache-Control: max-age=259200\r\nContent-Length: 276\r\n\r\n";

const FORM: &[u8] = b"AccountSid=AC11111111111111111111111111111111&ApiVersion=2010-04-01&\
CallSid=CAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&CallStatus=ringing&Called=%2B16175551881&\
Caller=%2B4915112345123&Direction=inbound&From=%2B4915112345123&FromCountry=DE&\
To=%2B16175551881&ToCountry=US";

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("front_door");
    g.throughput(Throughput::Bytes(WEBHOOK.len() as u64));
    g.bench_function("request_head_parse", |b| {
        b.iter(|| request_head::parse(black_box(WEBHOOK)))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("form_decode", |b| b.iter(|| form::decode(black_box(FORM))));
    let fields = form::decode(FORM).unwrap();
    let keys = SigningKeys::new(AuthToken::new("ignis-test-token"), None);
    let url = "https://ignis.example.com/api/twilio/voice";
    let sig = signature::sign("ignis-test-token", url, &fields);
    g.bench_function("signature_validate_form", |b| {
        b.iter(|| keys.validate_form(black_box(url), black_box(&fields), sig.as_bytes()))
    });
    g.finish();

    let mut g = c.benchmark_group("media_stream_per_frame");
    g.throughput(Throughput::Elements(1));
    let media = format!(
        r#"{{"event":"media","sequenceNumber":"2","streamSid":"MZ00000000000000000000000000000000","media":{{"track":"inbound","chunk":"1","timestamp":"20","payload":"{}"}}}}"#,
        "/".repeat(212) + "/w=="
    );
    g.bench_function("parse_media", |b| {
        b.iter(|| media_stream::parse(black_box(&media)))
    });
    let payload = "/".repeat(212) + "/w==";
    let mut out = String::with_capacity(512);
    g.bench_function("write_media", |b| {
        b.iter(|| {
            media_stream::write_media(
                &mut out,
                black_box("MZ00000000000000000000000000000000"),
                black_box(&payload),
            )
        })
    });
    g.finish();
}

criterion_group!(front_door, benches);
criterion_main!(front_door);
