//! Offline `check`: what can be verified on this host without the server.

use std::path::Path;

use crate::common::{cli, fixture, text};

/// A config for alice with `targets` (YAML, indented as a top-level key),
/// its key and passphrase files as given.
fn config(dir: &Path, key: &Path, pass: &Path, targets: &str) -> std::path::PathBuf {
    let path = dir.join("sync.yaml");
    std::fs::write(
        &path,
        format!(
            "server:\n  url: https://passbolt.example.com\nauth:\n  user_id: {}\n  private_key_file: {}\n  passphrase_file: {}\n{targets}",
            fixture("alice").id,
            key.display(),
            pass.display()
        ),
    )
    .unwrap();
    path
}

async fn check(path: &Path) -> (Option<i32>, String, String) {
    let out = cli(&["check", "-c", path.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

#[tokio::test]
async fn a_good_config_is_valid_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = fixture("alice");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "x\n").unwrap();
    let target = tmp.path().join("a.env");
    let path = config(
        tmp.path(),
        &alice.private_path,
        &pass,
        &format!(
            "targets:\n  - path: {}\n    format: dotenv\n    folder: Production\n",
            target.display()
        ),
    );
    let (code, stdout, stderr) = check(&path).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "{}: valid, 1 target(s)\n  {}  dotenv  schedule every 5m\n",
            path.display(),
            target.display()
        )
    );
}

#[tokio::test]
async fn missing_key_passphrase_and_target_directory_are_each_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("missing.asc");
    let pass = tmp.path().join("missing.pass");
    let target = tmp.path().join("nodir/a.env");
    let path = config(
        tmp.path(),
        &key,
        &pass,
        &format!(
            "targets:\n  - path: {}\n    format: dotenv\n    folder: Production\n",
            target.display()
        ),
    );
    let (code, stdout, stderr) = check(&path).await;
    assert_eq!(code, Some(2));
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "passbolt-sync: cannot read the private key file {}: No such file or directory (os error 2)\n\
             passbolt-sync: cannot read the passphrase file {}: No such file or directory (os error 2)\n\
             passbolt-sync: target {}: the directory {} does not exist; create it, or set create_dirs: true\n",
            key.display(),
            pass.display(),
            target.display(),
            tmp.path().join("nodir").display(),
        )
        .replace("\npassbolt-sync: ", "\n")
    );
    // create_dirs: the directory will be made.
    let path = config(
        tmp.path(),
        &fixture("alice").private_path,
        &fixture("alice").private_path,
        &format!(
            "targets:\n  - path: {}\n    format: dotenv\n    folder: Production\n    create_dirs: true\n",
            target.display()
        ),
    );
    let (code, _, stderr) = check(&path).await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn a_key_file_that_is_not_a_private_key_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let public = crate::common::fixtures().join("keys/alice_public.asc");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "x\n").unwrap();
    let path = config(tmp.path(), &public, &pass, "");
    let (code, _, stderr) = check(&path).await;
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        format!(
            "passbolt-sync: auth.private_key_file {}: the OpenPGP key has no secret key material (is this the public key?)\n",
            public.display()
        )
    );
}

#[tokio::test]
async fn a_missing_template_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = fixture("alice");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "x\n").unwrap();
    let template = tmp.path().join("app.conf.tmpl");
    let path = config(
        tmp.path(),
        &alice.private_path,
        &pass,
        &format!(
            "targets:\n  - path: {}\n    format: template\n    template: {}\n",
            tmp.path().join("app.conf").display(),
            template.display()
        ),
    );
    let (code, _, stderr) = check(&path).await;
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        format!(
            "passbolt-sync: target {}: cannot read template {}: No such file or directory (os error 2)\n",
            tmp.path().join("app.conf").display(),
            template.display()
        )
    );
}
