//! `passbolt-sync set` with the real binary against the dev server: the
//! value reaches every user with access, decrypted with their own key;
//! refusals leave everything as it was; the value never reaches a log.

use crate::common;

use common::{cli, devserver, fixture, password_of, write_config};
use passbolt_client::generate;
use passbolt_devserver::{Options, READ, seed::ids};

#[tokio::test(flavor = "multi_thread")]
async fn set_generate_follows_the_policy_reaches_every_user_and_never_logs_the_value() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    // alice (Curve25519) reads GitLab only through a group.
    server.revoke(ids::V5_DEFAULT, &alice.id);
    let ops = server.add_group("ops", &[alice.id.as_str()]);
    server
        .share_with_group(ids::V5_DEFAULT, &ops, READ)
        .unwrap();
    server.set_expired(ids::V5_DEFAULT, Some("2020-01-01T00:00:00+00:00"));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &fixture("admin"), "");
    let c = config.to_str().unwrap();
    let out = cli(
        &["set", "-vv", "-c", c, "GitLab", "--generate", "--print"],
        &[],
    )
    .await;
    let (value, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    // The live server's default policy: 18 characters asked for, raised
    // to reach 128 bits of its alphabet, look-alikes excluded.
    let policy: generate::PasswordPolicy =
        serde_json::from_value(passbolt_devserver_policy()).unwrap();
    let alphabet = generate::alphabet(&policy.password_generator_settings);
    assert_eq!(
        value.chars().count(),
        generate::length_for_min_bits(alphabet.len()).max(18)
    );
    assert!(value.chars().all(|ch| alphabet.contains(&ch)), "{value}");
    assert!(stderr.contains("updated password of"), "{stderr}");
    assert!(stderr.contains("for 3 users"), "{stderr}");
    assert!(
        stderr.contains("TRACE") || stderr.contains("trace"),
        "trace logs on"
    );
    assert!(!stderr.contains(&value), "the value reached the log");
    // One login, one logout: no refresh token is left behind.
    assert_eq!(server.active_refresh_tokens(&fixture("admin").id), 0);
    for who in ["admin", "bob", "alice"] {
        assert_eq!(
            password_of(&server, who, ids::V5_DEFAULT).await,
            value,
            "{who}"
        );
    }
    // A new password clears passbolt's expiry mark.
    assert_eq!(server.expired(ids::V5_DEFAULT), None);
}

fn passbolt_devserver_policy() -> serde_json::Value {
    serde_json::json!({"default_generator":"password","password_generator_settings":{"length":18,"mask_upper":true,"mask_lower":true,
        "mask_digit":true,"mask_parenthesis":true,"mask_emoji":false,"mask_char1":true,"mask_char2":true,"mask_char3":true,
        "mask_char4":true,"mask_char5":true,"exclude_look_alike_chars":true}})
}

#[tokio::test(flavor = "multi_thread")]
async fn set_value_file_by_folder_path_then_get_reads_it_and_errors_say_what_to_do() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = write_config(dir.path(), &server, &fixture("admin"), "");
    let value = dir.path().join("value");
    std::fs::write(&value, "from-a-file $x\n").unwrap();
    let out = cli(
        &[
            "set",
            "-c",
            admin.to_str().unwrap(),
            "Production/myapp/db password",
            "--value-file",
            value.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("updated password of"), "{stdout}");
    assert!(!stdout.contains("from-a-file"), "{stdout}");
    let out = cli(
        &[
            "get",
            "-c",
            admin.to_str().unwrap(),
            "Production/myapp/db password",
        ],
        &[],
    )
    .await;
    assert_eq!(out.stdout, b"from-a-file $x");

    // A read-only account: its error, exit 1, nothing changed.
    let bob = fixture("bob");
    server
        .set_permission(ids::V5_DEFAULT, &bob.id, READ)
        .unwrap();
    let before = server.stored_secret(ids::V5_DEFAULT, &bob.id);
    let bdir = tempfile::tempdir().unwrap();
    let bob_cfg = write_config(bdir.path(), &server, &bob, "");
    let out = cli(
        &[
            "set",
            "-c",
            bob_cfg.to_str().unwrap(),
            ids::V5_DEFAULT,
            "--value-file",
            value.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (_, stderr) = common::text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("may only read it"), "{stderr}");
    assert!(!stderr.contains("from-a-file"), "{stderr}");
    assert_eq!(server.stored_secret(ids::V5_DEFAULT, &bob.id), before);

    // A metadata field, a missing value source, an empty value: exit 2.
    for args in [vec!["--field", "username", "--generate"], vec![]] {
        let mut full = vec!["set", "-c", admin.to_str().unwrap(), "GitLab"];
        full.extend(&args);
        let out = cli(&full, &[]).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {:?}",
            common::text(&out)
        );
    }
    std::fs::write(&value, "\n").unwrap();
    let out = cli(
        &[
            "set",
            "-c",
            admin.to_str().unwrap(),
            "GitLab",
            "--value-file",
            value.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(common::text(&out).1.contains("empty"));
}
