//! Value types that the schema and the code built from it share: a hook
//! command, a dotenv dialect, a file mode, a variable name, and the keys and
//! defaults both sides name. They live here, below the sync pass, so that
//! the schema depends on nothing that is built from it.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// The default of `full_sync_every`.
pub const DEFAULT_FULL_SYNC_EVERY: Duration = Duration::from_secs(3600);

/// The name under which the exec environment is scheduled, held and
/// reported, as a target's path would be. It is never a file.
pub const EXEC_ENV_KEY: &str = "exec.env";

/// By absolute path, so that the daemon's PATH has no say in what runs as
/// root.
pub const SHELL: &str = "/bin/sh";

/// A command as written in the configuration: a list is run as is (the
/// program looked up in PATH unless it is a path), a string through
/// `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HookCommand {
    Argv(Vec<String>),
    Shell(String),
}

impl HookCommand {
    /// The program that is started.
    pub fn program(&self) -> &str {
        match self {
            HookCommand::Argv(argv) => argv.first().map_or("", String::as_str),
            HookCommand::Shell(_) => SHELL,
        }
    }
}

impl fmt::Display for HookCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookCommand::Argv(argv) => write!(f, "{argv:?}"),
            HookCommand::Shell(script) => write!(f, "{SHELL} -c {script:?}"),
        }
    }
}

/// Which readers a dotenv file must satisfy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// bash `set -a; . file`, systemd `EnvironmentFile=`, python-dotenv.
    #[default]
    Portable,
    /// `docker run --env-file` and docker compose `env_file:`.
    Docker,
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dialect::Portable => "portable",
            Dialect::Docker => "docker",
        })
    }
}

/// Parses an octal mode such as `"0640"` or `"640"`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "invalid mode {s:?}: expected octal digits such as 0640"
        ));
    }
    match u32::from_str_radix(s, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!("invalid mode {s:?}: larger than 07777")),
    }
}

/// Why `name` is not a variable name every dotenv reader accepts
/// (`[A-Za-z_][A-Za-z0-9_]*`), or `None` when it is one.
pub fn var_name_problem(name: &str) -> Option<&'static str> {
    match name.as_bytes() {
        [] => Some("it is empty"),
        [first, ..] if first.is_ascii_digit() => Some("it starts with a digit"),
        bytes
            if bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            None
        }
        _ => Some("only ASCII letters, digits and `_` are allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("640"), Ok(0o640));
        assert_eq!(parse_mode("0"), Ok(0));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        assert_eq!(parse_mode("07777"), Ok(0o7777));
        for bad in [
            "",
            "0o640",
            "648",
            "-640",
            "10000",
            "0x1",
            " 640",
            "rw-r-----",
        ] {
            assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
        }
    }
}
