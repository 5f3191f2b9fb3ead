//! Man pages made from the CLI's own clap definitions, so they never drift
//! from the binary: one page per command, and on the main page the
//! sections clap knows nothing of (configuration, exit status, signals,
//! environment, files).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// The annotated config reference, as shipped: the man page's
/// CONFIGURATION section is this file, verbatim.
const EXAMPLE_CONFIG: &str = include_str!("../../sync.example.yaml");

/// Writes `passbolt-sync.1` and one `passbolt-sync-<command>.1` per
/// visible command into `dir`, returning the paths written.
pub fn write_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let cmd = built(cmd);
    let mut written = Vec::new();
    let main = dir.join(format!("{}.1", cmd.get_name()));
    let mut file = std::fs::File::create(&main)?;
    main_page(cmd.clone(), &mut file)?;
    file.flush()?;
    written.push(main);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(Man::new(sub.clone()).generate_to(dir)?);
    }
    Ok(written)
}

/// The main page: what clap renders, then the extra sections.
pub fn main_page(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let man = Man::new(built(cmd));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    extra_sections().to_writer(out)?;
    man.render_version_section(out)
}

/// The command as the pages describe it: built (so that subcommands know
/// their full names), without clap's `help` subcommand, which `--help`
/// covers.
fn built(cmd: clap::Command) -> clap::Command {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    cmd
}

fn extra_sections() -> Roff {
    let mut r = Roff::new();
    section(&mut r, "CONFIGURATION");
    r.text([
        roman("One YAML file maps passbolt resources to targets. Every key is shown below, "),
        roman("commented, as in "),
        italic("/usr/share/doc/passbolt-sync/examples/sync.example.yaml"),
        roman(". Edits are picked up while "),
        bold("run"),
        roman(" runs; "),
        bold("check"),
        roman(" validates a file offline, "),
        bold("check --online"),
        roman(" also logs in and resolves every mapping."),
    ]);
    r.control("nf", []);
    r.control("RS", ["4"]);
    for line in EXAMPLE_CONFIG.lines() {
        r.text([roman(line)]);
    }
    r.control("RE", []);
    r.control("fi", []);

    section(&mut r, "EXIT STATUS");
    let statuses = [
        (
            "0",
            "Success: every target is current (once, check), the daemon stopped on SIGTERM or SIGINT (run).",
        ),
        (
            "1",
            "A target could not be synced, the server could not be reached or refused the login, or another daemon holds this config. Files already in place are kept.",
        ),
        (
            "2",
            "The configuration is invalid: a syntax error, an unknown key, a mapping that cannot work, or a local file (key, passphrase, template, target directory) that is missing.",
        ),
        (
            "3",
            "status: there is no status file to read (the daemon has not written one, or status_file is off). status exits 1 when a target is not current or a rotation's last attempt did not end rotated.",
        ),
        (
            "set, create",
            "0 when the value was written and read back correctly (create: or the resource exists, with --if-missing); 1 when the server refused it (read-only access, a concurrent edit, a recipient key that is expired, revoked or unusable) or it failed, nothing half-written; 2 for an argument to fix (a metadata field for set, no value source, an empty value, an unknown folder, user or group for create).",
        ),
        (
            "exec",
            "The child's own exit status, or 128+N when a signal N ended it; 126 when the program cannot run, 127 when it is not found; 1 when the first sync did not bring every variable.",
        ),
    ];
    for (code, what) in statuses {
        tagged(&mut r, code, what);
    }

    section(&mut r, "SIGNALS");
    tagged(
        &mut r,
        "SIGHUP",
        "run: re-read the config file (systemctl reload). A broken edit is logged and the running config stays.",
    );
    tagged(
        &mut r,
        "SIGTERM, SIGINT",
        "run: let a pass in flight finish its writes, log out, and exit 0.",
    );
    tagged(
        &mut r,
        "SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH",
        "exec: forwarded to the child; when the child exits, exec logs out and exits with its status. SIGHUP re-reads the config, as in run.",
    );

    section(&mut r, "ENVIRONMENT");
    let env = [
        (
            "PASSBOLT_SYNC_CONFIG",
            "The config file, when -c/--config is not given.",
        ),
        (
            "RUST_LOG",
            "Log filter (tracing's EnvFilter syntax); overrides -v and -q.",
        ),
        (
            "CREDENTIALS_DIRECTORY",
            "Set by systemd for LoadCredential= and LoadCredentialEncrypted=; ${CREDENTIALS_DIRECTORY} in the config's auth paths expands to it.",
        ),
        (
            "PASSBOLT_SYNC_TARGET",
            "Set for on_change hooks: the target whose file changed. Hooks get the daemon's environment without the variable named by auth.passphrase_env, which is also removed from the daemon's own environment once read.",
        ),
        (
            "PASSBOLT_SYNC_RESOURCE_ID, PASSBOLT_SYNC_FIELD",
            "Set for a rotation's apply command: what it rotates. The old and the new value come on its stdin as one JSON line, never in its environment.",
        ),
        (
            "STATE_DIRECTORY",
            "Set by systemd for StateDirectory=: the state directory when the config has no state_dir.",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "Set by systemd for Type=notify and WatchdogSec=: READY=1 after the first complete sync, watchdog pings while no pass is stuck.",
        ),
    ];
    for (name, what) in env {
        tagged(&mut r, name, what);
    }

    section(&mut r, "FILES");
    let files = [
        (
            "/etc/passbolt-sync/sync.yaml",
            "The config file the packaged units use (directory mode 0700).",
        ),
        (
            "/etc/passbolt-sync/private.asc, /etc/passbolt-sync/passphrase",
            "The account's private key and its passphrase, handed to the service with LoadCredential= (0600, root only).",
        ),
        (
            "/run/passbolt-sync/",
            "The runtime directory of the service: status.json (the last pass of every target, for passbolt-sync status) and the lock that keeps a second daemon off the same config.",
        ),
        (
            "/var/lib/passbolt-sync/",
            "The state directory of the service (0700): targets-*.json (what each target holds, for warm restarts; never a value), rotated-*.json (when each rotation last stored a value) and, only between a rotation's apply and its store, rotation-<id>-<field>.json (0600: the old and the new value, so that a crash loses nothing; removed once stored).",
        ),
        (
            "/lib/systemd/system/passbolt-sync.service",
            "The daemon; passbolt-sync-once.service and passbolt-sync.timer run one sync on a timer instead.",
        ),
    ];
    for (path, what) in files {
        tagged(&mut r, path, what);
    }

    section(&mut r, "SEE ALSO");
    r.text([
        bold("systemd.exec"),
        roman("(5), "),
        bold("systemd-creds"),
        roman("(1), and "),
        italic("/usr/share/doc/passbolt-sync/README.md"),
        roman("."),
    ]);
    r
}

fn section(r: &mut Roff, title: &str) {
    r.control("SH", [title]);
}

/// A `.TP` paragraph: `tag` in bold, then its text indented.
fn tagged(r: &mut Roff, tag: &str, text: &str) {
    r.control("TP", []);
    r.text([bold(tag)]);
    r.text([roman(text)]);
}
