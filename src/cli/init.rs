//! `passbolt-sync init`: a config directory from a passbolt account kit.
//!
//! The kit names the server and pins its key; the server is asked for its
//! key before anything is written, and a different one stops `init` (a kit
//! pointed at an impostor must not produce a config that trusts it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::cli::{self, AppError};
use crate::config::{self, Config, Format};
use crate::sync::write::{self, WriteError, WriteSpec};
use passbolt_client::account_kit::{AccountKit, KitError, VerifiedKit};
use passbolt_client::mfa::TotpSeed;
use passbolt_client::model::{Envelope, SettingsBody, VerifyBody};
use passbolt_client::pgp::{PgpError, PrivateKey, PublicKey};
use passbolt_client::secret::Resource;
use passbolt_client::{Client, ClientError, SessionOptions};

pub const DEFAULT_DIR: &str = "/etc/passbolt-sync";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot read the account kit {path}: {source}")]
    ReadKit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("account kit {path}: {source}")]
    Kit { path: PathBuf, source: KitError },
    #[error("account kit {path}: user_id {user_id:?} is not a UUID")]
    UserId { path: PathBuf, user_id: String },
    #[error("account kit {path}: domain: {message}")]
    Domain { path: PathBuf, message: String },
    #[error("cannot fetch {url}: {detail}")]
    Fetch { url: String, detail: String },
    #[error(
        "{domain} serves the server key {served}, but the account kit pins {kit}: refusing to trust it (is this the server the kit was exported from?)"
    )]
    ServerKeyMismatch {
        domain: String,
        kit: String,
        served: String,
    },
    #[error(
        "the account kit's domain is {domain}, but the server there announces its base URL as {announced} (app.url at /settings.json): it would refuse every login for {domain}. The kit's domain is what the browser used; the server's App.fullBaseUrl differs from it"
    )]
    DomainMismatch { domain: String, announced: String },
    #[error("{} already exist(s); pass --force to overwrite", list(.0))]
    Exists(Vec<PathBuf>),
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the passphrase file {path}: {source}")]
    ReadPassphrase {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the TOTP seed file {path}: {source}")]
    ReadTotp {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TOTP seed file {path}: {source}")]
    Totp {
        path: PathBuf,
        source: passbolt_client::mfa::TotpSeedError,
    },
    #[error("the account kit's private key: {0}")]
    Unlock(PgpError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: WriteError },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `init` is asked to do.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub account_kit: PathBuf,
    pub dir: PathBuf,
    pub passphrase_file: Option<PathBuf>,
    /// The account's TOTP seed, for an account under an MFA policy.
    pub totp_secret_file: Option<PathBuf>,
    pub force: bool,
    /// A first target: every resource of this folder ...
    pub folder: Option<String>,
    /// ... written here ...
    pub target: Option<PathBuf>,
    /// ... in this format (dotenv or json).
    pub format: Format,
}

/// The files `init` writes into its directory.
pub struct Written {
    pub config: PathBuf,
    pub private_key: PathBuf,
    pub passphrase: Option<PathBuf>,
    pub totp: Option<PathBuf>,
}

/// `passbolt-sync init`. Returns whether the config it wrote checks out
/// online (always true without a passphrase: nothing could be tried).
pub async fn run(opts: &InitOptions, out: &mut dyn Write) -> Result<bool, AppError> {
    let (verified, domain) = verify(&opts.account_kit, out).await?;
    let dir = absolute(&opts.dir);
    let files = Written {
        config: dir.join("sync.yaml"),
        private_key: dir.join("private.asc"),
        passphrase: opts
            .passphrase_file
            .as_ref()
            .map(|_| dir.join("passphrase")),
        totp: opts.totp_secret_file.as_ref().map(|_| dir.join("totp")),
    };
    if !opts.force {
        let existing: Vec<PathBuf> = [Some(&files.config), Some(&files.private_key)]
            .into_iter()
            .chain([files.passphrase.as_ref(), files.totp.as_ref()])
            .flatten()
            .filter(|p| p.symlink_metadata().is_ok())
            .cloned()
            .collect();
        if !existing.is_empty() {
            return Err(InitError::Exists(existing).into());
        }
    }
    // With a passphrase, log in before writing anything: a wrong
    // passphrase leaves no half-made directory, and the config's examples
    // name real resources.
    let passphrase = match &opts.passphrase_file {
        Some(p) => Some(read_passphrase(p)?),
        None => None,
    };
    // Read and parsed before anything is written, as the passphrase is.
    let totp = match &opts.totp_secret_file {
        Some(p) => Some(read_totp(p)?),
        None => None,
    };
    let readable = match &passphrase {
        Some(pass) => {
            let seed = totp.as_ref().map(|(_, seed)| seed.clone());
            Some(list_readable(&verified, &domain, pass, seed).await?)
        }
        None => None,
    };
    let written = Draft {
        verified: &verified,
        domain: &domain,
        files: &files,
        opts,
        readable: readable.as_deref(),
    };
    write_files(
        &written,
        passphrase.as_ref().map(|p| p.as_slice()),
        totp.as_ref().map(|(bytes, _)| bytes.as_slice()),
        out,
    )?;
    match readable {
        Some(rows) => try_config(&files.config, &rows, out).await,
        None => {
            how_to_test(&dir, &files.config, out)?;
            Ok(true)
        }
    }
}

/// Opens the kit and asks its domain for the server key, which must be
/// the one the kit pins. Returns the kit and the domain as a base URL.
async fn verify(kit_path: &Path, out: &mut dyn Write) -> Result<(VerifiedKit, String), AppError> {
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    let kit_path = &kit_path.to_path_buf();

    let data = Zeroizing::new(
        std::fs::read(kit_path).map_err(|source| InitError::ReadKit {
            path: kit_path.clone(),
            source,
        })?,
    );
    let verified = AccountKit::open(&data).map_err(|source| InitError::Kit {
        path: kit_path.clone(),
        source,
    })?;
    let kit = &verified.kit;
    if uuid::Uuid::parse_str(&kit.user_id).is_err() {
        return Err(InitError::UserId {
            path: kit_path.clone(),
            user_id: kit.user_id.clone(),
        }
        .into());
    }
    let domain = config::check_url(&kit.domain).map_err(|message| InitError::Domain {
        path: kit_path.clone(),
        message,
    })?;
    writeln!(
        out,
        "account kit of {} (user id {}, key {}): signature good",
        kit.username,
        kit.user_id,
        verified.user_key.fingerprint()
    )
    .map_err(w)?;
    let served = fetch_server_key(&domain).await?;
    if served.fingerprint() != verified.server_key.fingerprint() {
        return Err(InitError::ServerKeyMismatch {
            domain,
            kit: verified.server_key.fingerprint(),
            served: served.fingerprint(),
        }
        .into());
    }
    writeln!(
        out,
        "{domain} serves the server key the kit pins: {}",
        served.fingerprint()
    )
    .map_err(w)?;
    // The login's own check, before anything is written and whether or
    // not init logs in: the kit's domain becomes server.url.
    let (announced, offset) = fetch_settings(&domain).await;
    passbolt_client::session::check_announced(&domain, announced.as_deref(), offset).map_err(
        |e| match e {
            ClientError::BaseUrlMismatch { announced, .. } => InitError::DomainMismatch {
                domain: domain.clone(),
                announced,
            }
            .into(),
            e => AppError::Client(e),
        },
    )?;
    Ok((verified, domain))
}

/// What the config is drafted from.
pub struct Draft<'a> {
    pub verified: &'a VerifiedKit,
    pub domain: &'a str,
    pub files: &'a Written,
    pub opts: &'a InitOptions,
    pub readable: Option<&'a [Resource]>,
}

/// Writes the key, the passphrase (when given) and the config, each 0600,
/// into a directory made 0700 when missing.
fn write_files(
    draft: &Draft<'_>,
    passphrase: Option<&[u8]>,
    totp: Option<&[u8]>,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    let files = draft.files;
    let dir = files.config.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode_0700()
        .create(dir)
        .map_err(|source| InitError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    put(
        &files.private_key,
        draft.verified.kit.user_private_armored_key.as_bytes(),
    )?;
    if let (Some(path), Some(pass)) = (&files.passphrase, passphrase) {
        let mut line = Zeroizing::new(pass.to_vec());
        line.push(b'\n');
        put(path, &line)?;
    }
    if let (Some(path), Some(seed)) = (&files.totp, totp) {
        put(path, seed)?;
    }
    put(&files.config, config_text(draft).as_bytes())?;
    for p in [
        Some(&files.private_key),
        files.passphrase.as_ref(),
        files.totp.as_ref(),
        Some(&files.config),
    ]
    .into_iter()
    .flatten()
    {
        writeln!(out, "wrote {} (mode 600)", p.display()).map_err(w)?;
    }
    Ok(())
}

/// Without a passphrase nothing could be tried: how to.
fn how_to_test(dir: &Path, config: &Path, out: &mut dyn Write) -> Result<(), AppError> {
    writeln!(
        out,
        "\nno --passphrase-file: nothing was tried against the server. To test the account:\n  \
         printf '%s\\n' 'the key passphrase' > {pass} && chmod 0600 {pass}\n  \
         uncomment auth.passphrase_file in {cfg}, then\n  \
         {exe} check --online -c {cfg}",
        pass = dir.join("passphrase").display(),
        cfg = config.display(),
        exe = exe(),
    )
    .map_err(|e| AppError::Other(format!("cannot write output: {e}")))
}

/// `check --online` on the new config, what the account can read, and
/// the next command.
async fn try_config(
    path: &Path,
    readable: &[Resource],
    out: &mut dyn Write,
) -> Result<bool, AppError> {
    let w = |e: std::io::Error| AppError::Other(format!("cannot write output: {e}"));
    let exe = exe();
    let config = Config::load(path)?;
    writeln!(out, "\n$ {exe} check --online -c {}", path.display()).map_err(w)?;
    let ok = cli::check(&config, path, true, out).await?;
    writeln!(out, "readable by this account:").map_err(w)?;
    // An account may read thousands: a sample here, `resources` for all.
    const SHOWN: usize = 10;
    for r in readable.iter().take(SHOWN) {
        let name = match &r.folder {
            Some(f) => format!("{f}/{}", r.name),
            None => r.name.clone(),
        };
        writeln!(out, "  {}  {name}", r.id).map_err(w)?;
    }
    if readable.len() > SHOWN {
        writeln!(
            out,
            "  ... and {} more: {exe} resources -c {} lists them all",
            readable.len() - SHOWN,
            path.display()
        )
        .map_err(w)?;
    }
    let next = if config.targets.is_empty() {
        format!(
            "next: add targets to {} (examples are in it), then {exe} once -c {}",
            path.display(),
            path.display()
        )
    } else {
        format!("next: {exe} once -c {}", path.display())
    };
    writeln!(out, "\n{next}").map_err(w)?;
    Ok(ok)
}

/// The command that runs this binary from where the user stands: the
/// binary's own path, since `cargo run` puts nothing on `PATH`.
pub fn exe() -> String {
    std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "passbolt-sync".into())
}

fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

trait Mode0700 {
    fn mode_0700(&mut self) -> &mut Self;
}

impl Mode0700 for std::fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }
}

fn put(path: &Path, content: &[u8]) -> Result<(), InitError> {
    write::write_atomic(&WriteSpec::new(path), content)
        .map(|_| ())
        .map_err(|source| InitError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn read_passphrase(path: &Path) -> Result<Zeroizing<Vec<u8>>, InitError> {
    let mut data = std::fs::read(path).map_err(|source| InitError::ReadPassphrase {
        path: path.to_path_buf(),
        source,
    })?;
    // The same rule as `auth.passphrase_file`.
    crate::config::strip_line_end(&mut data);
    Ok(Zeroizing::new(data))
}

/// The seed file's bytes, copied as they are, and the seed parsed from
/// them (refused here rather than at the first login).
fn read_totp(path: &Path) -> Result<(Zeroizing<Vec<u8>>, TotpSeed), InitError> {
    let data = Zeroizing::new(std::fs::read(path).map_err(|source| InitError::ReadTotp {
        path: path.to_path_buf(),
        source,
    })?);
    let seed = TotpSeed::parse(&data).map_err(|source| InitError::Totp {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((data, seed))
}

async fn fetch_server_key(domain: &str) -> Result<PublicKey, InitError> {
    let url = format!("{domain}/auth/verify.json");
    let fail = |detail: String| InitError::Fetch {
        url: url.clone(),
        detail,
    };
    let roots = passbolt_client::trusted(domain, None, false).map_err(&fail)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_certs_only(roots)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let reply = http
        .get(&url)
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    if !reply.status().is_success() {
        return Err(fail(format!("HTTP {}", reply.status())));
    }
    let body: Envelope<VerifyBody> = reply
        .json()
        .await
        .map_err(|e| fail(format!("not a passbolt answer: {}", e.without_url())))?;
    PublicKey::from_armor(body.body.keydata.as_bytes()).map_err(|e| fail(format!("keydata: {e}")))
}

/// `app.url` and the clock offset (server minus host, seconds) from
/// `GET /settings.json`; `None` for what the server does not announce or
/// when it cannot be read (the check is then skipped, as the login's is).
async fn fetch_settings(domain: &str) -> (Option<String>, Option<i64>) {
    let url = format!("{domain}/settings.json");
    let reply = async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        http.get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await?
            .error_for_status()?
            .json::<Envelope<SettingsBody>>()
            .await
    }
    .await;
    let local = passbolt_client::session::unix_now();
    match reply {
        Ok(e) => (
            e.body.app.and_then(|a| a.url),
            e.header.servertime.map(|t| t - local),
        ),
        Err(e) => {
            tracing::debug!("no settings at {url}: {}", e.without_url());
            (None, None)
        }
    }
}

/// Logs in with the kit's key and lists what the account can read (no
/// secret is read).
async fn list_readable(
    verified: &VerifiedKit,
    domain: &str,
    passphrase: &[u8],
    totp: Option<TotpSeed>,
) -> Result<Vec<Resource>, AppError> {
    let armored = verified.kit.user_private_armored_key.clone();
    let pass = Zeroizing::new(passphrase.to_vec());
    let key =
        tokio::task::spawn_blocking(move || PrivateKey::load(armored.as_bytes(), Some(&pass)))
            .await
            .expect("key loading task")
            .map_err(InitError::Unlock)?;
    let client = Client::new(
        SessionOptions {
            base_url: domain.to_string(),
            user_id: verified.kit.user_id.clone(),
            fingerprint: Some(verified.server_key.fingerprint()),
            ca_pem: None,
            timeout: Duration::from_secs(30),
            max_response_bytes: passbolt_client::session::DEFAULT_MAX_RESPONSE_BYTES,
            // An account kit names no client certificate.
            client_identity: None,
        },
        Arc::new(key),
    )?
    .with_totp(totp);
    client.login().await?;
    let listing = client.list(true).await;
    let _ = client.logout().await;
    let mut rows = listing?.resources;
    rows.sort_by(|a, b| (&a.folder, &a.name).cmp(&(&b.folder, &b.name)));
    Ok(rows)
}

/// The config `init` writes: the kit's server and account, the key paths,
/// the requested target, and commented examples.
pub fn config_text(draft: &Draft<'_>) -> String {
    let Draft {
        verified,
        domain,
        files,
        opts,
        readable,
    } = *draft;
    let kit = &verified.kit;
    let mut t = format!(
        "# Written by `passbolt-sync init` from the account kit of {user}.\n\
         # Every option is described, with examples, in sync.example.yaml\n\
         # (in the passbolt-sync sources).\n\
         server:\n  url: {domain}\n  \
         # The server key of the account kit, as {domain}/auth/verify.json served it.\n  \
         fingerprint: {fp}\n\
         auth:\n  user_id: {id}    # {user}\n  \
         # Under the systemd unit (LoadCredential=): ${{CREDENTIALS_DIRECTORY}}/private.asc\n  \
         private_key_file: {key}\n",
        user = kit.username,
        fp = verified.server_key.fingerprint(),
        id = kit.user_id,
        key = files.private_key.display(),
    );
    match &files.passphrase {
        Some(p) => t.push_str(&format!("  passphrase_file: {}\n", p.display())),
        None => t.push_str(&format!(
            "  # The key's passphrase: a file (mode 0600) or an environment variable.\n  \
             # passphrase_file: {}\n  # passphrase_env: PASSBOLT_PASSPHRASE\n",
            files.config.with_file_name("passphrase").display()
        )),
    }
    if let Some(p) = &files.totp {
        t.push_str(&format!(
            "  # The account's TOTP seed (its MFA policy); under the systemd unit:\n  \
             # ${{CREDENTIALS_DIRECTORY}}/totp (LoadCredential=totp:...)\n  \
             totp_secret_file: {}\n",
            p.display()
        ));
    }
    t.push_str("schedule: every 5m\ntargets:\n");
    if let (Some(folder), Some(path)) = (&opts.folder, &opts.target) {
        t.push_str(&format!(
            "  - path: {}\n    format: {}\n    folder: {}\n",
            path.display(),
            opts.format,
            yaml_scalar(folder)
        ));
        // The first sync makes the directory rather than fail: this target
        // was asked for on the command line.
        if !path.parent().is_some_and(Path::is_dir) {
            t.push_str("    create_dirs: true\n");
        }
    }
    t.push_str(&examples(readable));
    if opts.target.is_none() {
        // An empty `targets:` is null, which is not a list.
        t = t.replacen(
            "targets:\n",
            "targets: []    # replace [] by the list, as below\n",
            1,
        );
    }
    t
}

/// Commented targets: with a listing, for resources the account can
/// really read; without, placeholders.
fn examples(readable: Option<&[Resource]>) -> String {
    let mut t = String::from(
        "  # Examples; `passbolt-sync resources -c <this file>` lists ids, names and folders.\n",
    );
    // Types whose default field, `password`, exists.
    let has_password = |r: &&Resource| {
        matches!(
            r.type_slug.as_str(),
            "password-string"
                | "v5-password-string"
                | "password-and-description"
                | "password-description-totp"
                | "v5-default"
                | "v5-default-with-totp"
        )
    };
    let first = readable.and_then(|r| r.iter().find(has_password));
    let folder = readable.and_then(|r| r.iter().find_map(|r| r.folder.clone()));
    match first {
        Some(r) => t.push_str(&format!(
            "  # - path: /etc/myapp/password\n  #   format: raw\n  #   resource: {}    # {}\n",
            r.id, r.name
        )),
        None => t.push_str(
            "  # - path: /etc/myapp/password\n  #   format: raw\n  #   resource: <resource id>\n",
        ),
    }
    let folder = folder.unwrap_or_else(|| "<Folder/Subfolder>".into());
    t.push_str(&format!(
        "  # - path: /etc/myapp/secrets.env\n  #   format: dotenv\n  #   mode: \"0640\"\n  #   folder: {folder}\n  #   on_change: [systemctl, try-reload-or-restart, myapp.service]\n",
    ));
    if let Some(r) =
        readable.and_then(|r| r.iter().filter(has_password).find(|r| r.username.is_some()))
    {
        t.push_str(&format!(
            "  # - path: /etc/myapp/db.json\n  #   format: json\n  #   vars:\n  #     DB_USER: {{ resource: {id}, field: username }}\n  #     DB_PASSWORD: {{ resource: {id} }}\n",
            id = r.id
        ));
    }
    t
}

/// A folder path as a YAML scalar: quoted when plain style could misread it.
fn yaml_scalar(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}
