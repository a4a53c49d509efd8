//! Exhaustive μ-law vectors: SHA-256 over all 65 536 encoder inputs and over the decode table,
//! against the hashes of the ITU-T G.191 reference given in docs/dsp.md §1.4.

use ignis::audio::mulaw;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn encoder_is_bit_exact_with_itu_g191_over_all_inputs() {
    let inputs: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    let mut codes = vec![0u8; inputs.len()];
    assert_eq!(mulaw::encode_into(&inputs, &mut codes), 65_536);
    assert_eq!(
        hex(&Sha256::digest(&codes)),
        "90c29de505fb68e766118303bd552a16005dcf810873698bee1d8f3b247ce28c"
    );
    // The scalar entry point agrees with the slice one.
    for (&x, &c) in inputs.iter().zip(&codes) {
        assert_eq!(mulaw::encode_sample(x), c);
    }
}

#[test]
fn f32_encoder_is_bit_exact_over_all_inputs() {
    let inputs: Vec<f32> = (i16::MIN..=i16::MAX)
        .map(|x| x as f32 / mulaw::I16_SCALE)
        .collect();
    let mut codes = vec![0u8; inputs.len()];
    mulaw::encode_f32_into(&inputs, &mut codes);
    assert_eq!(
        hex(&Sha256::digest(&codes)),
        "90c29de505fb68e766118303bd552a16005dcf810873698bee1d8f3b247ce28c"
    );
}

#[test]
fn decode_table_hash_matches_reference() {
    let bytes: Vec<u8> = mulaw::DECODE_TABLE
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(
        hex(&Sha256::digest(&bytes)),
        "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827"
    );
    let codes: Vec<u8> = (0..=255).collect();
    let mut out = vec![0i16; 256];
    mulaw::decode_into(&codes, &mut out);
    assert_eq!(out, mulaw::DECODE_TABLE);
}
