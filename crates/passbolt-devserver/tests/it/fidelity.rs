//! The dev server answers like the real passbolt 5.12 server: every
//! recorded failure whose outcome does not depend on the real server's
//! state is replayed against it, and status, message and envelope must
//! match the capture.

use crate::common;

use common::{capture, client, devserver, fixture, fixtures};
use passbolt_devserver::Options;
use serde_json::Value;

/// Captured failures that need the real server's state (a spent token, a
/// logout that happened there) and cannot be replayed as recorded.
const STATEFUL: &[&str] = &["22_", "28b_"];

#[tokio::test(flavor = "multi_thread")]
async fn recorded_failures_replay_with_the_same_status_and_message() {
    let server = devserver(Options::default()).await;
    let bob = client(&server, &fixture("bob"));
    let bob_token = bob.session().access_token().await.unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut files: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".json") && f.as_bytes()[0].is_ascii_digit())
        .collect();
    files.sort();
    let mut replayed = Vec::new();
    for file in files {
        let c = capture(&file);
        let status = c["response"]["status"].as_u64().unwrap();
        if !(400..500).contains(&status) || STATEFUL.iter().any(|p| file.starts_with(p)) {
            continue;
        }
        let req = &c["request"];
        let method =
            reqwest::Method::from_bytes(req["method"].as_str().unwrap().as_bytes()).unwrap();
        let mut r = http.request(
            method,
            format!("{}{}", server.url(), req["path"].as_str().unwrap()),
        );
        for (k, v) in req["headers"].as_object().unwrap() {
            let mut v = v.as_str().unwrap().to_string();
            // A bearer token of the real server means nothing here: where
            // the capture's failure is not about the token, use ours.
            if k == "Authorization" && status != 401 {
                v = format!("Bearer {}", bob_token.as_str());
            }
            r = r.header(k.as_str(), v);
        }
        if !req["body"].is_null() {
            r = r.body(req["body"].to_string());
        }
        let resp = r.send().await.unwrap();
        let got_status = resp.status().as_u16() as u64;
        let body: Value = resp.json().await.unwrap();
        let want = &c["response"]["body"];
        assert_eq!(got_status, status, "{file}");
        assert_eq!(
            body["header"]["message"], want["header"]["message"],
            "{file}"
        );
        assert_eq!(body["header"]["status"], "error", "{file}");
        assert_eq!(body["header"]["code"], want["header"]["code"], "{file}");
        assert_eq!(body["body"], want["body"], "{file}");
        let keys = |v: &Value| {
            let mut k: Vec<String> = v["header"].as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&body), keys(want), "{file}: envelope header keys");
        replayed.push(file);
    }
    assert_eq!(replayed.len(), 27, "replayed {replayed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn successful_answers_have_the_captured_shape() {
    let server = devserver(Options::default()).await;
    let alice = client(&server, &fixture("alice"));
    let token = alice.session().access_token().await.unwrap();
    let http = reqwest::Client::new();
    for (file, path) in [
        ("01_auth_verify_GET.json", "/auth/verify.json"),
        ("05_users_me_GET_alice.json", "/users/me.json"),
        (
            "07b_resources_index_GET_contain_secret_alice.json",
            "/resources.json?contain[secret]=1",
        ),
        ("09_resource_types_GET.json", "/resource-types.json"),
        ("10_folders_GET_admin.json", "/folders.json"),
        (
            "13_metadata_keys_GET_contain_private_admin.json",
            "/metadata/keys.json?contain[metadata_private_keys]=1",
        ),
        (
            "14_metadata_session_keys_GET.json",
            "/metadata/session-keys.json",
        ),
    ] {
        let want = &capture(file)["response"]["body"];
        let got: Value = http
            .get(format!("{}{path}", server.url()))
            .bearer_auth(token.as_str())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["header"]["status"], "success", "{file}");
        assert_eq!(
            got["header"]["message"], want["header"]["message"],
            "{file}"
        );
        assert_eq!(
            got["header"].get("pagination").is_some(),
            want["header"].get("pagination").is_some(),
            "{file}"
        );
        // Every field the client reads from the real answer is there.
        let first = |v: &Value| match &v["body"] {
            Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        let (g, w) = (first(&got), first(want));
        for key in [
            "id",
            "fingerprint",
            "keydata",
            "slug",
            "resource_type_id",
            "folder_parent_id",
            "secrets",
            "metadata_private_keys",
            "gpgkey",
        ] {
            if w.get(key).is_some() {
                assert!(g.get(key).is_some(), "{file}: {key} missing");
            }
        }
    }
}
