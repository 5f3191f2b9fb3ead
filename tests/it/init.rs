//! `passbolt-sync init` with account kits the dev server issues.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use passbolt_client::account_kit::AccountKit;
use passbolt_sync::config::Config;

use crate::common::{self, account_kit, cli, fixture, text};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[tokio::test]
async fn a_kit_and_a_passphrase_make_a_config_that_checks_and_syncs() {
    let server = common::devserver(Default::default()).await;
    let alice = fixture("alice");
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("account-kit.passbolt");
    std::fs::write(&kit, account_kit(&server, &alice)).unwrap();
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, format!("{}\n", alice.passphrase)).unwrap();
    let dir = tmp.path().join("etc");
    // In a directory that does not exist yet: the first sync makes it.
    let target = tmp.path().join("myapp/myapp.env");
    let out = cli(
        &[
            "init",
            "--account-kit",
            kit.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
            "--folder",
            "Production/myapp",
            "--target",
            target.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} serves the server key the kit pins: {}",
            server.url(),
            server.server_fingerprint()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("logged in to "), "{stdout}");
    assert!(
        stdout.contains(&format!("  ok   {}", target.display())),
        "{stdout}"
    );
    for f in ["private.asc", "passphrase", "sync.yaml"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(
        std::fs::read(dir.join("private.asc")).unwrap(),
        std::fs::read(&alice.private_path).unwrap()
    );
    let config = Config::load(&dir.join("sync.yaml")).unwrap();
    assert_eq!(config.server.url, server.url());
    assert_eq!(config.server.fingerprint, Some(server.server_fingerprint()));
    assert_eq!(config.auth.user_id, alice.id);
    assert_eq!(config.targets.len(), 1);
    let yaml = std::fs::read_to_string(dir.join("sync.yaml")).unwrap();
    assert!(yaml.contains("sync.example.yaml"), "{yaml}");
    assert!(yaml.contains("  # - path: /etc/myapp/password"), "{yaml}");

    let cfg = dir.join("sync.yaml");
    let check = cli(&["check", "-c", cfg.to_str().unwrap()], &[]).await;
    assert!(check.status.success(), "{:?}", text(&check));
    let once = cli(&["once", "-c", cfg.to_str().unwrap()], &[]).await;
    assert!(once.status.success(), "{:?}", text(&once));
    let env = std::fs::read_to_string(&target).unwrap();
    assert_eq!(
        env,
        "API_KEY='myapp-api-key'\nDB_PASSWORD='myapp-db-pass'\n"
    );
}

#[tokio::test]
async fn without_a_passphrase_it_writes_no_passphrase_file_and_says_how_to_test() {
    let server = common::devserver(Default::default()).await;
    let alice = fixture("alice");
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("kit");
    std::fs::write(&kit, account_kit(&server, &alice)).unwrap();
    let dir = tmp.path().join("etc");
    let out = cli(
        &[
            "init",
            "--account-kit",
            kit.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!dir.join("passphrase").exists());
    assert!(
        stdout.contains(&format!(
            "check --online -c {}",
            dir.join("sync.yaml").display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("logged in"), "{stdout}");
    assert_eq!(server.count_logins(), 0);
    let config = Config::load(&dir.join("sync.yaml")).unwrap();
    assert_eq!(config.auth.passphrase_file, None);
    assert!(config.targets.is_empty());
}

#[tokio::test]
async fn a_tampered_kit_is_refused() {
    let server = common::devserver(Default::default()).await;
    let alice = fixture("alice");
    let signed = b64().decode(account_kit(&server, &alice)).unwrap();
    let signed = String::from_utf8(signed).unwrap();
    // Another domain in the signed text: the signature no longer holds.
    let tampered = signed.replace(&server.url(), "http://127.0.0.2:1");
    assert_ne!(tampered, signed);
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("kit");
    std::fs::write(&kit, b64().encode(tampered)).unwrap();
    let dir = tmp.path().join("etc");
    let out = cli(
        &[
            "init",
            "--account-kit",
            kit.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.trim_end(),
        format!(
            "passbolt-sync: account kit {}: the account kit's signature is not valid (expected one by the kit's own user key {}); export a new kit",
            kit.display(),
            alice.public.fingerprint()
        )
    );
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_kit_pinning_another_server_key_is_refused_naming_both() {
    let server = common::devserver(Default::default()).await;
    let alice = fixture("alice");
    let kit_b64 = account_kit(&server, &alice);
    let kit = AccountKit::open(kit_b64.as_bytes()).unwrap().kit;
    let other = common::server_public_key();
    let forged = AccountKit {
        server_public_armored_key: other.armored(),
        ..kit
    }
    .seal(&common::shared_key(&alice))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kit");
    std::fs::write(&path, forged).unwrap();
    let dir = tmp.path().join("etc");
    let out = cli(
        &[
            "init",
            "--account-kit",
            path.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.trim_end(),
        format!(
            "passbolt-sync: {} serves the server key {}, but the account kit pins {}: refusing to trust it (is this the server the kit was exported from?)",
            server.url(),
            server.server_fingerprint(),
            other.fingerprint()
        )
    );
    assert!(!dir.exists());
}

#[tokio::test]
async fn existing_files_are_kept_unless_forced() {
    let server = common::devserver(Default::default()).await;
    let alice = fixture("alice");
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("kit");
    std::fs::write(&kit, account_kit(&server, &alice)).unwrap();
    let dir = tmp.path().join("etc");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("sync.yaml"), "# mine\n").unwrap();
    let args = [
        "init",
        "--account-kit",
        kit.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
    ];
    let out = cli(&args, &[]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.trim_end(),
        format!(
            "passbolt-sync: {} already exist(s); pass --force to overwrite",
            dir.join("sync.yaml").display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("sync.yaml")).unwrap(),
        "# mine\n"
    );
    assert!(!dir.join("private.asc").exists());
    let mut forced = args.to_vec();
    forced.push("--force");
    let out = cli(&forced, &[]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(Config::load(&dir.join("sync.yaml")).is_ok());
}

#[tokio::test]
async fn a_wrong_passphrase_writes_nothing() {
    let server = common::devserver(Default::default()).await;
    let alice = fixture("alice");
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("kit");
    std::fs::write(&kit, account_kit(&server, &alice)).unwrap();
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "not-it\n").unwrap();
    let dir = tmp.path().join("etc");
    let out = cli(
        &[
            "init",
            "--account-kit",
            kit.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.trim_end(),
        format!(
            "passbolt-sync: the account kit's private key: wrong passphrase for the OpenPGP key {}",
            alice.public.fingerprint()
        )
    );
    assert!(!dir.exists());
}

#[tokio::test]
async fn an_account_under_an_mfa_policy_gets_its_totp_seed_copied_and_configured() {
    let server = common::devserver(Default::default()).await;
    let alice = fixture("alice");
    let seed = passbolt_devserver::seed::random_totp_seed();
    server.set_totp(&alice.id, &seed).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kit = tmp.path().join("account-kit.passbolt");
    std::fs::write(&kit, account_kit(&server, &alice)).unwrap();
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, format!("{}\n", alice.passphrase)).unwrap();
    let totp = tmp.path().join("seed");
    std::fs::write(&totp, format!("{}\n", seed.as_str())).unwrap();
    let dir = tmp.path().join("etc");
    let args = |with_seed: bool| {
        let mut a = vec![
            "init".to_string(),
            "--account-kit".into(),
            kit.display().to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "--passphrase-file".into(),
            pass.display().to_string(),
        ];
        if with_seed {
            a.extend(["--totp-secret-file".into(), totp.display().to_string()]);
        }
        a
    };

    // Without the seed: the MFA error names the option, and nothing is written.
    let no_seed = args(false);
    let out = cli(&no_seed.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("auth.totp_secret_file"), "{stderr}");
    assert!(!dir.join("sync.yaml").exists());

    let with_seed = args(true);
    let out = cli(
        &with_seed.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("MFA: the TOTP code was accepted"),
        "{stdout}"
    );
    assert!(!stdout.contains(seed.as_str()) && !stderr.contains(seed.as_str()));
    for f in ["private.asc", "passphrase", "totp", "sync.yaml"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(
        std::fs::read(dir.join("totp")).unwrap(),
        std::fs::read(&totp).unwrap()
    );
    let config = Config::load(&dir.join("sync.yaml")).unwrap();
    assert_eq!(config.auth.totp_secret_file, Some(dir.join("totp")));
    let (accepted, rejected) = server.totp_attempts(&alice.id);
    assert_eq!((accepted, rejected), (2, 0), "init's login and its check");
}
