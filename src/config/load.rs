//! Reading a config file: YAML errors with their line and column and a
//! suggestion for a misspelt key, and the checks that span targets.

use std::path::{Path, PathBuf};

use super::*;
use crate::runtime::schedule::Schedule;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` names it in errors and anchors relative
    /// paths (a template next to the config).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config =
            serde_yaml::from_str(text).map_err(|e| yaml_error(path, text, &e))?;
        config.check_targets(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Relative paths are relative to the config file; paths under
        // ${CREDENTIALS_DIRECTORY} are expanded when read.
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() && !p.starts_with("${CREDENTIALS_DIRECTORY}") {
                *p = base.join(&*p);
            }
        };
        for t in &mut config.targets {
            if let Source::Template(tpl) = &mut t.source {
                anchor(tpl);
            }
        }
        anchor(&mut config.auth.private_key_file);
        if let Some(p) = &mut config.auth.passphrase_file {
            anchor(p);
        }
        if let Some(p) = &mut config.auth.totp_secret_file {
            anchor(p);
        }
        if let Some(p) = &mut config.server.ca_file {
            anchor(p);
        }
        if let Some(p) = config.metrics.as_mut().and_then(|m| m.textfile.as_mut()) {
            anchor(p);
        }
        if let StatusFile::Path(p) = &mut config.status_file {
            anchor(p);
        }
        if let Some(p) = &mut config.state_dir {
            anchor(p);
        }
        for p in [
            &mut config.server.client_cert_file,
            &mut config.server.client_key_file,
        ]
        .into_iter()
        .flatten()
        {
            anchor(p);
        }
        Ok(config)
    }

    fn check_targets(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::InvalidNoPosition {
            path: path.to_path_buf(),
            message,
        };
        if self.server.client_cert_file.is_some() != self.server.client_key_file.is_some() {
            return Err(invalid(
                "server: give both `client_cert_file` and `client_key_file`, or neither".into(),
            ));
        }
        if self.auth.passphrase_file.is_some() && self.auth.passphrase_env.is_some() {
            return Err(invalid(
                "auth: give `passphrase_file` or `passphrase_env`, not both".into(),
            ));
        }
        if self.auth.totp_secret_file.is_some() && self.auth.totp_secret_env.is_some() {
            return Err(invalid(
                "auth: give `totp_secret_file` or `totp_secret_env`, not both".into(),
            ));
        }
        if let Some(exec) = &self.exec
            && exec.field.is_some()
            && exec.folder.is_none()
        {
            return Err(invalid(
                "exec: `field` applies to a whole `folder`; each variable has its own `field`"
                    .into(),
            ));
        }
        let mut rotated = std::collections::HashSet::new();
        for r in &self.rotate {
            if !rotated.insert(r.key()) {
                return Err(invalid(format!(
                    "rotate: the {r} appears twice; one entry per resource and field"
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.targets {
            if t.path == Path::new(values::EXEC_ENV_KEY) {
                return Err(invalid(format!(
                    "target {}: that name is taken by the exec environment; give the file another path",
                    t.path.display()
                )));
            }
            if !seen.insert(&t.path) {
                return Err(invalid(format!(
                    "target {} appears twice: two targets cannot write one file",
                    t.path.display()
                )));
            }
            let expr = t.schedule.as_ref().or(self.schedule.as_ref());
            let tz = t.timezone.as_deref().or(self.timezone.as_deref());
            if let Some(expr) = expr {
                Schedule::parse(&expr.0, tz)
                    .map_err(|e| invalid(format!("target {}: schedule: {e}", t.path.display())))?;
            }
        }
        Ok(())
    }

    /// The schedule of a target: its own, else the global one, else every 5 minutes.
    pub fn schedule_of(&self, target: &Target) -> Schedule {
        let expr = target
            .schedule
            .as_ref()
            .or(self.schedule.as_ref())
            .map(|s| s.0.as_str())
            .unwrap_or(DEFAULT_SCHEDULE);
        let tz = target.timezone.as_deref().or(self.timezone.as_deref());
        Schedule::parse(expr, tz).expect("schedules are validated when the config is loaded")
    }

    /// The schedule of the exec environment: the global one, else every 5
    /// minutes.
    pub fn exec_schedule(&self) -> Schedule {
        let expr = self
            .schedule
            .as_ref()
            .map(|s| s.0.as_str())
            .unwrap_or(DEFAULT_SCHEDULE);
        Schedule::parse(expr, self.timezone.as_deref())
            .expect("schedules are validated when the config is loaded")
    }
}

/// "unknown field `mdoe`, expected one of `path`, `mode`, ..." (serde's
/// wording, also for enum variants) as "unknown field `mdoe`; did you mean
/// `mode`?" when one valid name is close; `None` to keep the message.
pub(super) fn suggest(message: &str) -> Option<String> {
    let (head, expected) = message.split_once(", expected ")?;
    let start = head
        .find("unknown field `")
        .or_else(|| head.find("unknown variant `"))?;
    let given = head[start..].split('`').nth(1)?;
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|valid| (strsim::damerau_levenshtein(given, valid), valid))
        .min_by_key(|(distance, _)| *distance)?;
    // Close enough to be the same word mistyped (`mdoe`, `formt`, `rwa`):
    // a third of its letters; otherwise serde's list stays.
    (best.0 <= (best.1.chars().count() / 3).max(1))
        .then(|| format!("{head}; did you mean `{}`?", best.1))
}

/// A target's own checks run once the whole target is read, and serde
/// then reports the position of the list: the error names the target's
/// path, so point at that target's `path:` line instead.
pub(super) fn target_position(text: &str, message: &str) -> Option<(usize, usize)> {
    let rest = message.split_once("target ")?.1;
    text.lines().enumerate().find_map(|(n, line)| {
        let body = line.trim_start();
        let body = body.strip_prefix("- ").map(str::trim_start).unwrap_or(body);
        let value = body.strip_prefix("path:")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        let named = rest.strip_prefix(value)?;
        named
            .starts_with(": ")
            .then(|| (n + 1, line.len() - body.len() + 1))
    })
}

pub(super) fn yaml_error(path: &Path, source: &str, e: &serde_yaml::Error) -> ConfigError {
    let text = e.to_string();
    match e.location() {
        Some(loc) => {
            // serde_yaml appends " at line L column C"; we put the position first.
            let message = match text.rfind(" at line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let message = suggest(&message).unwrap_or(message);
            let (line, column) = message
                .starts_with("targets: target ")
                .then(|| target_position(source, &message))
                .flatten()
                .unwrap_or((loc.line(), loc.column()));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        }
        None => ConfigError::InvalidNoPosition {
            path: path.to_path_buf(),
            message: text,
        },
    }
}
