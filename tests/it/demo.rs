//! `passbolt-sync demo`: what it prints teaches, and what it prints
//! still exists afterwards.

use passbolt_sync::cli::demo::next_steps;

use crate::common::{cli, text};

#[tokio::test]
async fn the_demo_keeps_its_folder_prints_runnable_commands_and_ends_with_the_next_step() {
    let out = cli(&["demo"], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_passbolt-sync")).unwrap();
    let exe = exe.display().to_string();

    // The last line names the scratch folder, which is still there.
    let last = stdout.lines().last().unwrap();
    let dir = last
        .strip_prefix("the scratch folder ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{last}"));
    assert_eq!(
        last,
        format!(
            "the scratch folder {dir} stays (demo keys, configs, sample output): rm -r {dir} removes it; --dir DIR picks another"
        )
    );
    let dir = std::path::PathBuf::from(dir);
    assert!(dir.join("sync-rsa.yaml").is_file());
    assert!(dir.join("out-rsa/app.env").is_file());
    assert!(dir.join("init/sync.yaml").is_file());
    assert!(dir.join("init/myapp.env").is_file());

    // Every printed command runs from here: the binary's own path.
    assert!(!stdout.contains("$ passbolt-sync "), "{stdout}");
    let rsa = dir.join("sync-rsa.yaml");
    let once = format!("\n$ {exe} once -c {}\n", rsa.display());
    assert!(stdout.contains(&once), "{stdout}");
    // The hook is shown before the pass whose log says it succeeded.
    let hook = format!(
        "\nthe target {} has a hook, run each time the file changes:\n  on_change: /bin/sh -c \"echo app.env changed\"\n",
        dir.join("out-rsa/app.env").display()
    );
    let at_hook = stdout.find(&hook).unwrap_or_else(|| panic!("{stdout}"));
    assert!(at_hook < stdout.find(&once).unwrap());
    // Formats as the config spells them.
    assert!(
        stdout.contains(&format!(
            "  {}  dotenv  schedule every 30s\n",
            dir.join("out-rsa/app.env").display()
        )),
        "{stdout}"
    );
    // The account kit flow, then the way to a real server.
    assert!(
        stdout.contains(&format!(
            "$ {exe} init --account-kit {} --passphrase-file {} --dir {} --folder Production/myapp --target {} --force\n",
            dir.join("account-kit.passbolt").display(),
            dir.join("rsa.passphrase").display(),
            dir.join("init").display(),
            dir.join("init/myapp.env").display(),
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("serves the server key the kit pins"),
        "{stdout}"
    );
    // The account under an MFA policy, in its short summary.
    assert!(
        stdout.contains("logged in with a TOTP code (1 accepted, 0 rejected); 6 target(s) written"),
        "{stdout}"
    );
    assert!(dir.join("mfa.totp").is_file() && dir.join("out-mfa/app.env").is_file());
    assert!(
        stdout.contains(&format!("{}\n\nthe scratch folder", next_steps(&exe))),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
