//! Property tests: what the renderers write reads back identically through
//! their real consumers, and the parsers of untrusted input (the config
//! file, the server's answers, decrypted secrets) return errors, never
//! panic, on mutated inputs. Case counts are bounded so the module runs in
//! seconds; `fuzz/` runs the same entry points for as long as one wants.

use crate::common;

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use passbolt_client::Keyring;
use passbolt_client::decode::{decode_metadata, parse_secret};
use passbolt_client::model::{Envelope, MetadataKey, Resource as Row, ResourceType};
use passbolt_client::pgp::PrivateKey;
use passbolt_client::secret::Secret;
use passbolt_sync::config::Config;
use passbolt_sync::sync::render::RenderError;
use passbolt_sync::sync::render::dotenv::{self, Dialect};
use passbolt_sync::sync::render::json;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

/// Characters that matter to some dotenv reader, and a few that do not.
const TRICKY: &[char] = &[
    '\'', '"', '\\', '$', '`', '{', '}', ':', '-', '=', '#', ' ', '\t', '\n', '\r', '\0', '!', '*',
    '?', '~', ';', '&', '|', '<', '>', '(', ')', '[', ']', 'a', 'Z', '0', '_', 'é', '🔑', '\u{a0}',
    '\u{2028}', '\u{3000}',
];

fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(TRICKY),
            1 => any::<char>(),
        ],
        0..max,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        // Shrinking a failure is worth its time; a pass should be quick.
        max_shrink_iters: 2048,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// Every variable of `file` as bash reads it (`set -a; . file`), one bash
/// for all of `names`; `None` for a name bash left unset.
fn bash_read(file: &Path, names: &[String]) -> Vec<Option<Vec<u8>>> {
    let read = crate::dotenv_consumers::bash_read(file, names);
    names.iter().map(|n| read.get(n).cloned()).collect()
}

#[test]
fn portable_dotenv_reads_back_in_dotenvy_and_bash_or_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("case.env");
    let (accepted, refused) = (Cell::new(0u32), Cell::new(0u32));
    runner(400)
        .run(&prop::collection::vec(tricky_string(24), 1..24), |values| {
            let vars: Vec<(String, Secret)> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("PBS_VAR_{i}"), Secret::new(v.as_str())))
                .collect();
            // Each value alone: accepted or refused with a reason that
            // names its variable.
            let mut representable = Vec::new();
            for (name, value) in &vars {
                match dotenv::render(&[(name.clone(), value.clone())], Dialect::Portable) {
                    Ok(_) => representable.push((name.clone(), value.clone())),
                    Err(RenderError::Unrepresentable { var, reason }) => {
                        prop_assert_eq!(&var, name);
                        prop_assert!(!reason.is_empty());
                        refused.set(refused.get() + 1);
                    }
                    Err(e) => prop_assert!(false, "{name}: unexpected error {e}"),
                }
            }
            if representable.is_empty() {
                return Ok(());
            }
            accepted.set(accepted.get() + representable.len() as u32);
            // The accepted ones together, in one file, read back by
            // dotenvy and by one bash.
            let rendered = dotenv::render(&representable, Dialect::Portable)
                .expect("each value rendered alone");
            let back = dotenv::parse(&rendered).expect("dotenvy reads what we wrote");
            prop_assert_eq!(back.len(), representable.len());
            for ((name, value), (bname, bvalue)) in representable.iter().zip(&back) {
                prop_assert_eq!(name, bname);
                prop_assert_eq!(value.expose(), bvalue.expose(), "dotenvy, {}", name);
            }
            std::fs::File::create(&file)
                .and_then(|mut f| f.write_all(&rendered))
                .unwrap();
            let names: Vec<String> = representable.iter().map(|(n, _)| n.clone()).collect();
            for ((name, value), got) in representable.iter().zip(bash_read(&file, &names)) {
                prop_assert_eq!(
                    got.as_deref(),
                    Some(value.expose().as_bytes()),
                    "bash, {}",
                    name
                );
            }
            Ok(())
        })
        .unwrap();
    // The alphabet is meant to exercise both outcomes.
    let (accepted, refused) = (accepted.get(), refused.get());
    assert!(
        accepted > 200 && refused > 50,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn json_targets_read_back_identically_with_serde_json() {
    let name = "[A-Za-z_][A-Za-z0-9_.-]{0,12}";
    runner(256)
        .run(
            &prop::collection::hash_map(name, any::<String>(), 0..16),
            |vars: HashMap<String, String>| {
                let vars: Vec<(String, Secret)> =
                    vars.into_iter().map(|(k, v)| (k, Secret::new(v))).collect();
                let rendered = json::render(&vars);
                let back: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&rendered).expect("valid JSON");
                prop_assert_eq!(back.len(), vars.len());
                for (name, value) in &vars {
                    prop_assert_eq!(back[name].as_str(), Some(value.expose()), "{}", name);
                }
                Ok(())
            },
        )
        .unwrap();
}

/// A mutation of a text or byte input: what a truncated download, an
/// editor accident or a hostile server would produce.
#[derive(Debug, Clone)]
enum Mutation {
    /// Delete `len` bytes at a position (as a fraction of the length).
    Delete(f64, usize),
    /// Insert a token at a position.
    Insert(f64, Vec<u8>),
    /// Replace one byte.
    Flip(f64, u8),
    /// Cut everything after a position.
    Truncate(f64),
    /// Copy a slice to another position.
    Duplicate(f64, usize, f64),
}

fn mutation(tokens: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    let token = prop_oneof![
        3 => prop::sample::select(tokens).prop_map(|t| t.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        (0.0..1.0f64, 1..64usize).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (0.0..1.0f64, token).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (0.0..1.0f64, any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        (0.0..1.0f64, 1..200usize, 0.0..1.0f64).prop_map(|(a, n, b)| Mutation::Duplicate(a, n, b)),
    ]
}

fn mutate(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = input.to_vec();
    let at = |f: f64, len: usize| ((f * len as f64) as usize).min(len);
    for m in mutations {
        let len = out.len();
        match m {
            Mutation::Delete(f, n) => {
                let start = at(*f, len);
                out.drain(start..(start + n).min(len));
            }
            Mutation::Insert(f, t) => {
                let i = at(*f, len);
                out.splice(i..i, t.iter().copied());
            }
            Mutation::Flip(f, b) if len > 0 => {
                let i = at(*f, len - 1);
                out[i] = *b;
            }
            Mutation::Flip(..) => {}
            Mutation::Truncate(f) => out.truncate(at(*f, len)),
            Mutation::Duplicate(f, n, g) => {
                let start = at(*f, len);
                let piece = out[start..(start + n).min(len)].to_vec();
                let to = at(*g, len);
                out.splice(to..to, piece);
            }
        }
    }
    out
}

const YAML_TOKENS: &[&str] = &[
    ":",
    " ",
    "\n",
    "  ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "#",
    "&a",
    "*a",
    "!!str ",
    "~",
    "null",
    "0",
    "-1",
    "99999999999999999999",
    "1e309",
    "0x10",
    "\"0640\"",
    "0777",
    "every ",
    "0s",
    "cron",
    "* * * * *",
    "${CREDENTIALS_DIRECTORY}",
    "../",
    "/",
    "\t",
    "? ",
    "|\n",
    ">\n",
    "format: ",
    "dotenv",
    "raw",
    "json",
    "template",
    "vars:",
    "resource: ",
    "field: ",
    "custom:",
    "name: ",
    "folder: ",
    "mode: ",
    "schedule: ",
    "timezone: ",
    "Europe/Berlin",
    "splay: ",
    "on_missing: ",
    "targets:",
    "server:",
    "auth:",
    "url: ",
    "http://127.0.0.1",
    "https://[",
    "\u{feff}",
    "\u{0}",
];

#[test]
fn config_loader_returns_an_error_never_a_panic_on_mutated_configs() {
    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("sync.example.yaml")).unwrap();
    assert!(
        Config::parse(
            std::str::from_utf8(&example).unwrap(),
            Path::new("sync.yaml")
        )
        .is_ok(),
        "the example is valid before it is mutated"
    );
    let (ok, err) = (Cell::new(0u32), Cell::new(0u32));
    runner(1500)
        .run(
            &prop::collection::vec(mutation(YAML_TOKENS), 1..6),
            |mutations| {
                let bytes = mutate(&example, &mutations);
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    return Ok(());
                };
                match Config::parse(text, Path::new("/etc/passbolt-sync/sync.yaml")) {
                    Ok(_) => ok.set(ok.get() + 1),
                    Err(e) => {
                        prop_assert!(!e.to_string().is_empty());
                        err.set(err.get() + 1);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    let (ok, err) = (ok.get(), err.get());
    assert!(
        err > 50,
        "{ok} parsed, {err} refused: the mutations do mutate"
    );
}

const JSON_TOKENS: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "1e999",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"",
    "\\u0000",
    "\\ud800",
    "\"metadata\":",
    "\"secrets\":[]",
    "\"data\":\"-----BEGIN PGP MESSAGE-----\\n\\n=AAAA\\n-----END PGP MESSAGE-----\"",
    "\"metadata_key_type\":\"user_key\"",
    "\"metadata_key_type\":\"shared_key\"",
    "\"metadata_key_id\":null",
    "\"resource_type_id\":\"x\"",
    "\"id\":1",
    "\"modified\":null",
    "\"body\":",
    "\"header\":",
];

/// The admin's key and keyring, unlocked once.
fn admin() -> &'static (std::sync::Arc<PrivateKey>, Keyring, HashMap<String, String>) {
    static ADMIN: OnceLock<(std::sync::Arc<PrivateKey>, Keyring, HashMap<String, String>)> =
        OnceLock::new();
    ADMIN.get_or_init(|| {
        let key = common::shared_key(&common::fixture("admin"));
        let c = common::capture("13_metadata_keys_GET_contain_private_admin.json");
        let listed: Vec<MetadataKey> =
            serde_json::from_value(c["response"]["body"]["body"].clone()).unwrap();
        let (ring, errors) = Keyring::load(&listed, &key);
        assert!(errors.is_empty(), "{errors:?}");
        let c = common::capture("09_resource_types_GET.json");
        let types: Vec<ResourceType> =
            serde_json::from_value(c["response"]["body"]["body"].clone()).unwrap();
        let slugs = types.into_iter().map(|t| (t.id, t.slug)).collect();
        (key, ring, slugs)
    })
}

fn capture_body(name: &str) -> Vec<u8> {
    serde_json::to_vec(&common::capture(name)["response"]["body"]).unwrap()
}

#[test]
fn listing_decoder_returns_an_error_never_a_panic_on_mutated_answers() {
    let (key, ring, slugs) = admin();
    let listings = [
        capture_body("06_resources_index_GET_plain_admin.json"),
        capture_body("07_resources_index_GET_contain_secret_admin.json"),
    ];
    for l in &listings {
        let rows: Envelope<Vec<Row>> = serde_json::from_slice(l).unwrap();
        assert!(!rows.body.is_empty());
    }
    let (decoded, refused) = (Cell::new(0u32), Cell::new(0u32));
    runner(400)
        .run(
            &(
                0..listings.len(),
                prop::collection::vec(mutation(JSON_TOKENS), 1..4),
            ),
            |(which, mutations)| {
                let bytes = mutate(&listings[which], &mutations);
                let Ok(envelope) = serde_json::from_slice::<Envelope<Vec<Row>>>(&bytes) else {
                    refused.set(refused.get() + 1);
                    return Ok(());
                };
                // Decrypting every row of every case would take minutes:
                // the rows near a mutation are what changed.
                for row in envelope.body.iter().take(4) {
                    let slug = slugs
                        .get(&row.resource_type_id)
                        .map(String::as_str)
                        .unwrap_or("password-string");
                    match decode_metadata(row, slug, None, ring, key) {
                        Ok(_) => decoded.set(decoded.get() + 1),
                        Err(e) => {
                            prop_assert_eq!(e.resource_id(), row.id.as_str());
                            refused.set(refused.get() + 1);
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    let (decoded, refused) = (decoded.get(), refused.get());
    assert!(
        decoded > 0 && refused > 0,
        "{decoded} decoded, {refused} refused"
    );
}

#[test]
fn secret_parser_returns_an_error_never_a_panic_on_mutated_plaintexts() {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for f in ["expected/resources_v4.json", "expected/resources_v5.json"] {
        for r in common::capture(f).as_array().unwrap() {
            seeds.push((
                r["type"].as_str().unwrap().to_string(),
                r["secret_cleartext"].as_str().unwrap().as_bytes().to_vec(),
            ));
        }
    }
    assert!(seeds.len() > 10);
    let (parsed, refused) = (Cell::new(0u32), Cell::new(0u32));
    runner(3000)
        .run(
            &(
                0..seeds.len(),
                prop::collection::vec(mutation(JSON_TOKENS), 1..5),
            ),
            |(which, mutations)| {
                let (slug, plaintext) = &seeds[which];
                let bytes = mutate(plaintext, &mutations);
                match parse_secret("3c2b5e1a-0000-4000-8000-000000000001", slug, &bytes, &[]) {
                    Ok(_) => parsed.set(parsed.get() + 1),
                    Err(e) => {
                        // The reason names the resource.
                        prop_assert!(
                            e.to_string()
                                .contains("3c2b5e1a-0000-4000-8000-000000000001")
                        );
                        refused.set(refused.get() + 1);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    let (parsed, refused) = (parsed.get(), refused.get());
    assert!(
        parsed > 0 && refused > 0,
        "{parsed} parsed, {refused} refused"
    );
}

fn tricky_vars(values: &[String]) -> Vec<(String, Secret)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("VAR_{i}"), Secret::new(v.as_str())))
        .collect()
}

/// The oracle of the `dotenv` fuzz target: what either dialect renders,
/// its own reader reads back identically.
fn assert_dotenv_round_trip(vars: &[(String, Secret)]) -> Result<(), TestCaseError> {
    for dialect in [Dialect::Portable, Dialect::Docker] {
        let Ok(rendered) = dotenv::render(vars, dialect) else {
            continue;
        };
        let back = dotenv::parse_with(&rendered, dialect).expect("rendered output parses");
        prop_assert_eq!(back.len(), vars.len(), "{:?}", dialect);
        for ((name, value), (bname, bvalue)) in vars.iter().zip(&back) {
            prop_assert_eq!(name, bname);
            prop_assert_eq!(value.expose(), bvalue.expose(), "{:?} {}", dialect, name);
        }
    }
    Ok(())
}

#[test]
fn both_dotenv_dialects_read_back_what_they_render() {
    runner(1000)
        .run(&prop::collection::vec(tricky_string(16), 1..8), |values| {
            assert_dotenv_round_trip(&tricky_vars(&values))
        })
        .unwrap();
}

/// The fuzz targets' seeds (`fuzz/seeds/<target>/`), run through the same
/// entry points and checks as the targets, so the suite keeps passing the
/// inputs the fuzzers start from (and any regression input added there).
#[test]
fn fuzz_seeds_pass_their_targets_checks() {
    const SLUGS: &[&str] = &[
        "password-string",
        "password-and-description",
        "totp",
        "password-description-totp",
        "v5-password-string",
        "v5-default",
        "v5-default-with-totp",
        "v5-totp-standalone",
        "v5-custom-fields",
        "v5-note",
        "v5-pin-code",
        "some-future-type",
    ];
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let read = |target: &str| -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(seeds.join(target))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds for {target}");
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    };
    for data in read("config") {
        let text = std::str::from_utf8(&data).unwrap();
        Config::parse(text, Path::new("/etc/passbolt-sync/sync.yaml")).unwrap();
    }
    let (key, ring, slugs) = admin();
    for data in read("listing") {
        let envelope: Envelope<Vec<Row>> = serde_json::from_slice(&data).unwrap();
        for row in &envelope.body {
            let slug = slugs[&row.resource_type_id].as_str();
            decode_metadata(row, slug, None, ring, key).unwrap();
        }
    }
    for data in read("secret") {
        let (&pick, plaintext) = data.split_first().unwrap();
        let slug = SLUGS[pick as usize % SLUGS.len()];
        parse_secret("3c2b5e1a-0000-4000-8000-000000000001", slug, plaintext, &[]).unwrap();
    }
    for data in read("dotenv") {
        let _ = dotenv::parse(&data);
        let _ = dotenv::parse_with(&data, Dialect::Docker);
        let text = std::str::from_utf8(&data).unwrap();
        let values: Vec<String> = text.split('\0').map(str::to_string).collect();
        assert_dotenv_round_trip(&tricky_vars(&values)).unwrap();
    }
}

/// Found by `listing_decoder_returns_an_error_never_a_panic_on_mutated_answers`:
/// one byte of a captured listing replaced by `#` broke the armor of a v5
/// metadata message so that sequoia-openpgp 2.4 panicked
/// ("Invalid ASCII Armor footer", an unwrap in its parser) instead of
/// returning an error.
#[test]
fn regression_armor_that_made_sequoia_panic_is_a_metadata_error() {
    let (key, ring, slugs) = admin();
    let mut bytes = capture_body("06_resources_index_GET_plain_admin.json");
    let at = (0.2288930046489001 * bytes.len() as f64) as usize;
    bytes[at] = b'#';
    let envelope: Envelope<Vec<Row>> = serde_json::from_slice(&bytes).unwrap();
    let errors: Vec<_> = envelope
        .body
        .iter()
        .take(4)
        .filter_map(|row| {
            decode_metadata(row, &slugs[&row.resource_type_id], None, ring, key).err()
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .to_string()
            .contains("the OpenPGP parser failed on this malformed message"),
        "{}",
        errors[0]
    );
}
