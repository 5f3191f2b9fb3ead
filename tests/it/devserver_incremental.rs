//! The dev server is faithful where an incremental sync depends on it:
//! every secret handed out is logged, `filter[has-id][]` restricts the
//! listing (and refuses what is not a UUID with the real server's 400),
//! `modified` moves on every edit and never on sharing, the clock can be
//! frozen, metadata keys rotate, an account can lack the metadata key and
//! get it later, and thousands of generated resources seed quickly. All
//! over HTTP, through the client or raw requests after a login.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{client, devserver, fixture};
use passbolt_client::{Client, ClientError, api};
use passbolt_devserver::seed::{self, GENERATED_PER_FOLDER, MetadataMode, ids};
use passbolt_devserver::{DevServer, DevServerError, Options, SeedResource};
use serde_json::Value;

/// The personal (user_key) sample items of bob and alice.
const BOB_PERSONAL: &str = "3c2b5e1a-0000-4000-8001-000000000002";
const ALICE_PERSONAL: &str = "3c2b5e1a-0000-4000-8001-000000000003";

/// The sample items whose metadata is encrypted with the shared key.
const SHARED_V5: &[&str] = &[
    ids::V5_PASSWORD_STRING,
    ids::V5_DEFAULT,
    ids::V5_DEFAULT_TOTP,
    ids::V5_TOTP,
    ids::V5_CUSTOM_FIELDS,
    ids::V5_NOTE,
    ids::V5_PIN,
    ids::MYAPP_DB,
    ids::MYAPP_API,
];

const V4: &[&str] = &[
    ids::V4_PASSWORD_STRING,
    ids::V4_PASSWORD_DESCRIPTION,
    ids::V4_TOTP,
    ids::V4_PASSWORD_DESCRIPTION_TOTP,
];

/// `2026-12-01T13:22:24+00:00`, as the server stamps `modified`.
fn stamp(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Requests with the account's bearer token, for what the client does not
/// send on its own.
struct Raw {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Raw {
    async fn new(server: &DevServer, c: &Client) -> Raw {
        Raw {
            http: reqwest::Client::new(),
            base: server.url(),
            token: c.session().access_token().await.unwrap().to_string(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

fn body_ids(body: &Value) -> Vec<String> {
    body["body"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn pairs(user: &str, resources: &[&str]) -> Vec<(String, String)> {
    resources
        .iter()
        .map(|r| (user.to_string(), r.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_secret_handed_out_is_logged_once() {
    let server = devserver(Options::default()).await;
    let (bob, alice) = (fixture("bob"), fixture("alice"));
    let c = client(&server, &bob);
    let listing = c.list(true).await.unwrap();
    assert_eq!(server.count_secret_reads(), 0, "a listing reads no secret");

    let (rows, _) = api::resources(c.session(), true, None).await.unwrap();
    assert_eq!(rows.len(), listing.resources.len());
    let mut want: Vec<(String, String)> = rows
        .iter()
        .map(|r| (bob.id.clone(), r.id.clone()))
        .collect();
    assert_eq!(server.secret_reads(), want);

    let two = [ids::V5_DEFAULT.to_string(), ids::V4_TOTP.to_string()];
    let (rows, _) = api::resources(c.session(), true, Some(&two[..]))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    // One per secret in the answer, which is in listing order.
    want.extend(pairs(&bob.id, &[ids::V4_TOTP, ids::V5_DEFAULT]));
    assert_eq!(server.secret_reads(), want);
    api::resources(c.session(), false, Some(&two[..]))
        .await
        .unwrap();
    assert_eq!(server.secret_reads(), want, "has-id without secrets");

    let fetched = c.fetch_secrets(&[ids::V5_PIN.to_string()]).await.unwrap();
    assert!(fetched[ids::V5_PIN].fields.is_ok());
    want.extend(pairs(&bob.id, &[ids::V5_PIN]));

    let raw = Raw::new(&server, &c).await;
    let view = format!("/resources/{}.json", ids::V5_NOTE);
    assert_eq!(raw.get(&view).await.0, 200);
    assert_eq!(server.secret_reads(), want, "a view without secret");
    let (status, body) = raw.get(&format!("{view}?contain[secret]=1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["body"]["secrets"].as_array().unwrap().len(), 1);
    want.extend(pairs(&bob.id, &[ids::V5_NOTE]));
    let (status, body) = raw
        .get(&format!(
            "/secrets/resource/{}.json",
            ids::V4_PASSWORD_STRING
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["body"]["resource_id"], ids::V4_PASSWORD_STRING);
    want.extend(pairs(&bob.id, &[ids::V4_PASSWORD_STRING]));
    // Nothing handed out, nothing logged.
    let (status, _) = raw
        .get(&format!("/secrets/resource/{ALICE_PERSONAL}.json"))
        .await;
    assert_eq!(status, 404);
    let (status, body) = raw
        .get(&format!(
            "/resources.json?contain[secret]=1&filter[has-id][]={ALICE_PERSONAL}"
        ))
        .await;
    assert_eq!((status, body_ids(&body).len()), (200, 0));
    assert_eq!(server.secret_reads(), want);

    let a = client(&server, &alice);
    a.fetch_secrets(&[ALICE_PERSONAL.to_string()])
        .await
        .unwrap();
    want.extend(pairs(&alice.id, &[ALICE_PERSONAL]));
    assert_eq!(server.secret_reads(), want);
    assert_eq!(server.count_secret_reads(), want.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn has_id_restricts_the_listing_and_refuses_what_is_not_a_uuid() {
    let server = devserver(Options::default()).await;
    let c = client(&server, &fixture("bob"));
    let raw = Raw::new(&server, &c).await;
    let unknown = "3c2b5e1a-0000-4000-8000-0000000000ff";
    // Repeated, duplicated, upper case, not readable by bob, unknown.
    let filter = format!(
        "filter[has-id][]={pin}&filter%5Bhas-id%5D%5B%5D={totp}&filter[has-id][]={pin}&filter[has-id][]={ALICE_PERSONAL}&filter[has-id][]={unknown}",
        pin = ids::V5_PIN,
        totp = ids::V4_TOTP.to_uppercase(),
    );
    for with_secret in [false, true] {
        let contain = if with_secret {
            "contain[secret]=1&"
        } else {
            ""
        };
        let (status, body) = raw.get(&format!("/resources.json?{contain}{filter}")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body_ids(&body),
            [ids::V4_TOTP, ids::V5_PIN],
            "listing order"
        );
        assert_eq!(body["header"]["pagination"]["count"], 2);
        for item in body["body"].as_array().unwrap() {
            assert_eq!(item.get("secrets").is_some(), with_secret);
        }
    }
    let (_, body) = raw
        .get(&format!("/resources.json?filter[has-id]={}", ids::V5_NOTE))
        .await;
    assert_eq!(body_ids(&body), [ids::V5_NOTE], "a plain value is one id");

    // The real server validates every entry before it reads anything.
    let reads = server.count_secret_reads();
    assert_eq!(reads, 2, "the two secrets of the listing above");
    for bad in ["not-a-uuid", "3c2b5e1a000040008000000000000001"] {
        let (status, body) = raw
            .get(&format!(
                "/resources.json?contain[secret]=1&filter[has-id][]={}&filter[has-id][]={bad}",
                ids::V5_PIN
            ))
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["header"]["status"], "error");
        assert_eq!(body["header"]["code"], 400);
        assert_eq!(
            body["header"]["message"],
            format!("Invalid filter. \"{bad}\" is not a valid resource id for filter has-id.")
        );
        assert_eq!(body["body"], "");
    }
    assert_eq!(server.count_secret_reads(), reads);
    let err = api::resources(c.session(), true, Some(&["nope".to_string()]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Http { status: 400, message, .. }
            if message == "Invalid filter. \"nope\" is not a valid resource id for filter has-id."),
        "{err}"
    );

    // A filter /resources.json does not whitelist is dropped: the full list.
    let (_, full) = raw.get("/resources.json").await;
    let (status, body) = raw
        .get("/resources.json?filter[modified-after]=1700000000&filter[bogus][]=x")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body_ids(&body), body_ids(&full));
    assert_eq!(body_ids(&full).len(), 14);
}

#[tokio::test(flavor = "multi_thread")]
async fn has_parent_lists_a_folders_direct_members_anded_with_has_id() {
    let server = devserver(Options::default()).await;
    let c = client(&server, &fixture("bob"));
    let raw = Raw::new(&server, &c).await;
    let (status, body) = raw
        .get(&format!(
            "/resources.json?filter[has-parent][]={}",
            ids::FOLDER_MYAPP
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body_ids(&body), [ids::MYAPP_DB, ids::MYAPP_API]);
    // Direct members only: the parent folder has its own, not myapp's.
    let (_, body) = raw
        .get(&format!(
            "/resources.json?filter%5Bhas-parent%5D%5B%5D={}",
            ids::FOLDER_PRODUCTION
        ))
        .await;
    assert!(!body_ids(&body).contains(&ids::MYAPP_DB.to_string()));
    assert!(!body_ids(&body).is_empty());
    // ANDed with has-id; the root is `false`.
    let (_, body) = raw
        .get(&format!(
            "/resources.json?filter[has-parent][]={}&filter[has-id][]={}&filter[has-id][]={}",
            ids::FOLDER_MYAPP,
            ids::MYAPP_API,
            ids::V5_PIN
        ))
        .await;
    assert_eq!(body_ids(&body), [ids::MYAPP_API]);
    let (_, root) = raw.get("/resources.json?filter[has-parent][]=false").await;
    assert!(!body_ids(&root).contains(&ids::MYAPP_API.to_string()));
    assert!(!body_ids(&root).is_empty());
    let (status, _) = raw.get("/resources.json?filter[has-parent][]=nope").await;
    assert_eq!(status, 400);
}

fn extra_resource(id: &str, readers: Vec<String>) -> SeedResource {
    SeedResource {
        id: id.into(),
        slug: "v5-default".into(),
        name: "extra".into(),
        username: Some("ops".into()),
        uris: Vec::new(),
        description: None,
        folder_id: None,
        secret: r#"{"object_type":"PASSBOLT_SECRET_DATA","password":"extra-1","description":null}"#
            .into(),
        custom_fields: Vec::new(),
        readers,
        mode: MetadataMode::Shared,
    }
}

fn v5_password(p: &str) -> String {
    format!(r#"{{"object_type":"PASSBOLT_SECRET_DATA","password":"{p}","description":null}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn modified_moves_on_every_edit_and_never_on_sharing() {
    let server = devserver(Options::default()).await;
    let (bob, alice) = (fixture("bob"), fixture("alice"));
    let (b, a) = (client(&server, &bob), client(&server, &alice));
    let extra = "3c2b5e1a-0000-4000-8003-000000000001";
    let t0 = server.now() - 86_400;
    let at = |dt: i64| {
        server.set_clock(Some(t0 + dt));
        stamp(t0 + dt)
    };

    let created = at(0);
    assert!(
        created.len() == 25 && created.ends_with("+00:00") && created.as_bytes()[10] == b'T',
        "{created}"
    );
    server
        .add_resource(extra_resource(extra, vec![bob.id.clone()]))
        .unwrap();
    assert_eq!(server.modified(extra), Some(created.clone()));
    let (rows, servertime) = api::resources(b.session(), false, None).await.unwrap();
    let row = rows.iter().find(|r| r.id == extra).unwrap();
    assert_eq!(row.modified.as_deref(), Some(created.as_str()));
    assert_eq!(servertime, Some(t0));

    let edited = at(5);
    server.set_secret(extra, &v5_password("extra-2")).unwrap();
    assert_eq!(server.modified(extra), Some(edited.clone()));
    let f = b.fetch_secrets(&[extra.to_string()]).await.unwrap();
    assert_eq!(f[extra].modified.as_deref(), Some(edited.as_str()));
    assert_eq!(f[extra].servertime, Some(t0 + 5));
    assert_eq!(
        f[extra]
            .fields
            .as_ref()
            .unwrap()
            .password
            .as_ref()
            .unwrap()
            .expose(),
        "extra-2"
    );

    let renamed = at(10);
    server.rename(extra, "renamed").unwrap();
    server.rename(ids::V4_TOTP, "VPN").unwrap();
    let listing = b.list(false).await.unwrap();
    assert_eq!(listing.get(extra).unwrap().name, "renamed");
    assert_eq!(listing.get(ids::V4_TOTP).unwrap().name, "VPN");
    assert_eq!(server.modified(extra), Some(renamed.clone()));
    assert_eq!(server.modified(ids::V4_TOTP), Some(renamed.clone()));

    let replaced = at(15);
    let mut seed = extra_resource(extra, vec![bob.id.clone()]);
    seed.username = Some("dba".into());
    server.add_resource(seed).unwrap();
    assert_eq!(server.modified(extra), Some(replaced.clone()));

    let several = at(17);
    server
        .set_secrets(&[
            (
                ids::V5_PIN,
                r#"{"object_type":"PASSBOLT_SECRET_DATA","pin_code":"1234","description":null}"#,
            ),
            (ids::V4_PASSWORD_STRING, "changed"),
        ])
        .unwrap();
    assert_eq!(server.modified(ids::V5_PIN), Some(several.clone()));
    assert_eq!(server.modified(ids::V4_PASSWORD_STRING), Some(several));
    assert_eq!(server.modified(ids::V5_NOTE), server.modified(ids::V5_TOTP));

    // Sharing and revoking leave modified alone; the new reader decrypts.
    at(20);
    assert!(a.list(false).await.unwrap().get(extra).is_none());
    server.share(extra, &alice.id).unwrap();
    server.share(extra, &alice.id).unwrap();
    assert_eq!(server.modified(extra), Some(replaced.clone()));
    let listing = a.list(false).await.unwrap();
    assert_eq!(
        listing.get(extra).unwrap().modified.as_deref(),
        Some(replaced.as_str())
    );
    let f = a.fetch_secrets(&[extra.to_string()]).await.unwrap();
    assert_eq!(
        f[extra]
            .fields
            .as_ref()
            .unwrap()
            .password
            .as_ref()
            .unwrap()
            .expose(),
        "extra-1"
    );
    at(25);
    server.revoke(extra, &alice.id);
    assert_eq!(server.modified(extra), Some(replaced));
    assert!(a.list(false).await.unwrap().get(extra).is_none());

    assert!(matches!(
        server.share(BOB_PERSONAL, &alice.id),
        Err(DevServerError::PersonalItem(id)) if id == BOB_PERSONAL
    ));
    assert!(matches!(
        server.share(ids::V5_PIN, "3c2b5e1a-0000-4000-8000-0000000000ff"),
        Err(DevServerError::NoAccount(_))
    ));
    assert!(matches!(
        server.set_secrets(&[
            (ids::V5_PIN, "x"),
            ("3c2b5e1a-0000-4000-8000-0000000000ff", "y")
        ]),
        Err(DevServerError::NoResource(_))
    ));
    assert_eq!(
        server.modified(ids::V5_PIN),
        Some(stamp(t0 + 17)),
        "a refused batch changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_clock_puts_two_edits_in_one_second() {
    let server = devserver(Options::default()).await;
    // Far from the real clock: the login window and tokens follow it too.
    let t = server.now() - 3 * 86_400;
    server.set_clock(Some(t));
    let c = client(&server, &fixture("bob"));
    let id = ids::V4_PASSWORD_STRING.to_string();
    let ids = std::slice::from_ref(&id);

    server.set_secret(&id, "first").unwrap();
    let first = c.fetch_secrets(ids).await.unwrap().remove(&id).unwrap();
    assert_eq!(first.modified, Some(stamp(t)));
    assert_eq!(first.servertime, Some(t));
    assert_eq!(first.fields.unwrap().password.unwrap().expose(), "first");

    server.set_secret(&id, "second").unwrap();
    let listing = c.list(false).await.unwrap();
    assert_eq!(
        listing.get(&id).unwrap().modified,
        first.modified,
        "same second"
    );
    assert_eq!(listing.servertime, Some(t));
    let second = c.fetch_secrets(ids).await.unwrap().remove(&id).unwrap();
    assert_eq!(second.modified, first.modified);
    assert_eq!(second.fields.unwrap().password.unwrap().expose(), "second");
    assert_eq!(server.count_logins(), 1);

    // Past the access token's exp by the server's clock: the token is
    // refused and the client renews it.
    server.set_clock(Some(t + 3600));
    let listing = c.list(false).await.unwrap();
    assert_eq!(listing.servertime, Some(t + 3600));
    assert_eq!(server.count_logins() + server.count_refreshes(), 2);

    server.set_clock(None);
    let listing = c.list(false).await.unwrap();
    let real = chrono::Utc::now().timestamp();
    assert!((listing.servertime.unwrap() - real).abs() <= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_the_metadata_key_re_encrypts_shared_items_and_keeps_the_old_key() {
    let server = devserver(Options::default()).await;
    let bob = fixture("bob");
    let c = client(&server, &bob);
    let before = c.list(true).await.unwrap();
    assert!(before.failures.is_empty());
    let names = |l: &passbolt_client::Listing| -> BTreeMap<String, (String, Option<String>)> {
        l.resources
            .iter()
            .map(|r| (r.id.clone(), (r.name.clone(), r.folder.clone())))
            .collect()
    };
    let keys = api::metadata_keys(c.session()).await.unwrap();
    assert_eq!(keys.len(), 1);
    let old = keys[0].id.clone();
    let unshared = |id: &str| server.modified(id).unwrap();
    let v4_modified = unshared(ids::V4_TOTP);
    let personal_modified = unshared(BOB_PERSONAL);

    let t = server.now() + 10;
    server.set_clock(Some(t));
    let new = server.rotate_metadata_key(true).unwrap();
    let keys = api::metadata_keys(c.session()).await.unwrap();
    let listed: Vec<(&str, Option<&str>, usize)> = keys
        .iter()
        .map(|k| {
            (
                k.id.as_str(),
                k.expired.as_deref(),
                k.metadata_private_keys.len(),
            )
        })
        .collect();
    let expired = stamp(t);
    assert_eq!(
        listed,
        [
            (old.as_str(), Some(expired.as_str()), 1),
            (new.as_str(), None, 1)
        ]
    );
    let (rows, _) = api::resources(c.session(), false, None).await.unwrap();
    for r in &rows {
        let shared = SHARED_V5.contains(&r.id.as_str());
        if shared {
            assert_eq!(r.metadata_key_id.as_deref(), Some(new.as_str()), "{}", r.id);
            assert_eq!(r.modified.as_deref(), Some(expired.as_str()), "{}", r.id);
        } else {
            assert_ne!(r.metadata_key_id.as_deref(), Some(new.as_str()), "{}", r.id);
        }
    }
    assert_eq!(unshared(ids::V4_TOTP), v4_modified);
    assert_eq!(unshared(BOB_PERSONAL), personal_modified);
    let folders = api::folders(c.session()).await.unwrap();
    let myapp = folders.iter().find(|f| f.id == ids::FOLDER_MYAPP).unwrap();
    assert_eq!(myapp.metadata_key_id.as_deref(), Some(new.as_str()));
    assert_eq!(myapp.modified.as_deref(), Some(expired.as_str()));

    // The same client (which held the old key) and a new one read it all.
    for reader in [&c, &client(&server, &bob)] {
        let after = reader.list(true).await.unwrap();
        assert!(after.failures.is_empty(), "{:?}", after.failures);
        assert_eq!(names(&after), names(&before));
        let all: Vec<String> = after.resources.iter().map(|r| r.id.clone()).collect();
        let fetched = reader.fetch_secrets(&all).await.unwrap();
        assert!(fetched.values().all(|f| f.fields.is_ok()));
    }

    // A rotation that leaves modified as it was.
    server.set_clock(Some(t + 10));
    let third = server.rotate_metadata_key(false).unwrap();
    let keys = api::metadata_keys(c.session()).await.unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[1].expired.as_deref(), Some(stamp(t + 10).as_str()));
    assert_eq!(keys[2].id, third);
    assert!(keys[2].expired.is_none());
    let (rows, _) = api::resources(c.session(), false, None).await.unwrap();
    for id in SHARED_V5 {
        let r = rows.iter().find(|r| r.id == *id).unwrap();
        assert_eq!(r.metadata_key_id.as_deref(), Some(third.as_str()));
        assert_eq!(r.modified.as_deref(), Some(expired.as_str()));
    }
    let after = c.list(true).await.unwrap();
    assert!(after.failures.is_empty(), "{:?}", after.failures);
    assert_eq!(names(&after), names(&before));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_without_the_metadata_key_reads_shared_items_once_it_is_shared() {
    let server = devserver(Options::default()).await;
    let (alice, bob) = (fixture("alice"), fixture("bob"));
    server.unshare_metadata_key(&alice.id);
    let a = client(&server, &alice);
    let raw = Raw::new(&server, &a).await;
    let keys_path = "/metadata/keys.json?contain[metadata_private_keys]=1";
    let missing_path = "/users/me.json?contain[missing_metadata_key_ids]=1";
    let (_, keys) = raw.get(keys_path).await;
    let first = keys["body"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        keys["body"][0]["metadata_private_keys"],
        serde_json::json!([])
    );
    let (_, me) = raw.get(missing_path).await;
    assert_eq!(
        me["body"]["missing_metadata_key_ids"],
        serde_json::json!([first])
    );

    let listing = a.list(true).await.unwrap();
    for id in SHARED_V5 {
        assert!(listing.get(id).is_none(), "{id}");
        assert!(listing.failure(id).is_some(), "{id}");
    }
    for id in V4.iter().chain([&ALICE_PERSONAL]) {
        assert!(listing.get(id).is_some(), "{id}");
    }

    // A rotation while the key is kept from her shares the new one with
    // the others only.
    let second = server.rotate_metadata_key(true).unwrap();
    let (_, me) = raw.get(missing_path).await;
    assert_eq!(
        me["body"]["missing_metadata_key_ids"],
        serde_json::json!([first, second])
    );
    let b = client(&server, &bob);
    let bob_keys = api::metadata_keys(b.session()).await.unwrap();
    assert!(bob_keys.iter().all(|k| k.metadata_private_keys.len() == 1));

    server.share_metadata_key(&alice.id).unwrap();
    let (_, me) = raw.get(missing_path).await;
    assert_eq!(
        me["body"]["missing_metadata_key_ids"],
        serde_json::json!([])
    );
    let (_, keys) = raw.get(keys_path).await;
    for k in keys["body"].as_array().unwrap() {
        let rows = k["metadata_private_keys"].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["user_id"], alice.id.as_str());
    }
    let listing = a.list(true).await.unwrap();
    assert!(listing.failures.is_empty(), "{:?}", listing.failures);
    assert_eq!(listing.resources.len(), 14);
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_resources_fill_folders_of_500_and_seed_on_every_core() {
    let bob = fixture("bob");
    let readers = vec![bob.id.clone()];
    let n = 1200;
    let (folders, resources) = seed::generated(n, &readers);
    let folder_names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(folder_names, ["Generated", "gen-000", "gen-001", "gen-002"]);
    assert!(
        folders[1..]
            .iter()
            .all(|f| f.parent.as_deref() == Some(ids::FOLDER_GENERATED))
    );
    assert_eq!(resources.len(), n);
    assert_eq!(resources[0].name, "gen-00001");
    assert_eq!(resources[0].id, ids::generated(1));
    assert_eq!(resources[n - 1].name, "gen-01200");
    assert_eq!(
        resources.iter().filter(|r| r.slug == "v5-default").count(),
        n / 2
    );
    assert!(
        resources
            .chunks(2)
            .all(|p| p[0].mode == MetadataMode::Cleartext
                && p[0].slug == "password-and-description"
                && p[1].mode == MetadataMode::Shared)
    );
    let password = |r: &SeedResource| -> String {
        let v: Value = serde_json::from_str(&r.secret).unwrap();
        v["password"].as_str().unwrap().to_string()
    };
    let distinct: HashSet<String> = resources.iter().map(password).collect();
    assert_eq!(distinct.len(), n);
    let (_, again) = seed::generated(n, &readers);
    let same_ids = again.iter().zip(&resources).all(|(a, b)| a.id == b.id);
    assert!(same_ids, "ids are deterministic");
    let sample: HashSet<String> = seed::sample_resources(&readers)
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(resources.iter().all(|r| !sample.contains(&r.id)));

    let t = Instant::now();
    let server = DevServer::start(
        Options::default(),
        vec![bob.account()],
        folders,
        resources.clone(),
    )
    .await
    .unwrap();
    eprintln!(
        "seeded {n} generated resources for an RSA-3072 reader in {:?}",
        t.elapsed()
    );

    let c = client(&server, &bob);
    let listing = c.list(true).await.unwrap();
    assert!(listing.failures.is_empty(), "{:?}", listing.failures);
    let mut per_folder: BTreeMap<String, usize> = BTreeMap::new();
    for r in &listing.resources {
        *per_folder.entry(r.folder.clone().unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_folder.into_iter().collect::<Vec<_>>(),
        [
            ("Generated/gen-000".to_string(), GENERATED_PER_FOLDER),
            ("Generated/gen-001".to_string(), GENERATED_PER_FOLDER),
            ("Generated/gen-002".to_string(), 200),
        ]
    );

    // 1% changed in one go: exactly those move.
    let (before, _) = api::resources(c.session(), false, None).await.unwrap();
    server.set_clock(Some(server.now() + 5));
    let changed: Vec<(String, String)> = resources
        .iter()
        .step_by(100)
        .map(|r| {
            let secret = if r.mode == MetadataMode::Cleartext {
                format!(r#"{{"password":"new-{}","description":null}}"#, r.name)
            } else {
                v5_password(&format!("new-{}", r.name))
            };
            (r.id.clone(), secret)
        })
        .collect();
    assert_eq!(changed.len(), n / 100);
    server.set_secrets(&changed).unwrap();
    let (after, _) = api::resources(c.session(), false, None).await.unwrap();
    let moved: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.modified != a.modified)
        .map(|(_, a)| a.id.as_str())
        .collect();
    let want: Vec<&str> = changed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(moved, want);
    let changed_ids: Vec<String> = changed.iter().map(|(id, _)| id.clone()).collect();
    let fetched = c.fetch_secrets(&changed_ids).await.unwrap();
    for r in resources.iter().step_by(100) {
        let f = fetched[&r.id].fields.as_ref().unwrap();
        assert_eq!(
            f.password.as_ref().unwrap().expose(),
            format!("new-{}", r.name)
        );
    }
    assert_eq!(server.count_secret_reads(), n / 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_serve_with_generated_resources_has_a_target_for_one_folder() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_passbolt-sync"))
        .args(["demo", "--serve", "--resources", "600", "--dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let serving = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push_str(&line);
            out.push('\n');
            if line == "Ctrl-C stops it." {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(serving, Ok(true), "{out}");
    assert!(out.contains("seeded 600 generated resources"), "{out}");
    assert!(
        out.contains("... and 600 generated resources in Generated/"),
        "{out}"
    );
    assert!(
        !out.contains("gen-00001"),
        "generated rows are not listed: {out}"
    );
    assert!(out.contains("GitLab"), "the sample set is: {out}");

    let config = std::fs::read_to_string(dir.path().join("sync-rsa.yaml")).unwrap();
    assert!(
        config.contains("  #   folder: Generated/gen-000\n"),
        "{config}"
    );
    let enabled = config
        .replace("  # - path:", "  - path:")
        .replace("  #   format:", "    format:")
        .replace("  #   folder:", "    folder:");
    let path = dir.path().join("generated.yaml");
    std::fs::write(&path, enabled).unwrap();
    let once = common::cli(&["once", "-c", path.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = common::text(&once);
    assert!(once.status.success(), "{stdout}{stderr}");
    let env = std::fs::read_to_string(dir.path().join("out-rsa/generated.env")).unwrap();
    let vars: Vec<&str> = env.lines().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(vars.len(), GENERATED_PER_FOLDER);
    assert_eq!(vars[0], "GEN_00001");
    assert_eq!(vars[GENERATED_PER_FOLDER - 1], "GEN_00500");

    let pid = nix::unistd::Pid::from_raw(demo.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), demo.wait())
        .await
        .expect("the demo stops on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
