//! Interoperability of our OpenPGP with a real passbolt 5.12 server (its
//! recorded answers) and with GnuPG, which the server uses.

use crate::common;

use std::collections::HashMap;
use std::process::Command;

use common::{capture, fixture, server_public_key};
use passbolt_client::decode::{decode_metadata, decode_secret};
use passbolt_client::model::{MetadataKey, Resource as Row, ResourceType};
use passbolt_client::pgp::{PgpError, PrivateKey};
use passbolt_client::{Keyring, session};
use serde_json::Value;

#[test]
fn real_login_responses_decrypt_and_verify_with_the_server_key() {
    for (file, who) in [
        ("02_auth_jwt_login_POST_success_admin_rsa4096.json", "admin"),
        (
            "03_auth_jwt_login_POST_success_alice_curve25519.json",
            "alice",
        ),
        ("04_auth_jwt_login_POST_success_bob_rsa3072.json", "bob"),
    ] {
        let c = capture(file);
        let key = fixture(who).private_key();
        let armored = c["response"]["body"]["body"]["challenge"].as_str().unwrap();
        let plaintext = key
            .decrypt_verify(&server_public_key(), armored.as_bytes())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let got: Value = serde_json::from_slice(&plaintext).unwrap();
        assert_eq!(got, c["response_challenge_decrypted"], "{file}");
        assert_eq!(
            got["verify_token"], c["challenge_cleartext_sent"]["verify_token"],
            "{file}: the server echoes our verify token"
        );
        assert_eq!(got["domain"], "http://127.0.0.1:18080/");
        // The access token's exp is what the session schedules refreshes by.
        assert_eq!(
            session::token_exp(got["access_token"].as_str().unwrap()),
            c["access_token_jwt_claims"]["exp"].as_i64()
        );
    }
}

#[test]
fn a_real_login_response_is_refused_against_another_server_key() {
    let c = capture("03_auth_jwt_login_POST_success_alice_curve25519.json");
    let alice = fixture("alice");
    let key = alice.private_key();
    let armored = c["response"]["body"]["body"]["challenge"].as_str().unwrap();
    // Alice's own public key stands in for an impostor server.
    let err = key
        .decrypt_verify(&fixture("bob").public, armored.as_bytes())
        .unwrap_err();
    assert!(matches!(err, PgpError::BadSignature { .. }), "{err}");
    // The same message through the unchecked path decrypts fine, so the
    // refusal above is the signature check and nothing else.
    assert!(key.decrypt(armored.as_bytes()).is_ok());
}

#[test]
fn a_message_for_someone_else_is_refused() {
    let c = capture("02_auth_jwt_login_POST_success_admin_rsa4096.json");
    let armored = c["response"]["body"]["body"]["challenge"].as_str().unwrap();
    let err = fixture("bob")
        .private_key()
        .decrypt_verify(&server_public_key(), armored.as_bytes())
        .unwrap_err();
    assert!(matches!(err, PgpError::Decrypt(_)), "{err}");
}

fn types() -> HashMap<String, String> {
    let c = capture("09_resource_types_GET.json");
    let types: Vec<ResourceType> =
        serde_json::from_value(c["response"]["body"]["body"].clone()).unwrap();
    types.into_iter().map(|t| (t.id, t.slug)).collect()
}

fn keyring(file: &str, key: &PrivateKey) -> Keyring {
    let c = capture(file);
    let listed: Vec<MetadataKey> =
        serde_json::from_value(c["response"]["body"]["body"].clone()).unwrap();
    let (ring, errors) = Keyring::load(&listed, key);
    assert!(errors.is_empty(), "{errors:?}");
    ring
}

fn expected() -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for f in ["expected/resources_v4.json", "expected/resources_v5.json"] {
        for r in capture(f).as_array().unwrap() {
            out.insert(r["id"].as_str().unwrap().to_string(), r.clone());
        }
    }
    out
}

/// Decodes a captured `/resources.json?contain[secret]=1` listing and
/// compares every resource with what the server's own clients decrypted.
fn check_listing(file: &str, keys_file: &str, who: &'static str) -> usize {
    let key = fixture(who).private_key();
    let ring = keyring(keys_file, &key);
    let types = types();
    let expected = expected();
    let c = capture(file);
    let rows: Vec<Row> = serde_json::from_value(c["response"]["body"]["body"].clone()).unwrap();
    assert!(!rows.is_empty());
    for row in &rows {
        let want = &expected[&row.id];
        let slug = &types[&row.resource_type_id];
        assert_eq!(slug, want["type"].as_str().unwrap(), "{}", row.id);
        let (res, custom) = decode_metadata(row, slug, None, &ring, &key).unwrap();
        assert_eq!(res.name, want["name"].as_str().unwrap());
        if let Some(meta) = want.get("metadata_cleartext") {
            assert_eq!(res.username.as_deref(), meta["username"].as_str());
            let uris: Vec<String> = meta["uris"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(res.uris, uris, "{}", row.id);
        }
        let armored = &row.secrets.as_ref().unwrap()[0].data;
        let fields = decode_secret(&row.id, slug, armored, &custom, &key).unwrap();
        let secret_text = want["secret_cleartext"].as_str().unwrap();
        match serde_json::from_str::<Value>(secret_text) {
            Ok(Value::Object(s)) => {
                if let Some(p) = s.get("password") {
                    assert_eq!(
                        fields.password.as_ref().unwrap().expose(),
                        p.as_str().unwrap()
                    );
                }
                if let Some(Value::String(d)) = s.get("description") {
                    let got = if slug == "v5-note" {
                        &fields.note
                    } else {
                        &fields.description
                    };
                    assert_eq!(got.as_ref().unwrap().expose(), d);
                }
                if let Some(t) = s.get("totp") {
                    let totp = fields.totp.as_ref().unwrap();
                    assert_eq!(totp.secret_key.expose(), t["secret_key"].as_str().unwrap());
                    assert_eq!(totp.digits as u64, t["digits"].as_u64().unwrap());
                    assert_eq!(totp.period, t["period"].as_u64().unwrap());
                    assert_eq!(totp.algorithm, t["algorithm"].as_str().unwrap());
                }
                if let Some(Value::Array(cfs)) = s.get("custom_fields") {
                    let labels = want["metadata_cleartext"]["custom_fields"]
                        .as_array()
                        .unwrap();
                    for cf in cfs {
                        let label =
                            labels.iter().find(|l| l["id"] == cf["id"]).unwrap()["metadata_key"]
                                .as_str()
                                .unwrap();
                        assert_eq!(
                            fields.custom(label).unwrap().value.expose(),
                            cf["secret_value"].as_str().unwrap()
                        );
                    }
                }
            }
            _ => assert_eq!(fields.password.as_ref().unwrap().expose(), secret_text),
        }
    }
    rows.len()
}

#[test]
fn real_v4_and_v5_resources_decode_for_admin_rsa() {
    let n = check_listing(
        "07_resources_index_GET_contain_secret_admin.json",
        "13_metadata_keys_GET_contain_private_admin.json",
        "admin",
    );
    assert_eq!(n, 10);
}

#[test]
fn real_v5_resources_decode_for_alice_curve25519_including_personal_user_key_metadata() {
    // Alice's metadata key envelope is not captured; the shared key reaches
    // her the same way as admin's, so admin's capture stands in for the key
    // and alice's own key decrypts her secrets and user_key metadata.
    let alice = fixture("alice").private_key();
    let admin = fixture("admin").private_key();
    let ring = keyring("13_metadata_keys_GET_contain_private_admin.json", &admin);
    let types = types();
    let expected = expected();
    let c = capture("07b_resources_index_GET_contain_secret_alice.json");
    let rows: Vec<Row> = serde_json::from_value(c["response"]["body"]["body"].clone()).unwrap();
    let mut personal = 0;
    for row in &rows {
        let slug = &types[&row.resource_type_id];
        let (res, custom) = decode_metadata(row, slug, None, &ring, &alice).unwrap();
        assert_eq!(res.name, expected[&row.id]["name"].as_str().unwrap());
        if row.metadata_key_type.as_deref() == Some("user_key") {
            personal += 1;
        }
        let fields = decode_secret(
            &row.id,
            slug,
            &row.secrets.as_ref().unwrap()[0].data,
            &custom,
            &alice,
        )
        .unwrap();
        assert!(
            fields.password.is_some()
                || fields.totp.is_some()
                || fields.note.is_some()
                || !fields.custom_fields.is_empty()
        );
    }
    assert!(
        personal >= 1,
        "alice's listing has a personal user_key resource"
    );
}

#[test]
fn real_metadata_key_envelope_opens_without_a_known_signer() {
    let c = capture("13_metadata_keys_GET_contain_private_admin.json");
    let ring = keyring(
        "13_metadata_keys_GET_contain_private_admin.json",
        &fixture("admin").private_key(),
    );
    let id = c["response"]["body"]["body"][0]["id"].as_str().unwrap();
    assert_eq!(
        ring.fingerprints()[id],
        c["metadata_private_key_decrypted"]["fingerprint"]
            .as_str()
            .unwrap()
    );
    // The envelope is signed by whoever shared it; requiring that signature
    // against the server key must fail, which is why we don't.
    let data = c["response"]["body"]["body"][0]["metadata_private_keys"][0]["data"]
        .as_str()
        .unwrap();
    assert!(
        fixture("admin")
            .private_key()
            .decrypt_verify(&server_public_key(), data.as_bytes())
            .is_err()
    );
}

// ---- GnuPG interop -------------------------------------------------------

struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::tempdir().unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--yes", "--no-tty", "--trust-model", "always"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("gpg must be installed");
        if let Some(data) = stdin {
            child.stdin.take().unwrap().write_all(data).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn import_secret(&self, who: &common::Fixture) {
        let out = self.run(
            &[
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                &who.passphrase,
                "--import",
                who.private_path.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn import_public(&self, key: &passbolt_client::pgp::PublicKey) {
        let out = self.run(&["--import"], Some(key.armored().as_bytes()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// We encrypt and sign (as for a login challenge); gpg decrypts and
/// reports a good signature by the expected key.
fn ours_to_gpg(signer: &'static str, recipient: &'static str) {
    let signer = fixture(signer);
    let recipient = fixture(recipient);
    let gpg = Gpg::new();
    gpg.import_secret(&recipient);
    gpg.import_public(&signer.public);
    let message = br#"{"version":"1.0.0","domain":"https://pass.example.com","verify_token":"a1b2","verify_token_expiry":1}"#;
    let armored = signer
        .private_key()
        .encrypt_and_sign(&recipient.public, message)
        .unwrap();
    let out = gpg.run(
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            &recipient.passphrase,
            "--status-fd",
            "2",
            "--decrypt",
        ],
        Some(armored.as_bytes()),
    );
    let status = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{status}");
    assert_eq!(out.stdout, message);
    let fpr = signer.public.fingerprint();
    assert!(
        status
            .lines()
            .any(|l| l.contains("[GNUPG:] VALIDSIG") && l.ends_with(&fpr)),
        "gpg must see a valid signature by the primary key {fpr}:\n{status}"
    );
}

/// gpg encrypts and signs; we decrypt and require that signature.
fn gpg_to_ours(signer: &'static str, recipient: &'static str) {
    let signer = fixture(signer);
    let recipient = fixture(recipient);
    let gpg = Gpg::new();
    gpg.import_secret(&signer);
    gpg.import_public(&recipient.public);
    let message = b"secret written by gnupg \xe2\x9c\x93";
    let out = gpg.run(
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            &signer.passphrase,
            "--armor",
            "--sign",
            "--encrypt",
            "--recipient",
            &recipient.public.fingerprint(),
            "--local-user",
            &signer.public.fingerprint(),
        ],
        Some(message),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = recipient.private_key();
    let plaintext = key.decrypt_verify(&signer.public, &out.stdout).unwrap();
    assert_eq!(&plaintext[..], message);
    let wrong = key
        .decrypt_verify(&recipient.public, &out.stdout)
        .unwrap_err();
    assert!(matches!(wrong, PgpError::BadSignature { .. }), "{wrong}");
}

#[test]
fn gpg_reads_what_we_encrypt_and_sign_rsa_signer_curve25519_recipient() {
    ours_to_gpg("bob", "alice");
}

#[test]
fn gpg_reads_what_we_encrypt_and_sign_curve25519_signer_rsa_recipient() {
    ours_to_gpg("alice", "admin");
}

#[test]
fn we_read_what_gpg_encrypts_and_signs_rsa_signer_curve25519_recipient() {
    gpg_to_ours("admin", "alice");
}

#[test]
fn we_read_what_gpg_encrypts_and_signs_curve25519_signer_rsa_recipient() {
    gpg_to_ours("alice", "bob");
}

#[test]
fn an_unsigned_message_is_refused_where_a_signature_is_required() {
    let alice = fixture("alice");
    let armored = passbolt_client::pgp::encrypt(&alice.public, None, b"no signature here").unwrap();
    let key = alice.private_key();
    let err = key
        .decrypt_verify(&server_public_key(), armored.as_bytes())
        .unwrap_err();
    assert!(matches!(err, PgpError::BadSignature { .. }), "{err}");
    assert_eq!(
        &key.decrypt(armored.as_bytes()).unwrap()[..],
        b"no signature here"
    );
}

#[test]
fn a_wrong_passphrase_is_a_clear_error() {
    let alice = fixture("alice");
    let err =
        PrivateKey::load(&std::fs::read(&alice.private_path).unwrap(), Some(b"nope")).unwrap_err();
    assert!(matches!(err, PgpError::WrongPassphrase { .. }), "{err}");
    assert!(err.to_string().contains(&alice.public.fingerprint()));
    let err = PrivateKey::load(alice.public.armored().as_bytes(), None).unwrap_err();
    assert!(matches!(err, PgpError::NotSecret), "{err}");
}
