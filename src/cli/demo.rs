//! `passbolt-sync demo`: the dev server with generated keys and sample
//! resources, a config for it in a scratch folder, and the commands run
//! against it. Everything it prints is sample data.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::{self, AppError};
use crate::config::Config;
use passbolt_client::pgp::{self, CipherSuite};
use passbolt_devserver::seed::{GENERATED_PER_FOLDER, ids};
use passbolt_devserver::{self, Account, DevServer};

pub struct DemoAccount {
    pub label: &'static str,
    pub id: String,
    pub key_file: PathBuf,
    pub pass_file: PathBuf,
    /// The account's TOTP seed, for the account under an MFA policy.
    pub totp_file: Option<PathBuf>,
}

/// Generates the demo accounts (RSA-3072, Curve25519, and a Curve25519
/// account under an MFA policy whose TOTP seed is written next to its
/// key) and starts the
/// dev server for them, with the sample set and `generated` more resources
/// (`passbolt_devserver::seed::generated`). Also returns how long the server took
/// to start and seed, the accounts' key generation left out.
pub async fn start(
    dir: &Path,
    opts: passbolt_devserver::Options,
    generated: usize,
) -> Result<(DevServer, Vec<DemoAccount>, std::time::Duration), AppError> {
    let mut accounts = Vec::new();
    let mut demo = Vec::new();
    let mut seeds = Vec::new();
    for (label, suite) in [
        ("rsa", CipherSuite::RSA3k),
        ("curve25519", CipherSuite::Cv25519),
        ("mfa", CipherSuite::Cv25519),
    ] {
        let id = uuid::Uuid::new_v4().to_string();
        let userid = format!("Demo {label} <demo-{label}@passbolt.invalid>");
        let (key, armored) = tokio::task::spawn_blocking(move || {
            pgp::generate_key(&userid, suite, Some(cli::DEMO_PASSPHRASE))
        })
        .await
        .expect("key generation task")
        .map_err(|e| AppError::Other(format!("demo key generation: {e}")))?;
        let key_file = dir.join(format!("{label}.key.asc"));
        let pass_file = dir.join(format!("{label}.passphrase"));
        write_private(&key_file, armored.as_bytes())?;
        write_private(&pass_file, format!("{}\n", cli::DEMO_PASSPHRASE).as_bytes())?;
        accounts.push(Account {
            id: id.clone(),
            username: format!("demo-{label}@passbolt.invalid"),
            key: key.public(),
            mfa: Vec::new(),
        });
        let totp_file = (label == "mfa").then(|| dir.join(format!("{label}.totp")));
        if let Some(file) = &totp_file {
            let seed = passbolt_devserver::seed::random_totp_seed();
            let uri = format!(
                "otpauth://totp/passbolt:demo-{label}?secret={}&issuer=passbolt",
                seed.as_str()
            );
            write_private(file, uri.as_bytes())?;
            seeds.push((id.clone(), seed));
        }
        demo.push(DemoAccount {
            label,
            id,
            key_file,
            pass_file,
            totp_file,
        });
    }
    let readers: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
    let mut folders = passbolt_devserver::seed::sample_folders();
    let mut resources = passbolt_devserver::seed::sample_resources(&readers);
    let (more_folders, more_resources) = passbolt_devserver::seed::generated(generated, &readers);
    folders.extend(more_folders);
    resources.extend(more_resources);
    let seeding = std::time::Instant::now();
    let server = DevServer::start(opts, accounts, folders, resources)
        .await
        .map_err(|e| AppError::Other(e.to_string()))?;
    for (id, seed) in &seeds {
        server
            .set_totp(id, seed)
            .map_err(|e| AppError::Other(e.to_string()))?;
    }
    Ok((server, demo, seeding.elapsed()))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), AppError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AppError::Other(format!("{}: {e}", path.display())))?;
    f.write_all(data)
        .map_err(|e| AppError::Other(format!("{}: {e}", path.display())))
}

/// A config for `account` with targets of every format into `out_dir`;
/// with `generated` resources, also a commented target for one folder of
/// them.
pub fn config_text(
    server: &DevServer,
    account: &DemoAccount,
    out_dir: &Path,
    template: &Path,
    generated: usize,
) -> String {
    let out = out_dir.display();
    let mut text = format!(
        r#"# Written by `passbolt-sync demo` for its built-in dev server.
server:
  url: {url}
  fingerprint: {fp}
auth:
  user_id: {id}
  private_key_file: {key}
  passphrase_file: {pass}{totp}
schedule: every 30s
targets:
  - path: {out}/db.password
    format: raw
    resource: {legacy}
  - path: {out}/app.env
    format: dotenv
    on_change: "echo app.env changed"
    vars:
      GITLAB_PASSWORD: {{ resource: {gitlab} }}
      GITLAB_USER: {{ resource: {gitlab}, field: username }}
      SMTP_PASSWORD: {{ name: SMTP relay }}
      API_TOKEN: {{ resource: {custom}, field: "custom:API token" }}
      BACKUP_TOTP: {{ resource: {backup}, field: totp }}
      DOOR_PIN: {{ resource: {pin}, field: pin }}
  - path: {out}/myapp.env
    format: dotenv
    folder: Production/myapp
  - path: {out}/myapp.json
    format: json
    folder: Production/myapp
    vars:
      REDIS_PASSWORD: {{ name: Redis }}
  - path: {out}/recovery.txt
    format: raw
    resource: {note}
    field: note
  - path: {out}/config.ini
    format: template
    template: {template}
"#,
        url = server.url(),
        fp = server.server_fingerprint(),
        id = account.id,
        key = account.key_file.display(),
        pass = account.pass_file.display(),
        totp = account
            .totp_file
            .as_ref()
            .map(|f| format!("\n  totp_secret_file: {}", f.display()))
            .unwrap_or_default(),
        legacy = ids::V4_PASSWORD_STRING,
        gitlab = ids::V5_DEFAULT,
        custom = ids::V5_CUSTOM_FIELDS,
        backup = ids::V4_PASSWORD_DESCRIPTION_TOTP,
        pin = ids::V5_PIN,
        note = ids::V5_NOTE,
        template = template.display(),
    );
    if generated > 0 {
        let count = generated.min(GENERATED_PER_FOLDER);
        text.push_str(&format!(
            r#"  # The generated resources: one variable per resource of one folder
  # ({count}: GEN_00001, ...). Uncomment to sync them.
  # - path: {out}/generated.env
  #   format: dotenv
  #   folder: Generated/gen-000
"#
        ));
    }
    text
}

/// The `resources` table without the rows of generated resources (their
/// folder, the last column, is under `Generated`), and their count instead.
fn write_without_generated(
    listing: &[u8],
    generated: usize,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let listing = String::from_utf8_lossy(listing);
    for line in listing.lines().filter(|l| !l.contains("  Generated/")) {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "... and {generated} generated resources in Generated/")
}

pub const TEMPLATE: &str = r#"# rendered by passbolt-sync
[database]
user = {{ secret("Legacy DB", "username") }}
password = {{ secret("Legacy DB") }}

[cloud]
password = {{ secret("3c2b5e1a-0000-4000-8000-000000000007") }}
otpauth = {{ secret("Cloud console", "totp_uri") }}
"#;

/// Runs the demo in `dir`. With `serve`, keeps the server running until
/// interrupted and prints how to point `run` at it. `generated` resources
/// are seeded besides the sample set (listed by count, not one by one).
pub async fn run(
    dir: &Path,
    serve: bool,
    generated: usize,
    out: &mut dyn Write,
) -> Result<bool, AppError> {
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    // What works from where the user stands: after `cargo run` the binary
    // is not on PATH.
    let exe = crate::cli::init::exe();
    std::fs::create_dir_all(dir).map_err(|e| AppError::Other(format!("{}: {e}", dir.display())))?;
    let started = std::time::Instant::now();
    let (server, accounts, seeding) =
        start(dir, passbolt_devserver::Options::default(), generated).await?;
    writeln!(
        out,
        "dev server listening on {} (server key {}), started in {} ms",
        server.url(),
        server.server_fingerprint(),
        started.elapsed().as_millis()
    )
    .map_err(w)?;
    if generated > 0 {
        writeln!(
            out,
            "seeded {generated} generated resources besides the sample set, {GENERATED_PER_FOLDER} to a folder (Generated/gen-000, ...), in {} ms",
            seeding.as_millis()
        )
        .map_err(w)?;
    }
    let template = dir.join("config.ini.tmpl");
    std::fs::write(&template, TEMPLATE)
        .map_err(|e| AppError::Other(format!("{}: {e}", template.display())))?;
    let mut configs = Vec::new();
    for account in &accounts {
        let out_dir = dir.join(format!("out-{}", account.label));
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| AppError::Other(format!("{}: {e}", out_dir.display())))?;
        let path = dir.join(format!("sync-{}.yaml", account.label));
        std::fs::write(
            &path,
            config_text(&server, account, &out_dir, &template, generated),
        )
        .map_err(|e| AppError::Other(format!("{}: {e}", path.display())))?;
        configs.push((account, path, out_dir));
    }
    let mut ok = true;
    // The MFA account is shown once, briefly, at the end.
    for (account, path, _) in configs.iter().filter(|(a, _, _)| a.totp_file.is_none()) {
        let config = Config::load(path)?;
        writeln!(
            out,
            "\n$ {exe} resources -c {}    # {} account",
            path.display(),
            account.label
        )
        .map_err(w)?;
        let t = std::time::Instant::now();
        if generated == 0 {
            cli::resources(&config, false, out).await?;
        } else {
            let mut listing = Vec::new();
            cli::resources(&config, false, &mut listing).await?;
            write_without_generated(&listing, generated, out).map_err(w)?;
        }
        writeln!(out, "({} ms, including login)", t.elapsed().as_millis()).map_err(w)?;
    }
    let (_, path, out_dir) = &configs[0];
    let config = Config::load(path)?;
    writeln!(out, "\n$ {exe} check --online -c {}", path.display()).map_err(w)?;
    ok &= cli::check(&config, path, true, out).await?;
    // The hook's own log line follows; show what it runs first.
    for t in &config.targets {
        if let Some(hook) = &t.on_change {
            writeln!(
                out,
                "\nthe target {} has a hook, run each time the file changes:\n  on_change: {hook}",
                t.path.display()
            )
            .map_err(w)?;
        }
    }
    writeln!(out, "\n$ {exe} once -c {}", path.display()).map_err(w)?;
    let t = std::time::Instant::now();
    ok &= cli::once(&config, false, out).await?;
    writeln!(out, "({} ms)", t.elapsed().as_millis()).map_err(w)?;
    writeln!(
        out,
        "\nfiles written into {} (sample data):",
        out_dir.display()
    )
    .map_err(w)?;
    let mut files: Vec<_> = std::fs::read_dir(out_dir)
        .map_err(|e| AppError::Other(e.to_string()))?
        .filter_map(|e| e.ok())
        .collect();
    files.sort_by_key(|e| e.file_name());
    for entry in files {
        use std::os::unix::fs::PermissionsExt;
        let meta = entry
            .metadata()
            .map_err(|e| AppError::Other(e.to_string()))?;
        let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
        writeln!(
            out,
            "--- {} (mode {:o})",
            entry.path().display(),
            meta.permissions().mode() & 0o7777
        )
        .map_err(w)?;
        write!(out, "{content}").map_err(w)?;
        if !content.ends_with('\n') {
            writeln!(out).map_err(w)?;
        }
    }
    writeln!(
        out,
        "\n$ {exe} once -c {}    # again: nothing changed",
        path.display()
    )
    .map_err(w)?;
    ok &= cli::once(&config, false, out).await?;
    let kit = account_kit_flow(&server, &accounts[0], dir, &exe, out).await?;
    ok &= kit.ok;
    ok &= mfa_flow(&server, &configs, &exe, out).await?;
    if serve {
        if generated > 0 {
            writeln!(
                out,
                "\n{} has a commented target for the folder Generated/gen-000.",
                path.display()
            )
            .map_err(w)?;
        }
        writeln!(
            out,
            "\nthe dev server keeps running; in another shell:\n  {exe} run -c {}\n  {exe} init --account-kit {} --passphrase-file {} --dir {}\nCtrl-C stops it.",
            path.display(),
            kit.kit_file.display(),
            accounts[0].pass_file.display(),
            dir.join("mine").display(),
        )
        .map_err(w)?;
        out.flush().map_err(w)?;
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(server);
    writeln!(out, "{}", next_steps(&exe)).map_err(w)?;
    Ok(ok)
}

/// One pass of the account under an MFA policy, summed up in two lines:
/// its report is the same as the other accounts'.
async fn mfa_flow(
    server: &DevServer,
    configs: &[(&DemoAccount, PathBuf, PathBuf)],
    exe: &str,
    out: &mut dyn Write,
) -> Result<bool, AppError> {
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    let Some((account, path, out_dir)) = configs.iter().find(|(a, _, _)| a.totp_file.is_some())
    else {
        return Ok(true);
    };
    let seed_file = account.totp_file.as_ref().expect("filtered");
    writeln!(
        out,
        "\n# An account under an MFA policy: {} names its TOTP seed\n# (auth.totp_secret_file: {}).\n$ {exe} once -c {}",
        path.display(),
        seed_file.display(),
        path.display()
    )
    .map_err(w)?;
    let config = Config::load(path)?;
    let mut report = Vec::new();
    let ok = cli::once(&config, false, &mut report).await?;
    let (accepted, rejected) = server.totp_attempts(&account.id);
    let targets = config.targets.len();
    writeln!(
        out,
        "logged in with a TOTP code ({accepted} accepted, {rejected} rejected); {targets} target(s) {} into {}",
        if ok { "written" } else { "NOT all written" },
        out_dir.display()
    )
    .map_err(w)?;
    Ok(ok)
}

struct KitFlow {
    kit_file: PathBuf,
    ok: bool,
}

/// Writes an account kit for `account` as the browser extension would,
/// and runs `init` with it into `dir/init`.
async fn account_kit_flow(
    server: &DevServer,
    account: &DemoAccount,
    dir: &Path,
    exe: &str,
    out: &mut dyn Write,
) -> Result<KitFlow, AppError> {
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    let armored = std::fs::read_to_string(&account.key_file)
        .map_err(|e| AppError::Other(format!("{}: {e}", account.key_file.display())))?;
    let unlock = armored.clone();
    let key = tokio::task::spawn_blocking(move || {
        pgp::PrivateKey::load(unlock.as_bytes(), Some(cli::DEMO_PASSPHRASE.as_bytes()))
    })
    .await
    .expect("key loading task")
    .map_err(|e| AppError::Other(format!("demo key: {e}")))?;
    let kit = server
        .account_kit(&account.id, &armored, &key)
        .map_err(|e| AppError::Other(e.to_string()))?;
    let kit_file = dir.join("account-kit.passbolt");
    write_private(&kit_file, kit.as_bytes())?;
    let init_dir = dir.join("init");
    let target = init_dir.join("myapp.env");
    writeln!(
        out,
        "\n# A real account starts from its account kit, which the browser extension\n\
         # exports (Manage account > Desktop app setup). {} is one for the\n\
         # {} account, signed with its key as the extension signs it.\n\
         # (--force: the demo may run again in the same folder.)\n\
         $ {exe} init --account-kit {} --passphrase-file {} --dir {} --folder Production/myapp --target {} --force",
        kit_file.display(),
        account.label,
        kit_file.display(),
        account.pass_file.display(),
        init_dir.display(),
        target.display(),
    )
    .map_err(w)?;
    let opts = crate::cli::init::InitOptions {
        account_kit: kit_file.clone(),
        dir: init_dir,
        passphrase_file: Some(account.pass_file.clone()),
        totp_secret_file: None,
        force: true,
        folder: Some("Production/myapp".into()),
        target: Some(target),
        format: crate::config::Format::Dotenv,
    };
    let mut ok = crate::cli::init::run(&opts, out).await?;
    let config_path = opts.dir.join("sync.yaml");
    writeln!(out, "\n$ {exe} once -c {}", config_path.display()).map_err(w)?;
    ok &= cli::once(&Config::load(&config_path)?, false, out).await?;
    Ok(KitFlow { kit_file, ok })
}

/// The last screen: from the demo to a real server.
pub fn next_steps(exe: &str) -> String {
    format!(
        "\nnext, with your passbolt server:\n  \
         1. export your account kit from the browser extension (Manage account >\n     \
         Desktop app setup), then write /etc/passbolt-sync from it:\n       \
         {exe} init --account-kit account-kit.passbolt --passphrase-file FILE \\\n         \
         --folder 'Production/myapp' --target /etc/myapp/secrets.env\n  \
         2. or copy sync.example.yaml (every option, commented) and fill it in:\n       \
         {exe} resources -c sync.yaml         # ids, names and folders\n       \
         {exe} check --online -c sync.yaml    # logs in, resolves every target\n       \
         {exe} once -c sync.yaml              # one sync"
    )
}
