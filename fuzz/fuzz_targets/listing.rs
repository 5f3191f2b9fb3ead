//! A `/resources.json` answer on arbitrary bytes: the envelope and the
//! rows decode, then each row's metadata (v4 cleartext, v5 armored) goes
//! through the decoder. An error, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use passbolt_client::Keyring;
use passbolt_client::decode::decode_metadata;
use passbolt_client::model::{Envelope, Resource};
use passbolt_client::pgp::{self, PrivateKey};

const SLUGS: &[&str] = &[
    "password-string",
    "password-and-description",
    "password-description-totp",
    "v5-default",
    "v5-default-with-totp",
    "v5-note",
];

fn user_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let (key, _) = pgp::generate_key(
            "Fuzz <fuzz@passbolt.invalid>",
            pgp::CipherSuite::Cv25519,
            None,
        )
        .expect("key generation");
        key
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = serde_json::from_slice::<Envelope<Vec<Resource>>>(data) else {
        return;
    };
    let key = user_key();
    let (keyring, _) = Keyring::load(&[], key);
    for (i, row) in envelope.body.iter().enumerate() {
        let slug = SLUGS[i % SLUGS.len()];
        let _ = decode_metadata(row, slug, Some("Folder".into()), &keyring, key);
    }
});
