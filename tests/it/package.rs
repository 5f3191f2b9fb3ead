//! What the Debian package ships: man pages and completions made by the
//! binary from its clap definitions, and the package itself, built by
//! `.ci/package-deb` with cargo-deb and checked by lintian.
//!
//! The package test is `#[ignore]`d by default because it needs cargo-deb
//! and lintian; `.ci/run` installs both and runs it. It packages the binary
//! the tests were built with, stripped as the release profile strips it,
//! so that CI builds nothing twice.

use std::path::Path;
use std::process::Command;

use crate::common;
use crate::common::{run, stdout};

/// The commands a user sees in `--help`: each gets its own man page and a
/// completion entry.
const COMMANDS: &[&str] = &[
    "run",
    "exec",
    "get",
    "env",
    "set",
    "create",
    "once",
    "check",
    "resources",
    "init",
    "demo",
    "status",
    "completions",
    "man",
];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_passbolt-sync")
}

#[tokio::test]
async fn completions_cover_every_command_for_the_three_shells() {
    for (shell, marker) in [
        ("bash", "complete -F _passbolt__sync"),
        ("zsh", "#compdef passbolt-sync"),
        ("fish", "complete -c passbolt-sync"),
    ] {
        let out = common::cli(&["completions", shell], &[]).await;
        let (text, err) = common::text(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(text.contains(marker), "{shell}: {text}");
        for command in COMMANDS {
            assert!(text.contains(command), "{shell} lacks {command}");
        }
    }
}

#[test]
fn the_man_pages_are_one_per_command_with_the_sections_clap_lacks() {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new(bin()).args(["man", "--dir"]).arg(dir.path()));
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = COMMANDS
        .iter()
        .map(|c| format!("passbolt-sync-{c}.1"))
        .chain(["passbolt-sync.1".to_string()])
        .collect();
    expected.sort();
    assert_eq!(pages, expected);

    let main = std::fs::read_to_string(dir.path().join("passbolt-sync.1")).unwrap();
    assert_eq!(main, stdout(Command::new(bin()).arg("man")));
    for section in [
        ".SH SYNOPSIS",
        ".SH SUBCOMMANDS",
        ".SH CONFIGURATION",
        ".SH \"EXIT STATUS\"",
        ".SH SIGNALS",
        ".SH ENVIRONMENT",
        ".SH FILES",
    ] {
        assert!(main.contains(section), "no {section}:\n{main}");
    }
    // The config reference is the shipped example, line for line.
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("sync.example.yaml"))
            .unwrap();
    let line = example
        .lines()
        .find(|l| l.contains("max_response_bytes"))
        .expect("the example documents max_response_bytes");
    assert!(
        main.contains(&line.replace('-', "\\-")),
        "{line:?} is not in the man page"
    );

    // groff finds nothing to warn about, as lintian checks it.
    for page in &pages {
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(dir.path().join(page))
            .env("LC_ALL", "C.UTF-8")
            .env("MANROFFSEQ", "")
            .env("MANWIDTH", "80")
            .output();
        match out {
            Ok(out) => assert!(
                out.status.success() && out.stderr.is_empty(),
                "{page}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            // man-db is not part of the test set-up; lintian runs it in
            // the package test.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => panic!("cannot run man: {e}"),
        }
    }
}

#[test]
#[ignore = "needs cargo-deb and lintian: .ci/run installs them and runs it"]
fn the_debian_package_ships_what_it_should_and_lintian_reports_no_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = tempfile::tempdir().unwrap();
    let release = target.path().join("release");
    std::fs::create_dir_all(&release).unwrap();
    let packaged = release.join("passbolt-sync");
    std::fs::copy(bin(), &packaged).unwrap();
    // As `strip = true` in the release profile does.
    run(Command::new("strip").arg(&packaged));
    let deb = target.path().join("passbolt-sync.deb");
    run(Command::new(root.join(".ci/package-deb"))
        .args(["--no-build", "--fast", "--output"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", target.path())
        .current_dir(root));

    // Control fields.
    let field = |name: &str| {
        stdout(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(name))
            .trim()
            .to_string()
    };
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(field("Package"), "passbolt-sync");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(field("Architecture"), arch.trim());
    assert_eq!(field("Section"), "admin");
    assert!(field("Maintainer").contains('@'));
    let depends = field("Depends");
    // What dpkg-shlibdeps finds the binary linked against: the crypto
    // backend's libraries.
    let libs: &[&str] = if cfg!(feature = "crypto-nettle") {
        &["libc6", "libnettle8", "libhogweed6", "libgmp10"]
    } else {
        &["libc6", "libssl3"]
    };
    for lib in libs {
        assert!(depends.contains(lib), "Depends: {depends}");
    }
    // What no shared library shows: the trust store for https:// servers.
    assert!(
        depends.split(", ").any(|d| d == "ca-certificates"),
        "Depends: {depends}"
    );

    // The file list, with modes and owners.
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: Vec<(String, String, String)> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (
                cols[5].trim_start_matches('.').to_string(),
                cols[0].to_string(),
                cols[1].to_string(),
            )
        })
        .collect();
    let mut expected: Vec<(String, &str)> = vec![
        ("/usr/bin/passbolt-sync".into(), "-rwxr-xr-x"),
        (
            "/lib/systemd/system/passbolt-sync.service".into(),
            "-rw-r--r--",
        ),
        (
            "/lib/systemd/system/passbolt-sync-once.service".into(),
            "-rw-r--r--",
        ),
        (
            "/lib/systemd/system/passbolt-sync.timer".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/bash-completion/completions/passbolt-sync".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/zsh/vendor-completions/_passbolt-sync".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/fish/vendor_completions.d/passbolt-sync.fish".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/passbolt-sync/examples/sync.example.yaml".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/passbolt-sync/examples/credentials-encrypted.conf".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/passbolt-sync/README.md".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/passbolt-sync/systemd.md".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/passbolt-sync/copyright".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/passbolt-sync/changelog.Debian.gz".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/lintian/overrides/passbolt-sync".into(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/man/man1/passbolt-sync.1.gz".into(),
            "-rw-r--r--",
        ),
    ];
    for c in COMMANDS {
        expected.push((
            format!("/usr/share/man/man1/passbolt-sync-{c}.1.gz"),
            "-rw-r--r--",
        ));
    }
    let mut got: Vec<(String, &str)> = files
        .iter()
        .map(|(path, mode, owner)| {
            assert_eq!(owner, "0/0", "{path} is not root's");
            (path.clone(), mode.as_str())
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{listing}");

    // The units start the packaged binary.
    let unpacked = target.path().join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    for unit in ["passbolt-sync.service", "passbolt-sync-once.service"] {
        let text = std::fs::read_to_string(unpacked.join("lib/systemd/system").join(unit)).unwrap();
        assert!(
            text.contains("ExecStart=/usr/bin/passbolt-sync "),
            "{unit}:\n{text}"
        );
        assert!(!text.contains("/usr/local/bin"), "{unit}:\n{text}");
    }

    // The maintainer scripts never enable or start anything.
    let control = target.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("install -d -m 0700 -o root -g root /etc/passbolt-sync"));
    assert!(postinst.contains("daemon-reload"));
    for script in ["postinst", "postrm", "prerm"] {
        let text = std::fs::read_to_string(control.join(script)).unwrap();
        for verb in [" enable", " start", "restart", "deb-systemd-helper"] {
            assert!(!text.contains(verb), "{script} has {verb:?}:\n{text}");
        }
    }

    // lintian: no error.
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .expect("lintian runs (apt-get install lintian)");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{report}");
}
