//! A program's environment: resolved variables as ordered name/value
//! pairs, for `exec` to hand to its child and for `env` to print.
//!
//! Nothing here starts a process or knows one exists: [`render`] checks
//! what an environment can carry, [`shell`] prints it for `eval`.

use std::fmt;

use zeroize::Zeroizing;

use super::RenderError;
use super::dotenv::validate_name;
use passbolt_client::secret::Secret;

/// Variables ready for an environment, in the order given: valid, unique
/// names and values without a NUL byte. Its `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: Vec<(String, Secret)>,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl Environment {
    pub fn vars(&self) -> &[(String, Secret)] {
        &self.vars
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(n, _)| n.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The names whose value differs between `self` and `new`, including
    /// names only one of them has, sorted. Values are compared, never
    /// shown.
    pub fn changed(&self, new: &Environment) -> Vec<String> {
        let value = |env: &Environment, name: &str| -> Option<Secret> {
            env.vars
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut names: Vec<String> = self
            .names()
            .chain(new.names())
            .filter(|n| value(self, n) != value(new, n))
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Checks `vars` for an environment: names as a dotenv file takes them
/// (`[A-Za-z_][A-Za-z0-9_]*`), each once, and no NUL byte in a value,
/// which `execve` would cut the value at.
pub fn render(vars: Vec<(String, Secret)>) -> Result<Environment, RenderError> {
    for (i, (name, value)) in vars.iter().enumerate() {
        validate_name(name)?;
        if vars[..i].iter().any(|(n, _)| n == name) {
            return Err(RenderError::DuplicateName { var: name.clone() });
        }
        if value.expose().contains('\0') {
            return Err(RenderError::Unrepresentable {
                var: name.clone(),
                reason: "an environment variable cannot hold a NUL byte",
            });
        }
    }
    Ok(Environment { vars })
}

/// `export NAME='value'` lines for a POSIX shell's `eval`: inside single
/// quotes every byte is literal, and a `'` is closed, escaped and
/// reopened (`'\''`).
pub fn shell(env: &Environment) -> Zeroizing<Vec<u8>> {
    let capacity = env
        .vars
        .iter()
        .map(|(n, v)| n.len() + 4 * v.expose().len() + 12)
        .sum();
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    for (name, value) in &env.vars {
        out.extend_from_slice(b"export ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        for b in value.expose().bytes() {
            if b == b'\'' {
                out.extend_from_slice(b"'\\''");
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(b"'\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Environment {
        render(
            vars.iter()
                .map(|(n, v)| (n.to_string(), Secret::new(*v)))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn names_are_checked_and_nul_refused() {
        let bad = |vars: Vec<(String, Secret)>| render(vars).unwrap_err().to_string();
        assert!(bad(vec![("1A".into(), Secret::new("x"))]).contains("1A"));
        assert!(
            bad(vec![
                ("A".into(), Secret::new("x")),
                ("A".into(), Secret::new("y"))
            ])
            .contains("more than once")
        );
        let nul = bad(vec![("A".into(), Secret::new("a\0b"))]);
        assert!(nul.contains("NUL") && !nul.contains("a\0b"), "{nul}");
    }

    #[test]
    fn debug_shows_names_only() {
        let e = env(&[("DB_PASSWORD", "hunter22")]);
        let shown = format!("{e:?}");
        assert!(shown.contains("DB_PASSWORD") && !shown.contains("hunter22"));
    }

    #[test]
    fn changed_names_the_variables_that_differ() {
        let old = env(&[("A", "1"), ("B", "2"), ("C", "3")]);
        let new = env(&[("A", "1"), ("B", "x"), ("D", "4")]);
        assert_eq!(old.changed(&new), ["B", "C", "D"]);
        assert!(old.changed(&old.clone()).is_empty());
    }

    #[test]
    fn shell_lines_read_back_exactly_in_sh() {
        let values = ["it's", "$HOME `x` \\n \"q\"", "line\nbreak", "é☃", ""];
        let vars: Vec<(&str, &str)> = ["A", "B", "C", "D", "E"].into_iter().zip(values).collect();
        let script = String::from_utf8(shell(&env(&vars)).to_vec()).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "{script}printf '%s\\0' \"$A\" \"$B\" \"$C\" \"$D\" \"$E\""
            ))
            .env_clear()
            .output()
            .unwrap();
        let back: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(back[i], v.as_bytes());
        }
    }
}
