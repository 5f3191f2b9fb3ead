//! `NAME=value` files, in two dialects.
//!
//! # Portable
//!
//! One file that reads back byte-identically in bash (`set -a; . file`),
//! systemd `EnvironmentFile=` and python-dotenv (`dotenv_values`). The three
//! share only part of their quoting rules:
//!
//! * inside single quotes, bash and systemd take every byte literally, and
//!   python-dotenv also does except that it turns `\\` into `\` and `\'`
//!   into `'`. So single quotes carry any value without a `'`, without two
//!   backslashes in a row and without a backslash at the very end (which
//!   python-dotenv would read as escaping the closing quote).
//! * inside double quotes, all three turn `\\` into `\` and `\"` into `"`.
//!   bash expands `$` and backticks there, and the only way to stop it (a
//!   backslash) is kept verbatim by python-dotenv. So double quotes (with
//!   `\` and `"` escaped) carry any value without `$` or a backtick.
//! * python-dotenv reads no concatenation of quoted parts (`'a'"b"`), so a
//!   value is one quoted string: single quotes when they can carry it,
//!   double quotes otherwise.
//!
//! What neither can carry is refused with [`RenderError::Unrepresentable`]:
//! a value with a `'` (or `\\`) and also a `$` or backtick; a value ending in
//! a backslash; a value containing `${...}`, which python-dotenv replaces
//! with another variable even inside single quotes; a carriage return, which
//! python-dotenv reads as a newline; a NUL byte.
//!
//! # Docker
//!
//! `docker run --env-file` takes everything after the first `=` literally
//! and has no quoting and no multi-line values, while docker compose's
//! `env_file:` strips whitespace, reads quotes, expands `$` and cuts ` #`
//! comments. Values are written unquoted and refused when the two readers
//! would disagree. (compose releases from before late 2022 cut a value at
//! any `#`, not only after whitespace; values with `#` are not safe there.)

use std::collections::HashSet;

use zeroize::Zeroizing;

use super::RenderError;
pub use crate::config::values::Dialect;
use crate::config::values::var_name_problem;
use passbolt_client::secret::Secret;

/// `docker`'s env-file reader fails on lines of 64 KiB or more.
const DOCKER_MAX_LINE: usize = 64 * 1024 - 1;

/// Checks that `name` matches `[A-Za-z_][A-Za-z0-9_]*`, the names that
/// every reader accepts.
pub fn validate_name(name: &str) -> Result<(), RenderError> {
    match var_name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(RenderError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
    }
}

/// A valid variable name made from a resource name: upper-cased, with every
/// character other than an ASCII letter or digit turned into `_`, and a `_`
/// in front when it would otherwise start with a digit or be empty.
pub fn derive_name(resource_name: &str) -> String {
    let mut name: String = resource_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Renders `vars` as one `NAME=value` line each, in order, with a trailing
/// newline. Names must be valid and unique.
pub fn render(
    vars: &[(String, Secret)],
    dialect: Dialect,
) -> Result<Zeroizing<Vec<u8>>, RenderError> {
    let mut seen = HashSet::with_capacity(vars.len());
    let mut quoting = Vec::with_capacity(vars.len());
    for (name, value) in vars {
        validate_name(name)?;
        if !seen.insert(name.as_str()) {
            return Err(RenderError::DuplicateName { var: name.clone() });
        }
        let value = value.expose();
        let q = match dialect {
            Dialect::Portable => portable_quoting(value),
            Dialect::Docker => docker_check(name, value).map(|()| Quoting::None),
        };
        quoting.push(q.map_err(|reason| RenderError::Unrepresentable {
            var: name.clone(),
            reason,
        })?);
    }

    // Sized up front so the buffer never reallocates and leaves copies of
    // secrets behind in freed memory.
    let capacity = vars
        .iter()
        .map(|(n, v)| n.len() + 4 + 2 * v.expose().len())
        .sum();
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    for ((name, value), q) in vars.iter().zip(quoting) {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        let value = value.expose().as_bytes();
        match q {
            Quoting::None => out.extend_from_slice(value),
            Quoting::Single => {
                out.push(b'\'');
                out.extend_from_slice(value);
                out.push(b'\'');
            }
            Quoting::Double => {
                out.push(b'"');
                for &b in value {
                    if b == b'\\' || b == b'"' {
                        out.push(b'\\');
                    }
                    out.push(b);
                }
                out.push(b'"');
            }
        }
        out.push(b'\n');
    }
    Ok(out)
}

enum Quoting {
    None,
    Single,
    Double,
}

fn portable_quoting(value: &str) -> Result<Quoting, &'static str> {
    if value.contains('\0') {
        return Err("it contains a NUL byte, which no environment variable can hold");
    }
    if value.contains('\r') {
        return Err("it contains a carriage return, which python-dotenv reads as a newline");
    }
    if has_python_dotenv_interpolation(value) {
        return Err(
            "it contains `${...}`, which python-dotenv replaces with another variable even inside quotes",
        );
    }
    if value.ends_with('\\') {
        return Err(
            "it ends with a backslash, which python-dotenv reads as escaping the closing quote",
        );
    }
    if !value.contains('\'') && !value.contains("\\\\") {
        return Ok(Quoting::Single);
    }
    if !value.contains(['$', '`']) {
        return Ok(Quoting::Double);
    }
    Err(
        "it contains a single quote or two backslashes in a row, which need double quotes, \
         and also `$` or a backtick, which bash expands inside double quotes while python-dotenv \
         keeps the backslash that would escape them",
    )
}

/// Whether python-dotenv's `${NAME}` / `${NAME:-default}` expansion, which
/// it applies to every value after unquoting, finds a match in `value`.
fn has_python_dotenv_interpolation(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut from = 0;
    while let Some(pos) = find(&bytes[from..], b"${") {
        let rest = &bytes[from + pos + 2..];
        let matched = match rest.iter().position(|&b| b == b'}' || b == b':') {
            Some(end) if rest[end] == b'}' => true,
            Some(colon) => rest[colon + 1..].starts_with(b"-") && rest[colon + 2..].contains(&b'}'),
            None => false,
        };
        if matched {
            return true;
        }
        from += pos + 1;
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn docker_check(name: &str, value: &str) -> Result<(), &'static str> {
    if value.contains('\0') {
        return Err("it contains a NUL byte, which no environment variable can hold");
    }
    if value.contains(['\n', '\r']) {
        return Err("it contains a line break, and docker env files have one variable per line");
    }
    if value.starts_with(char::is_whitespace) {
        return Err("it starts with whitespace, which docker compose strips");
    }
    if value.ends_with(char::is_whitespace) {
        return Err("it ends with whitespace, which docker compose strips");
    }
    if value.starts_with(['\'', '"']) {
        return Err("it starts with a quote, which docker compose reads as quoting");
    }
    if value.contains('$') {
        return Err("it contains `$`, which docker compose expands and docker run keeps");
    }
    let mut prev_space = false;
    for c in value.chars() {
        if prev_space && c == '#' {
            return Err(
                "it contains `#` after whitespace, which docker compose reads as a comment",
            );
        }
        prev_space = c.is_whitespace();
    }
    if name.len() + 1 + value.len() > DOCKER_MAX_LINE {
        return Err("the line would exceed the 64 KiB limit of docker's env-file reader");
    }
    Ok(())
}

/// Reads a dotenv file written in the portable dialect, in file order.
///
/// Parsing is dotenvy's, which reads everything [`render`] writes exactly;
/// on hand-written files it may differ from other readers, which is fine
/// for its purpose: telling which variables changed.
pub fn parse(bytes: &[u8]) -> Result<Vec<(String, Secret)>, RenderError> {
    parse_with(bytes, Dialect::Portable)
}

/// Reads a dotenv file as the given dialect's consumers would.
pub fn parse_with(bytes: &[u8], dialect: Dialect) -> Result<Vec<(String, Secret)>, RenderError> {
    match dialect {
        Dialect::Portable => parse_portable(bytes),
        Dialect::Docker => parse_docker(bytes),
    }
}

fn parse_portable(bytes: &[u8]) -> Result<Vec<(String, Secret)>, RenderError> {
    let mut vars = Vec::new();
    for (i, item) in dotenvy::from_read_iter(bytes).enumerate() {
        match item {
            Ok((name, value)) => vars.push((name, Secret::new(value))),
            // dotenvy's error carries the offending line, secret included,
            // so only its kind survives.
            Err(e) => {
                let reason = match e {
                    dotenvy::Error::Io(_) => "not UTF-8 text",
                    _ => "not a valid assignment",
                };
                return Err(RenderError::Parse {
                    entry: i + 1,
                    reason,
                });
            }
        }
    }
    Ok(vars)
}

/// `docker run --env-file` semantics: leading whitespace and `#` lines are
/// skipped, the value is everything after the first `=`.
fn parse_docker(bytes: &[u8]) -> Result<Vec<(String, Secret)>, RenderError> {
    let text = std::str::from_utf8(bytes).map_err(|_| RenderError::Parse {
        entry: 1,
        reason: "not UTF-8 text",
    })?;
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((name, value)) if !name.is_empty() && !name.contains([' ', '\t']) => {
                vars.push((name.to_owned(), Secret::new(value)));
            }
            _ => {
                return Err(RenderError::Parse {
                    entry: i + 1,
                    reason: "not a NAME=value line",
                });
            }
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str, dialect: Dialect) -> Result<String, RenderError> {
        render(&[(name.to_owned(), Secret::new(value))], dialect)
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn names() {
        for ok in ["A", "_", "_1", "abc_DEF_09"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "1A", "A-B", "A B", "É", "A=B"] {
            assert!(matches!(
                validate_name(bad),
                Err(RenderError::InvalidName { .. })
            ));
        }
        assert_eq!(derive_name("db password"), "DB_PASSWORD");
        assert_eq!(derive_name("api-key.v2"), "API_KEY_V2");
        assert_eq!(derive_name("1password"), "_1PASSWORD");
        assert_eq!(derive_name("clé"), "CL_");
        assert_eq!(derive_name(""), "_");
        for n in ["db password", "1x", "", "ü-ß"] {
            validate_name(&derive_name(n)).unwrap();
        }
    }

    #[test]
    fn portable_picks_single_then_double_quotes() {
        let p = Dialect::Portable;
        assert_eq!(one("A", "plain", p).unwrap(), "A='plain'\n");
        assert_eq!(one("A", "", p).unwrap(), "A=''\n");
        assert_eq!(one("A", "a$b`c\\d", p).unwrap(), "A='a$b`c\\d'\n");
        assert_eq!(one("A", "it's", p).unwrap(), "A=\"it's\"\n");
        assert_eq!(one("A", "x\\\\y\"z", p).unwrap(), "A=\"x\\\\\\\\y\\\"z\"\n");
    }

    #[test]
    fn portable_refusals_name_the_variable() {
        for value in [
            "it's $HOME",
            "a\\",
            "x${Y}z",
            "${Y:-d}",
            "cr\r",
            "nul\0",
            "'`",
        ] {
            let err = one("MY_VAR", value, Dialect::Portable).unwrap_err();
            assert!(matches!(&err, RenderError::Unrepresentable { var, .. } if var == "MY_VAR"));
            assert!(err.to_string().contains("MY_VAR"));
        }
        // Near misses of python-dotenv's expansion pattern are fine.
        for value in ["${", "$}", "${a:b}", "${a:-b", "$HOME", "{}"] {
            one("A", value, Dialect::Portable).unwrap();
        }
    }

    #[test]
    fn duplicates_and_bad_names_are_refused() {
        let vars = [
            ("A".to_owned(), Secret::new("1")),
            ("A".to_owned(), Secret::new("2")),
        ];
        assert!(matches!(
            render(&vars, Dialect::Portable),
            Err(RenderError::DuplicateName { var }) if var == "A"
        ));
        let vars = [("A-B".to_owned(), Secret::new("1"))];
        assert!(matches!(
            render(&vars, Dialect::Docker),
            Err(RenderError::InvalidName { .. })
        ));
    }

    #[test]
    fn dialect_from_config_strings() {
        let d: Dialect = serde_json::from_str("\"docker\"").unwrap();
        assert_eq!(d, Dialect::Docker);
        let d: Dialect = serde_json::from_str("\"portable\"").unwrap();
        assert_eq!(d, Dialect::Portable);
        assert!(serde_json::from_str::<Dialect>("\"Docker\"").is_err());
        assert_eq!(Dialect::default(), Dialect::Portable);
    }
}
