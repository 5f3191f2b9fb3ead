//! Writing a secret back against the dev server, whose write endpoints
//! refuse what the real 5.12 server refuses: every user with access
//! (direct, through a group, RSA and Curve25519) decrypts the new value
//! with their own key; the server's refusals; a concurrent edit; a
//! read-only account; a recipient key that has expired.

use crate::common;

use std::time::{Duration, SystemTime};

use common::{client, devserver, fixture};
use passbolt_client::secret::{Field, Secret};
use passbolt_client::write::{SetRequest, WriteError};
use passbolt_client::{ClientError, pgp};
use passbolt_devserver::{Account, Options, READ, seed::ids};
use reqwest::Method;
use serde_json::json;

/// What `who` reads as the password of `id`, decrypted with their key.
async fn password_of(server: &passbolt_devserver::DevServer, who: &str, id: &str) -> String {
    let c = client(
        server,
        &fixture(match who {
            "admin" => "admin",
            "bob" => "bob",
            _ => "alice",
        }),
    );
    let mut got = c.fetch_secrets(&[id.to_string()]).await.unwrap();
    let fields = got.remove(id).unwrap().fields.unwrap();
    fields.password.unwrap().expose().to_string()
}

fn set<'a>(id: &'a str, field: &'a Field, value: &'a Secret) -> SetRequest<'a> {
    SetRequest {
        id,
        field,
        value,
        clear_expired: false,
        expected_modified: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_user_with_access_decrypts_the_new_value_direct_and_through_a_group() {
    let server = devserver(Options::default()).await;
    let (admin, bob, alice) = (fixture("admin"), fixture("bob"), fixture("alice"));
    // alice (Curve25519) reads it only as a member of a group.
    server.revoke(ids::V5_DEFAULT, &alice.id);
    let ops = server.add_group("ops", &[alice.id.as_str()]);
    server
        .share_with_group(ids::V5_DEFAULT, &ops, READ)
        .unwrap();
    let before = server.stored_type_and_metadata(ids::V5_DEFAULT).unwrap();
    let old_bob = password_of(&server, "bob", ids::V5_DEFAULT).await;

    let c = client(&server, &admin);
    let value = Secret::new("n3w \"v5\" päss");
    let w = c
        .set_field(set(ids::V5_DEFAULT, &Field::Password, &value))
        .await
        .unwrap();
    let mut users: Vec<String> = w.recipients.iter().map(|r| r.user_id.clone()).collect();
    users.sort();
    let mut want = vec![admin.id.clone(), bob.id.clone(), alice.id.clone()];
    want.sort();
    assert_eq!(users, want);
    for who in ["admin", "bob", "alice"] {
        assert_eq!(
            password_of(&server, who, ids::V5_DEFAULT).await,
            value.expose(),
            "{who}"
        );
    }
    assert_ne!(old_bob, value.expose());
    // Type and v5 metadata untouched, byte for byte.
    assert_eq!(
        server.stored_type_and_metadata(ids::V5_DEFAULT).unwrap(),
        before
    );
    // Other fields of the secret kept: the description is still there.
    let fields = client(&server, &bob)
        .fetch_secrets(&[ids::V5_DEFAULT.to_string()])
        .await
        .unwrap()
        .remove(ids::V5_DEFAULT)
        .unwrap()
        .fields
        .unwrap();
    assert!(fields.description.is_some());

    // A v4 resource: the type stays password-and-description.
    let v4_before = server
        .stored_type_and_metadata(ids::V4_PASSWORD_DESCRIPTION)
        .unwrap();
    c.set_field(set(
        ids::V4_PASSWORD_DESCRIPTION,
        &Field::Password,
        &Secret::new("v4-new"),
    ))
    .await
    .unwrap();
    assert_eq!(
        server
            .stored_type_and_metadata(ids::V4_PASSWORD_DESCRIPTION)
            .unwrap(),
        v4_before
    );
    for who in ["admin", "bob", "alice"] {
        assert_eq!(
            password_of(&server, who, ids::V4_PASSWORD_DESCRIPTION).await,
            "v4-new"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_refuses_an_update_missing_one_users_secret_or_without_metadata() {
    let server = devserver(Options::default()).await;
    let admin = fixture("admin");
    let c = client(&server, &admin);
    let key = common::shared_key(&admin);
    let own = key
        .encrypt_and_sign(&key.public(), b"{\"password\":\"x\"}")
        .unwrap();
    let before = server.stored_secret(ids::V4_PASSWORD_DESCRIPTION, &admin.id);
    let modified = server.modified(ids::V4_PASSWORD_DESCRIPTION);
    let path = format!("/resources/{}.json", ids::V4_PASSWORD_DESCRIPTION);
    let body = json!({
        "resource_type_id": "a28a04cd-6f53-518a-967c-9963bf9cec51",
        "secrets": [{"user_id": admin.id, "data": own}],
    });
    let e = c
        .session()
        .send_json::<serde_json::Value>(Method::PUT, &path, &body)
        .await
        .unwrap_err();
    match &e {
        ClientError::Http { status: 400, message, .. } => assert!(
            message.contains("secrets.secrets_provided: The secrets should contain the secrets of all the users having access"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server.stored_secret(ids::V4_PASSWORD_DESCRIPTION, &admin.id),
        before
    );
    assert_eq!(server.modified(ids::V4_PASSWORD_DESCRIPTION), modified);

    // A secret-only PUT of a v5 resource is validated as v4 and refused.
    let path = format!("/resources/{}.json", ids::V5_DEFAULT);
    let e = c
        .session()
        .send_json::<serde_json::Value>(Method::PUT, &path, &json!({"secrets": []}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("v5_to_v4_downgrade_allowed"), "{e}");
    // Metadata encrypted to a key other than the claimed one is refused.
    let (_, _, meta) = server
        .stored_type_and_metadata(ids::V5_DEFAULT)
        .unwrap()
        .1
        .unwrap();
    let two = pgp::encrypt(&key.public(), None, b"{}").unwrap();
    let e = c
        .session()
        .send_json::<serde_json::Value>(
            Method::PUT,
            &path,
            &json!({"resource_type_id": "dd1f723d-0d1e-513f-8218-4055dc0530d0", "metadata": two,
                    "metadata_key_id": server.stored_type_and_metadata(ids::V5_DEFAULT).unwrap().1.unwrap().1,
                    "metadata_key_type": meta}),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("isValidEncryptedResourceMetadata"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_edit_is_detected_and_nothing_is_written() {
    let server = devserver(Options::default()).await;
    let t = server.now();
    server.set_clock(Some(t));
    let c = client(&server, &fixture("admin"));
    let read = server.modified(ids::V5_DEFAULT).unwrap();
    // Someone else edits it after our read.
    server.set_clock(Some(t + 5));
    server
        .set_secret(
            ids::V5_DEFAULT,
            r#"{"object_type":"PASSBOLT_SECRET_DATA","password":"theirs"}"#,
        )
        .unwrap();
    let e = c
        .set_field(SetRequest {
            expected_modified: Some(&read),
            ..set(ids::V5_DEFAULT, &Field::Password, &Secret::new("ours"))
        })
        .await
        .unwrap_err();
    assert!(matches!(e, WriteError::Concurrent { .. }), "{e}");
    assert!(e.to_string().contains(ids::V5_DEFAULT), "{e}");
    assert!(!e.to_string().contains("ours"));
    for who in ["admin", "bob", "alice"] {
        assert_eq!(password_of(&server, who, ids::V5_DEFAULT).await, "theirs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_account_gets_its_error_and_nothing_changes() {
    let server = devserver(Options::default()).await;
    let bob = fixture("bob");
    server
        .set_permission(ids::V5_DEFAULT, &bob.id, READ)
        .unwrap();
    let modified = server.modified(ids::V5_DEFAULT);
    let stored: Vec<_> = ["admin", "bob", "alice"]
        .iter()
        .map(|n| server.stored_secret(ids::V5_DEFAULT, &fixture(n).id))
        .collect();
    let e = client(&server, &bob)
        .set_field(set(ids::V5_DEFAULT, &Field::Password, &Secret::new("nope")))
        .await
        .unwrap_err();
    assert!(matches!(e, WriteError::ReadOnly { .. }), "{e}");
    assert!(e.to_string().contains("can update"), "{e}");
    assert_eq!(server.modified(ids::V5_DEFAULT), modified);
    let after: Vec<_> = ["admin", "bob", "alice"]
        .iter()
        .map(|n| server.stored_secret(ids::V5_DEFAULT, &fixture(n).id))
        .collect();
    assert_eq!(after, stored);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_recipient_key_stops_the_write_before_anything_is_sent() {
    let server = devserver(Options::default()).await;
    // carol's key expires a few seconds from now.
    let day = Duration::from_secs(86_400);
    let (key, _) = pgp::generate_key_expiring(
        "carol <carol@passbolt.local>",
        SystemTime::now() - day,
        day + Duration::from_secs(3),
    )
    .unwrap();
    let carol = "7e1c0000-0000-4000-8000-00000000ca01";
    server
        .add_account(Account {
            id: carol.into(),
            username: "carol@passbolt.local".into(),
            key: key.public(),
            mfa: Vec::new(),
        })
        .unwrap();
    server.share(ids::V5_DEFAULT, carol).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let modified = server.modified(ids::V5_DEFAULT);
    let e = client(&server, &fixture("admin"))
        .set_field(set(ids::V5_DEFAULT, &Field::Password, &Secret::new("x")))
        .await
        .unwrap_err();
    assert!(matches!(e, WriteError::RecipientKey { .. }), "{e}");
    assert!(e.to_string().contains("carol@passbolt.local"), "{e}");
    assert_eq!(server.modified(ids::V5_DEFAULT), modified);
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_fields_notes_and_totp_seeds_are_set_in_place() {
    let server = devserver(Options::default()).await;
    let c = client(&server, &fixture("admin"));
    c.set_field(set(ids::V5_NOTE, &Field::Note, &Secret::new("new note")))
        .await
        .unwrap();
    c.set_field(set(
        ids::V5_TOTP,
        &Field::Totp,
        &Secret::new("GEZDGNBVGY3TQOJQ"),
    ))
    .await
    .unwrap();
    let b = client(&server, &fixture("bob"));
    let mut got = b
        .fetch_secrets(&[ids::V5_NOTE.to_string(), ids::V5_TOTP.to_string()])
        .await
        .unwrap();
    let note = got.remove(ids::V5_NOTE).unwrap().fields.unwrap();
    assert_eq!(note.note.unwrap().expose(), "new note");
    let totp = got
        .remove(ids::V5_TOTP)
        .unwrap()
        .fields
        .unwrap()
        .totp
        .unwrap();
    assert_eq!(totp.secret_key.expose(), "GEZDGNBVGY3TQOJQ");
    let e = c
        .set_field(set(ids::V5_NOTE, &Field::Password, &Secret::new("x")))
        .await
        .unwrap_err();
    assert!(matches!(e, WriteError::Field { .. }), "{e}");
}
