//! `passbolt-sync create` with the real binary against the dev server: v5
//! when the metadata settings ask for it, v4 on a server before v5; shared
//! with a user and a group, each decrypting with their own key; listed and
//! read by `resources` and `get`; `--if-missing` creates one.

use crate::common;

use common::{cli, client, devserver, fixture, write_config};
use passbolt_devserver::{Faults, Options};

#[tokio::test(flavor = "multi_thread")]
async fn create_if_missing_twice_makes_one_v5_resource_every_sharer_reads() {
    let server = devserver(Options::default()).await;
    let alice = fixture("alice");
    server.add_group("ops", &[alice.id.as_str()]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &fixture("admin"), "");
    let c = config.to_str().unwrap();
    let args = [
        "create",
        "-c",
        c,
        "--name",
        "db-provisioned",
        "--folder",
        "Production",
        "--username",
        "app",
        "--uri",
        "https://db.example",
        "--generate",
        "--share-user",
        "bob@passbolt.local",
        "--share-group",
        "ops",
        "--if-missing",
        "--print",
    ];
    let out = cli(&args, &[]).await;
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    let mut lines = stdout.splitn(2, '\n');
    let id = lines.next().unwrap().to_string();
    let value = lines.next().unwrap().to_string();
    assert!(value.chars().count() >= 18, "{stdout}");
    let (slug, metadata) = server.stored_type_and_metadata(&id).unwrap();
    assert_eq!(slug, "v5-default");
    assert_eq!(metadata.unwrap().2, "shared_key");

    // Again: the same id, nothing created, nothing printed but the id.
    let out = cli(&args, &[]).await;
    let (again, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(again, format!("{id}\n"));
    assert_eq!(
        server.resource_ids_named("db-provisioned"),
        vec![id.clone()]
    );
    // Without --if-missing: an error naming the existing id.
    let out = cli(&args[..args.len() - 2], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out).1.contains(&id));

    // Every user it was shared with decrypts it with their own key.
    for who in ["admin", "bob", "alice"] {
        let got = client(&server, &fixture(who))
            .fetch_secrets(std::slice::from_ref(&id))
            .await
            .unwrap()
            .remove(&id)
            .unwrap()
            .fields
            .unwrap();
        assert_eq!(got.password.unwrap().expose(), value, "{who}");
    }
    // `resources` lists it (metadata decrypted) and `get` reads it.
    let bdir = tempfile::tempdir().unwrap();
    let bob = write_config(bdir.path(), &server, &fixture("bob"), "");
    let out = cli(&["resources", "-c", bob.to_str().unwrap(), "--json"], &[]).await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["name"], "db-provisioned");
    assert_eq!(row["username"], "app");
    assert_eq!(row["folder"], "Production");
    assert_eq!(row["type"], "v5-default");
    let out = cli(
        &[
            "get",
            "-c",
            bob.to_str().unwrap(),
            "Production/db-provisioned",
        ],
        &[],
    )
    .await;
    assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_makes_a_v4_resource_on_a_server_before_v5() {
    let server = devserver(Options::default()).await;
    server.set_faults(Faults {
        pre_v5: true,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &server, &fixture("bob"), "");
    let value = dir.path().join("v");
    std::fs::write(&value, "v4-secret\n").unwrap();
    let out = cli(
        &[
            "create",
            "-c",
            config.to_str().unwrap(),
            "--name",
            "legacy",
            "--value-file",
            value.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    let id = stdout.trim();
    let (slug, metadata) = server.stored_type_and_metadata(id).unwrap();
    assert_eq!(slug, "password-and-description");
    assert!(metadata.is_none());
    let out = cli(&["get", "-c", config.to_str().unwrap(), "legacy"], &[]).await;
    assert_eq!(out.stdout, b"v4-secret");
}
