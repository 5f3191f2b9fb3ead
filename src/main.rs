//! The `passbolt-sync` binary: arguments, logging, exit codes.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use passbolt_sync::cli::get;
use passbolt_sync::cli::{self, AppError};
use passbolt_sync::config::Config;
use passbolt_sync::runtime::captured;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "passbolt-sync",
    version,
    about = "Keeps secrets from a passbolt server in sync with files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More logs (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Fewer logs (warnings and errors only).
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum EnvFormat {
    Dotenv,
    Json,
    Shell,
}

#[derive(Clone, Copy, ValueEnum)]
enum InitFormat {
    Dotenv,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: first full sync, READY to systemd, then scheduled syncs and rotations
    ///
    /// Edits of the config file are picked up while it runs (live reload), and
    /// SIGHUP (systemctl reload) re-reads it too: the new config is validated
    /// whole, then swapped in; a broken edit is logged and the running config
    /// stays. SIGTERM or SIGINT stop it. The rotate: entries are checked at
    /// every tick and when one falls due (see the README, "Rotation").
    Run {
        /// The config file (YAML; see sync.example.yaml)
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: PathBuf,
    },
    /// One full sync, then exit: 0 when every target is current, 1 when any failed, 2 for a config error
    Once {
        /// The config file (YAML; see sync.example.yaml)
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: PathBuf,
        /// Show what would change (create, update with variable names, unchanged) and when each rotation is due; write nothing, rotate nothing, print no value
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a program with the exec: variables in its environment; restart it when they change
    ///
    /// Does everything `run` does (schedules, reloads, file targets) and
    /// starts COMMAND once the first sync is complete. SIGHUP reloads the
    /// config; SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH go to
    /// the child. Exits with the child's status (128+N for signal N).
    Exec {
        /// The config file (YAML; see sync.example.yaml)
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: PathBuf,
        /// The program and its arguments, after `--` (default: exec.command)
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Print one field of one resource, exactly, with no newline added
    Get {
        /// The config file (YAML; see sync.example.yaml)
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: PathBuf,
        /// A resource id, a name, or Folder/Name
        selector: String,
        /// The field: password (default), username, uri, description, totp, pin, custom:LABEL, ...
        #[arg(long, value_name = "F")]
        field: Option<String>,
        /// Write the value to FILE (atomically, mode 0600) instead of stdout
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Log in even when the daemon of this config could answer
        #[arg(long)]
        no_agent: bool,
    },
    /// Change one field of a resource's secret in passbolt, for every user who has access
    ///
    /// Reads the current secret, changes the one field, encrypts the whole
    /// secret to every active user with access (directly or through a
    /// group; each key checked), and writes it only if nobody changed the
    /// resource since it was read; then reads it back and checks it. The
    /// value is never printed unless --print is given.
    Set {
        /// The config file (YAML; see sync.example.yaml)
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: PathBuf,
        /// A resource id, a name, or Folder/Name
        selector: String,
        /// The field: password (default), description, note, pin, totp, custom:LABEL
        #[arg(long, value_name = "F")]
        field: Option<String>,
        /// Read the new value from FILE (one trailing newline dropped)
        #[arg(long, value_name = "FILE", group = "value")]
        value_file: Option<PathBuf>,
        /// Read the new value from standard input (one trailing newline dropped)
        #[arg(long, group = "value")]
        stdin: bool,
        /// Generate the value: the organisation's password policy, at least 128 bits
        #[arg(long, group = "value")]
        generate: bool,
        /// Print the new value on stdout (the report then goes to stderr)
        #[arg(long)]
        print: bool,
    },
    /// Create a resource in passbolt (v5 when the server's settings ask for it), share it, print its id
    ///
    /// The resource gets the server's default format: v5 with the shared
    /// metadata key when the organisation's metadata settings ask for it, v4
    /// otherwise. It is then shared read-only with the users and groups
    /// named, the secret encrypted for each new user. A resource of the same
    /// name in that folder is an error, unless --if-missing: then its id is
    /// printed and nothing changes.
    Create {
        /// The config file (YAML; see sync.example.yaml)
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: PathBuf,
        /// The resource's name
        #[arg(long)]
        name: String,
        /// The folder path (Parent/Child); the root by default
        #[arg(long, value_name = "PATH")]
        folder: Option<String>,
        #[arg(long, value_name = "U")]
        username: Option<String>,
        #[arg(long, value_name = "U")]
        uri: Option<String>,
        /// Read the password from FILE (one trailing newline dropped)
        #[arg(long, value_name = "FILE", group = "value")]
        value_file: Option<PathBuf>,
        /// Read the password from standard input (one trailing newline dropped)
        #[arg(long, group = "value")]
        stdin: bool,
        /// Generate the password: the organisation's policy, at least 128 bits
        #[arg(long, group = "value")]
        generate: bool,
        /// Share read-only with this group (repeatable)
        #[arg(long, value_name = "G")]
        share_group: Vec<String>,
        /// Share read-only with this user, by e-mail (repeatable)
        #[arg(long, value_name = "EMAIL")]
        share_user: Vec<String>,
        /// If a resource of this name exists in the folder, print its id and change nothing
        #[arg(long)]
        if_missing: bool,
        /// Print the password after the id (on stdout, only when created)
        #[arg(long)]
        print: bool,
    },
    /// Print the exec: variables resolved (e.g. eval "$(passbolt-sync env --format shell)")
    Env {
        /// The config file (YAML; see sync.example.yaml)
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = EnvFormat::Dotenv)]
        format: EnvFormat,
        /// Log in even when the daemon of this config could answer
        #[arg(long)]
        no_agent: bool,
    },
    /// Validate the config; --online also logs in and resolves every mapping
    Check {
        /// The config file (YAML; see sync.example.yaml)
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        online: bool,
    },
    /// List what the account can read: id, name, username, type, folder (never a secret)
    Resources {
        /// The config file (YAML; see sync.example.yaml)
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon's last pass per target and its rotations, from its status file: exit 0 when every target is current and no rotation failed or waits, 1 otherwise, 3 when there is no status file
    ///
    /// The status file is the config's status_file, else
    /// $RUNTIME_DIRECTORY/status.json, else /run/passbolt-sync/status.json
    /// (the systemd unit's). A status written by a daemon that no longer
    /// runs is shown, marked stale, and exits 1.
    Status {
        /// The config file, for its status_file
        #[arg(short, long, env = "PASSBOLT_SYNC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write a config directory (key, passphrase, sync.yaml) from a passbolt account kit
    Init {
        /// The account kit file the browser extension exports (Profile > Desktop app setup)
        #[arg(long, value_name = "FILE")]
        account_kit: PathBuf,
        /// Where to write private.asc, passphrase and sync.yaml
        #[arg(long, value_name = "DIR", default_value = passbolt_sync::cli::init::DEFAULT_DIR)]
        dir: PathBuf,
        /// The key's passphrase (one line); copied into DIR, then used to log in once and list what the account can read
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// The account's TOTP seed (base32 or otpauth:// URI), for an account under an MFA policy; copied into DIR as totp
        #[arg(long, value_name = "FILE")]
        totp_secret_file: Option<PathBuf>,
        /// Overwrite files that already exist in DIR
        #[arg(long)]
        force: bool,
        /// A first target: every resource of this passbolt folder (e.g. Production/myapp) ...
        #[arg(long, value_name = "F", requires = "target")]
        folder: Option<String>,
        /// ... written to this file ...
        #[arg(long, value_name = "PATH", requires = "folder")]
        target: Option<PathBuf>,
        /// ... in this format
        #[arg(long, value_enum, default_value_t = InitFormat::Dotenv, requires = "folder")]
        format: InitFormat,
    },
    /// Start the built-in dev server with sample data and sync a sample config against it
    Demo {
        /// Scratch folder for keys, configs and output (default: a new temporary folder)
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the dev server running after the demo
        #[arg(long)]
        serve: bool,
        /// Also seed N generated resources (500 to a folder Generated/gen-000, ...)
        #[arg(long, value_name = "N", default_value_t = 0, requires = "serve")]
        resources: usize,
    },
    /// Print a shell completion script (e.g. passbolt-sync completions bash > /etc/bash_completion.d/passbolt-sync)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into DIR (for packagers)
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn init_logging(cli: &Cli) {
    // `get` and `env` print for scripts: their progress is not news.
    let scripted = matches!(
        cli.command,
        Command::Get { .. } | Command::Env { .. } | Command::Set { .. } | Command::Create { .. }
    );
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) if scripted => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // Our crates (the binary and its passbolt client) at the chosen level,
    // dependencies one step quieter unless RUST_LOG says otherwise.
    let default = if cli.verbose >= 2 {
        "trace".to_string()
    } else {
        format!("warn,passbolt_sync={level},passbolt_client={level}")
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // journald stamps every line itself.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match (cli.log_format, journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).init(),
        (LogFormat::Text, true) => builder
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .init(),
        (LogFormat::Text, false) => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
}

/// Where `set` and `create` take the value from; `None` when no source
/// was given.
fn value_source(
    file: Option<PathBuf>,
    stdin: bool,
    generate: bool,
) -> Option<cli::set::ValueSource> {
    match (file, stdin, generate) {
        (Some(path), _, _) => Some(cli::set::ValueSource::File(path)),
        (None, true, _) => Some(cli::set::ValueSource::Stdin),
        (None, false, true) => Some(cli::set::ValueSource::Generate),
        (None, false, false) => None,
    }
}

/// Prints `e` and returns its exit code.
fn fail(e: &dyn std::fmt::Display, code: i32) -> i32 {
    eprintln!("passbolt-sync: {e}");
    code
}

/// Runs the command; returns the process's exit status.
fn via(no_agent: bool) -> get::Via {
    if no_agent {
        get::Via::Login
    } else {
        get::Via::Agent
    }
}

async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Exec { config, command } => {
            match passbolt_sync::agent::exec::run(config, command).await {
                Ok(code) => code,
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Get {
            config,
            selector,
            field,
            output,
            no_agent,
        } => {
            let result = async {
                let file = cli::load_config_file(&config)?;
                let mut stdout = std::io::stdout();
                let to = match output {
                    Some(path) => get::Destination::File(path),
                    None => get::Destination::Stdout(&mut stdout),
                };
                get::get(&file, &selector, field.as_deref(), to, via(no_agent)).await
            };
            match result.await {
                Ok(()) => 0,
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Set {
            config,
            selector,
            field,
            value_file,
            stdin,
            generate,
            print,
        } => {
            let Some(source) = value_source(value_file, stdin, generate) else {
                return fail(
                    &"set needs the new value: --value-file FILE, --stdin or --generate",
                    2,
                );
            };
            let result = async {
                let value = cli::set::read_value(&source, &mut std::io::stdin())?;
                let cfg = cli::load_config(&config).map_err(cli::set::SetError::App)?;
                let mut stdout = std::io::stdout();
                let mut stderr = std::io::stderr();
                if print {
                    cli::set::set(
                        &cfg,
                        &selector,
                        field.as_deref(),
                        value,
                        Some(&mut stdout),
                        &mut stderr,
                    )
                    .await
                } else {
                    cli::set::set(&cfg, &selector, field.as_deref(), value, None, &mut stdout).await
                }
            };
            match result.await {
                Ok(_) => 0,
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Create {
            config,
            name,
            folder,
            username,
            uri,
            value_file,
            stdin,
            generate,
            share_group,
            share_user,
            if_missing,
            print,
        } => {
            let Some(source) = value_source(value_file, stdin, generate) else {
                return fail(
                    &"create needs the password: --value-file FILE, --stdin or --generate",
                    2,
                );
            };
            let args = cli::create::CreateArgs {
                name: &name,
                folder: folder.as_deref(),
                username: username.as_deref(),
                uri: uri.as_deref(),
                share_groups: &share_group,
                share_users: &share_user,
                if_missing,
            };
            let result = async {
                let value = cli::set::read_value(&source, &mut std::io::stdin())
                    .map_err(cli::create::CreateError::Set)?;
                let cfg = cli::load_config(&config)?;
                let mut stdout = std::io::stdout();
                let mut extra = std::io::stdout();
                let print: Option<&mut dyn Write> = if print { Some(&mut extra) } else { None };
                cli::create::create(&cfg, &args, value, &mut stdout, print).await
            };
            match result.await {
                Ok(_) => 0,
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Env {
            config,
            format,
            no_agent,
        } => {
            if std::io::stdout().is_terminal() {
                eprintln!(
                    "passbolt-sync: warning: printing secret values to a terminal; they stay in its scrollback"
                );
            }
            let format = match format {
                EnvFormat::Dotenv => get::EnvFormat::Dotenv,
                EnvFormat::Json => get::EnvFormat::Json,
                EnvFormat::Shell => get::EnvFormat::Shell,
            };
            let result = async {
                let file = cli::load_config_file(&config)?;
                get::env(&file, format, &mut std::io::stdout(), via(no_agent)).await
            };
            match result.await {
                Ok(()) => 0,
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Status { config } => status(
            async {
                let cfg = config.as_deref().map(cli::load_config).transpose()?;
                Ok(passbolt_sync::cli::status::command(
                    cfg.as_ref(),
                    &mut std::io::stdout(),
                )?)
            }
            .await,
        ),
        Command::Run { config } => status(
            passbolt_sync::agent::run::run(config)
                .await
                .map_err(AppError::from),
        ),
        Command::Once { config, dry_run } => status(
            async {
                // No instance lock, so that it can run beside the daemon: see `lock`.
                let cfg = cli::load_config(&config)?;
                cli::once_with_state(&cfg, Some(&config), dry_run, &mut std::io::stdout()).await
            }
            .await,
        ),
        Command::Check { config, online } => status(
            async {
                let cfg = cli::load_config(&config)?;
                cli::check(&cfg, &config, online, &mut std::io::stdout()).await
            }
            .await,
        ),
        Command::Resources { config, json } => status(
            async {
                let cfg = cli::load_config(&config)?;
                cli::resources(&cfg, json, &mut std::io::stdout()).await
            }
            .await
            .map(|()| true),
        ),
        Command::Init {
            account_kit,
            dir,
            passphrase_file,
            totp_secret_file,
            force,
            folder,
            target,
            format,
        } => {
            let opts = passbolt_sync::cli::init::InitOptions {
                account_kit,
                dir,
                passphrase_file,
                totp_secret_file,
                force,
                folder,
                target,
                format: match format {
                    InitFormat::Dotenv => passbolt_sync::config::Format::Dotenv,
                    InitFormat::Json => passbolt_sync::config::Format::Json,
                },
            };
            status(passbolt_sync::cli::init::run(&opts, &mut std::io::stdout()).await)
        }
        Command::Completions { shell } => {
            let mut stdout = std::io::stdout();
            clap_complete::generate(shell, &mut Cli::command(), "passbolt-sync", &mut stdout);
            0
        }
        Command::Man { dir } => {
            let written = match &dir {
                Some(d) => passbolt_sync::cli::manpage::write_pages(Cli::command(), d).map(|_| ()),
                None => {
                    passbolt_sync::cli::manpage::main_page(Cli::command(), &mut std::io::stdout())
                }
            };
            match written {
                Ok(()) => 0,
                Err(e) => fail(&format!("cannot write the man page: {e}"), 1),
            }
        }
        Command::Demo {
            dir,
            serve,
            resources,
        } => status(demo(dir, serve, resources).await),
    }
}

/// The exit status of a command that reports whether everything is current.
fn status(result: Result<bool, AppError>) -> i32 {
    match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => fail(&e, e.exit_code()),
    }
}

async fn demo(dir: Option<PathBuf>, serve: bool, resources: usize) -> Result<bool, AppError> {
    let mut stdout = std::io::stdout();
    let (dir, scratch) = match dir {
        Some(d) => (d, false),
        None => {
            // Kept: the paths and commands the demo prints must
            // still work after it ends.
            let t = tempfile::Builder::new()
                .prefix("passbolt-sync-demo.")
                .tempdir()
                .map_err(|e| AppError::Other(format!("cannot create a scratch folder: {e}")))?;
            (t.keep(), true)
        }
    };
    let ok = passbolt_sync::cli::demo::run(&dir, serve, resources, &mut stdout).await?;
    if scratch {
        let _ = writeln!(
            stdout,
            "\nthe scratch folder {d} stays (demo keys, configs, sample output): rm -r {d} removes it; --dir DIR picks another",
            d = dir.display()
        );
    }
    Ok(ok)
}

/// Takes `auth.passphrase_env` and `auth.totp_secret_env` out of the environment (see
/// `runtime::captured`). A config that cannot be loaded is skipped: the
/// command reports it.
fn capture_passphrase(command: &Command) {
    let (Command::Run { config }
    | Command::Exec { config, .. }
    | Command::Get { config, .. }
    | Command::Set { config, .. }
    | Command::Create { config, .. }
    | Command::Env { config, .. }
    | Command::Once { config, .. }
    | Command::Check { config, .. }
    | Command::Resources { config, .. }) = command
    else {
        return;
    };
    let Ok(config) = Config::load(config) else {
        return;
    };
    for name in [config.auth.passphrase_env, config.auth.totp_secret_env]
        .into_iter()
        .flatten()
    {
        // SAFETY: called from `main` before the runtime (or anything else)
        // starts a thread.
        unsafe { captured::capture_passphrase_env(&name) };
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every command may hold the key, the passphrase or secrets in memory.
    if let Err(e) = passbolt_sync::runtime::process::harden() {
        eprintln!("passbolt-sync: {e}");
        return ExitCode::from(1);
    }
    // Only while this process has one thread can its environment change,
    // and its allocator be tuned.
    capture_passphrase(&cli.command);
    passbolt_sync::runtime::process::one_malloc_arena();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("passbolt-sync: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(cli));
    let _ = std::io::stdout().flush();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
