//! Secret revisions and password expiry as the write reference's §10 and
//! §8 describe them: an update opens a new revision and soft-deletes the
//! old one, whose secrets stay only within `max_revisions`; each caller
//! sees only revisions they hold a secret in, with their own secret; the
//! expiry settings and automatic expiry when a reader loses access.

use crate::common;

use common::{client, devserver, fixture, shared_key};
use passbolt_client::ClientError;
use passbolt_client::secret::{Field, Secret};
use passbolt_client::write::SetRequest;
use passbolt_devserver::{DevServer, Options, seed::ids};
use serde_json::{Value, json};

fn revisions_path(id: &str) -> String {
    format!("/secret-revisions/resource/{id}.json?contain%5Bsecret%5D=1&contain%5Bcreator%5D=1")
}

async fn set_password(c: &passbolt_client::Client, id: &str, value: &str) {
    c.set_field(SetRequest {
        id,
        field: &Field::Password,
        value: &Secret::new(value),
        clear_expired: false,
        expected_modified: None,
    })
    .await
    .unwrap();
}

/// The passwords of each revision `who` sees, newest first.
async fn passwords(server: &DevServer, who: &'static str, id: &str) -> Vec<(Value, String)> {
    let f = fixture(who);
    let items: Vec<Value> = client(server, &f)
        .session()
        .get(&revisions_path(id))
        .await
        .unwrap();
    let key = shared_key(&f);
    items
        .into_iter()
        .map(|item| {
            let secrets = item["secrets"].as_array().unwrap();
            assert_eq!(secrets.len(), 1, "only the caller's secret: {item}");
            assert_eq!(secrets[0]["user_id"], json!(f.id));
            assert_eq!(secrets[0]["secret_revision_id"], item["id"]);
            let plain = key
                .decrypt(secrets[0]["data"].as_str().unwrap().as_bytes())
                .unwrap();
            let v: Value = serde_json::from_slice(&plain).unwrap();
            (item, v["password"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_keep_past_secrets_only_as_max_revisions_allows() {
    let server = devserver(Options::default()).await;
    let admin = fixture("admin");
    let a = client(&server, &admin);
    let id = ids::V5_DEFAULT;
    let settings: Value = a
        .session()
        .get("/secret-revisions/settings.json")
        .await
        .unwrap();
    assert_eq!(
        settings,
        json!({"max_revisions": 1, "allow_sharing_revisions": false})
    );

    let seeded = passwords(&server, "admin", id).await;
    assert_eq!(seeded.len(), 1);
    assert_eq!(seeded[0].0["deleted"], Value::Null);

    // The default keeps no past secret: still one revision, a new one.
    set_password(&a, id, "pw-1").await;
    let after = passwords(&server, "admin", id).await;
    assert_eq!(after.len(), 1);
    assert_ne!(after[0].0["id"], seeded[0].0["id"]);
    assert_eq!(after[0].1, "pw-1");
    assert_eq!(after[0].0["created_by"], json!(admin.id));
    assert_eq!(after[0].0["creator"]["id"], json!(admin.id));

    // Three revisions: the active one and the two newest past ones.
    server.set_secret_revisions_settings(
        json!({"max_revisions": 3, "allow_sharing_revisions": false}),
    );
    set_password(&a, id, "pw-2").await;
    set_password(&a, id, "pw-3").await;
    let kept = passwords(&server, "admin", id).await;
    let values: Vec<&str> = kept.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(values, ["pw-3", "pw-2", "pw-1"], "newest deletion first");
    assert_eq!(kept[0].0["deleted"], Value::Null);
    assert!(kept[1].0["deleted"].is_string() && kept[2].0["deleted"].is_string());
    for (item, _) in &kept[1..] {
        assert_eq!(item["secrets"][0]["deleted"], item["deleted"]);
    }
    // Each reader sees their own copies only.
    let bob = passwords(&server, "bob", id).await;
    assert_eq!(bob.len(), 3);
    assert_eq!(bob[0].1, "pw-3");

    // Only the active secret handed out is an access.
    let before = server.count_secret_reads();
    passwords(&server, "admin", id).await;
    assert_eq!(server.count_secret_reads(), before + 1);

    // Without contain[secret]: the rows, no secret, no access.
    let rows: Vec<Value> = a
        .session()
        .get(&format!("/secret-revisions/resource/{id}.json"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.get("secrets").is_none()));
    assert_eq!(server.count_secret_reads(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn revisions_refuse_a_bad_id_and_a_resource_without_access() {
    let server = devserver(Options::default()).await;
    let bob = fixture("bob");
    server.revoke(ids::V5_NOTE, &bob.id);
    let b = client(&server, &bob);
    for (path, status, message) in [
        (
            "/secret-revisions/resource/not-a-uuid.json",
            400,
            "The resource identifier should be a valid UUID.",
        ),
        (
            &*format!("/secret-revisions/resource/{}.json", ids::V5_NOTE),
            404,
            "The resource does not exist.",
        ),
    ] {
        match b.session().get::<Value>(path).await {
            Err(ClientError::Http {
                status: s,
                message: m,
                ..
            }) => assert_eq!((s, m.as_str()), (status, message), "{path}"),
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn automatic_expiry_marks_what_a_reader_who_lost_access_had_read() {
    let server = devserver(Options::default()).await;
    let (admin, bob) = (fixture("admin"), fixture("bob"));
    let a = client(&server, &admin);
    let settings: Value = a
        .session()
        .get("/password-expiry/settings.json")
        .await
        .unwrap();
    assert_eq!(
        settings,
        json!({"automatic_expiry": false, "automatic_update": false})
    );
    // Off: losing access changes nothing.
    client(&server, &bob)
        .fetch_secrets(&[ids::V4_PASSWORD_STRING.to_string()])
        .await
        .unwrap();
    server.revoke(ids::V4_PASSWORD_STRING, &bob.id);
    assert_eq!(server.expired(ids::V4_PASSWORD_STRING), None);

    server
        .set_password_expiry_settings(json!({"automatic_expiry": true, "automatic_update": true}));
    client(&server, &bob)
        .fetch_secrets(&[ids::V5_DEFAULT.to_string()])
        .await
        .unwrap();
    server.revoke(ids::V5_DEFAULT, &bob.id);
    server.revoke(ids::V5_NOTE, &bob.id);
    let expired = server.expired(ids::V5_DEFAULT).expect("marked expired");
    let at = chrono::DateTime::parse_from_rfc3339(&expired).unwrap();
    // Two seconds before the revocation, by the server's clock.
    assert!((server.now() - 2 - at.timestamp()).abs() <= 1, "{expired}");
    assert_eq!(server.expired(ids::V5_NOTE), None, "bob never read it");
}
