//! The write endpoints refuse what the real 5.12 server refuses (the
//! write reference's §2-§5, each marked live there): who may update and
//! share, secrets for exactly the users with access, v5 payload shapes,
//! creation rules. Driven through the client's session, as bodies.

use crate::common;

use common::{client, devserver, fixture};
use passbolt_client::ClientError;
use passbolt_devserver::{Options, READ, seed::ids};
use reqwest::Method;
use serde_json::{Value, json};

const V4_TYPE: &str = "a28a04cd-6f53-518a-967c-9963bf9cec51";
const V5_TYPE: &str = "dd1f723d-0d1e-513f-8218-4055dc0530d0";
const V5_STRING_TYPE: &str = "761e5863-e17e-5ded-b3c2-76ffd5d0a2dc";

async fn refused(
    c: &passbolt_client::Client,
    method: Method,
    path: &str,
    body: Value,
) -> (u16, String) {
    match c.session().send_json::<Value>(method, path, &body).await {
        Err(ClientError::Http {
            status, message, ..
        }) => (status, message),
        other => panic!("{path}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_update_and_share_refuse_what_the_real_server_refuses() {
    let server = devserver(Options::default()).await;
    let (admin, bob) = (fixture("admin"), fixture("bob"));
    let a = client(&server, &admin);
    let key = common::shared_key(&admin);
    let msg = key.encrypt_and_sign(&key.public(), b"{}").unwrap();

    // Create.
    for (body, status, needle) in [
        (
            json!({"name": "x", "resource_type_id": V4_TYPE}),
            400,
            "The owner secret is required.",
        ),
        (
            json!({"name": "x", "resource_type_id": V4_TYPE, "secrets": [{"data": msg}, {"data": msg}]}),
            400,
            "The secrets should contain only the secret of the owner.",
        ),
        (
            json!({"name": "x", "resource_type_id": V4_TYPE, "secrets": [{"data": "not armored"}]}),
            400,
            "valid ASCII-armored OpenPGP message",
        ),
        (
            json!({"resource_type_id": V4_TYPE, "secrets": [{"data": msg}]}),
            400,
            "A name is required.",
        ),
        (
            json!({"name": "x", "metadata": msg, "secrets": [{"data": msg}]}),
            400,
            "Few fields are missing for the V5.",
        ),
        (
            json!({"name": "x", "metadata": msg, "metadata_key_id": ids::V5_DEFAULT, "metadata_key_type": "shared_key",
                "secrets": [{"data": msg}]}),
            400,
            "V4 related fields are not supported for V5.",
        ),
        (
            json!({"resource_type_id": V5_STRING_TYPE, "metadata": msg, "metadata_key_id": ids::V5_DEFAULT,
                "metadata_key_type": "shared_key", "secrets": [{"data": msg}]}),
            400,
            "It is not allowed to create v5-password-string resource types.",
        ),
        (
            json!({"resource_type_id": V5_TYPE, "metadata": msg, "metadata_key_id": ids::V5_DEFAULT,
                "metadata_key_type": "shared_key", "secrets": [{"data": msg}]}),
            400,
            "The metadata key does not exist or was deleted.",
        ),
        (
            json!({"name": "x", "resource_type_id": V4_TYPE, "folder_parent_id": ids::V5_DEFAULT, "secrets": [{"data": msg}]}),
            400,
            "The folder parent does not exist.",
        ),
    ] {
        let (s, m) = refused(&a, Method::POST, "/resources.json", body.clone()).await;
        assert_eq!(s, status, "{body}: {m}");
        assert!(m.contains(needle), "{body}: {m}");
    }
    let count = server.resources().len();

    // Update: bob with READ is refused; an unknown id is 404.
    server
        .set_permission(ids::V4_PASSWORD_DESCRIPTION, &bob.id, READ)
        .unwrap();
    let b = client(&server, &bob);
    let path = format!("/resources/{}.json", ids::V4_PASSWORD_DESCRIPTION);
    let (s, m) = refused(&b, Method::PUT, &path, json!({"resource_type_id": V4_TYPE})).await;
    assert_eq!(
        (s, m.as_str()),
        (403, "You are not allowed to update this resource.")
    );
    let (s, _) = refused(
        &a,
        Method::PUT,
        "/resources/3c2b5e1a-0000-4000-8000-0000000000ff.json",
        json!({}),
    )
    .await;
    assert_eq!(s, 404);
    // A secret for someone without access, or one missing: refused.
    let all: Vec<Value> = [&admin, &bob, &fixture("alice")]
        .iter()
        .map(|f| json!({"user_id": f.id, "data": msg}))
        .collect();
    let mut extra = all.clone();
    extra.push(json!({"user_id": "7e1c0000-0000-4000-8000-00000000ca01", "data": msg}));
    for secrets in [
        all[..2].to_vec(),
        extra,
        [all.clone(), all[..1].to_vec()].concat(),
    ] {
        let (s, m) = refused(
            &a,
            Method::PUT,
            &path,
            json!({"resource_type_id": V4_TYPE, "secrets": secrets}),
        )
        .await;
        assert_eq!(s, 400);
        assert!(m.contains("secrets_provided"), "{m}");
    }

    // Share: only an owner; at least one owner left; every new user's
    // secret required; a personal v5 item cannot be shared.
    let share = format!("/share/resource/{}.json", ids::V4_PASSWORD_DESCRIPTION);
    let (s, m) = refused(&b, Method::PUT, &share, json!({"permissions": []})).await;
    assert_eq!(
        (s, m.as_str()),
        (403, "You are not authorized to share this resource.")
    );
    let carol_group = server.add_group("carols", &[]);
    let (s, m) = refused(
        &a,
        Method::PUT,
        &share,
        json!({"permissions": [{"aro": "Group", "aro_foreign_key": carol_group, "type": 3}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        m.contains("The type should be one of the following: 1, 7, 15."),
        "{m}"
    );
    server.revoke(ids::V4_PASSWORD_DESCRIPTION, &fixture("alice").id);
    let add_alice = json!({"permissions": [{"aro": "User", "aro_foreign_key": fixture("alice").id, "type": 1}]});
    let simulated: Value = a
        .session()
        .send_json(
            Method::POST,
            &format!(
                "/share/simulate/resource/{}.json",
                ids::V4_PASSWORD_DESCRIPTION
            ),
            &add_alice,
        )
        .await
        .unwrap();
    assert_eq!(
        simulated["changes"]["added"][0]["User"]["id"],
        json!(fixture("alice").id)
    );
    let (s, m) = refused(&a, Method::PUT, &share, add_alice).await;
    assert_eq!(s, 400);
    assert!(
        m.contains("The secrets of all the users having access to the resource are required."),
        "{m}"
    );
    let personal = server
        .resources()
        .into_iter()
        .find(|r| matches!(r.mode, passbolt_devserver::seed::MetadataMode::Personal { ref owner } if *owner == admin.id))
        .unwrap();
    let (s, m) = refused(
        &a,
        Method::PUT,
        &format!("/share/resource/{}.json", personal.id),
        json!({"permissions": []}),
    )
    .await;
    assert_eq!(
        (s, m.as_str()),
        (400, "Resource metadata key type is invalid.")
    );
    // Nothing above created or changed a resource.
    assert_eq!(server.resources().len(), count);
}
