//! Dotenv output read back by the real consumers: bash and python-dotenv
//! always, systemd's `EnvironmentFile=` when asked (`--ignored`), dotenvy
//! through `parse`, and docker's two readers through small emulations
//! (docker itself needs a daemon).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use passbolt_client::secret::Secret;
use passbolt_sync::sync::render::RenderError;
use passbolt_sync::sync::render::dotenv::{self, Dialect};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Portable {
    Single,
    Double,
    Refused,
}

struct Case {
    label: &'static str,
    value: String,
    portable: Portable,
    docker: bool,
}

fn case(label: &'static str, value: impl Into<String>, portable: Portable, docker: bool) -> Case {
    Case {
        label,
        value: value.into(),
        portable,
        docker,
    }
}

fn cases() -> Vec<Case> {
    use Portable::*;
    vec![
        case("plain", "hunter2", Single, true),
        case("empty string", "", Single, true),
        case("newline", "line1\nline2", Single, false),
        case("trailing newline", "abc\n", Single, false),
        case("blank lines inside", "a\n\n\nb", Single, false),
        case(
            "newline then assignment",
            "x\nINJECTED=pwned\n",
            Single,
            false,
        ),
        case("double quote", "say \"hi\"", Single, true),
        case("lone double quote", "\"", Single, false),
        case("single quote", "it's", Double, true),
        case("lone single quote", "'", Double, false),
        case("dollar signs", "pa$$word", Single, false),
        case("$VAR", "$HOME", Single, false),
        case("${VAR}", "${HOME}", Refused, false),
        case("${VAR:-default}", "${NOPE:-x}", Refused, false),
        case("${a:b} (no expansion)", "${a:b}", Single, false),
        case("unclosed ${", "${HOME", Single, false),
        case("$(cmd)", "$(touch /tmp/pbs-pwned)", Single, false),
        case("backtick", "`id`", Single, true),
        case("backslashes", "C:\\temp\\new", Single, true),
        case("literal \\n (two chars)", "\\n", Single, true),
        case("two backslashes", "a\\\\b", Double, true),
        case("backslash before quote", "\\'", Double, true),
        case("backslash before double quote", "\\\"", Single, true),
        case("trailing backslash", "abc\\", Refused, true),
        case("backslash-newline", "a\\\nb", Single, false),
        case("equals signs", "a=b==", Single, true),
        case("leading equals", "=start", Single, true),
        case("leading hash", "#start", Single, true),
        case("space hash", "value # not a comment", Single, false),
        case("leading and trailing spaces", "  padded  ", Single, false),
        case("tabs", "\ttab\tbed\t", Single, false),
        case("unicode", "пароль-密码-🔑", Single, true),
        case(
            "unicode spaces",
            "\u{a0}nbsp\u{2028}ls\u{3000}",
            Single,
            false,
        ),
        case(
            "control characters",
            "\u{1}\u{1b}[0m\u{7f}\u{b}\u{c}end",
            Single,
            true,
        ),
        case("carriage return", "a\rb", Refused, false),
        case("CRLF", "a\r\nb", Refused, false),
        case("NUL", "a\0b", Refused, false),
        case("bang", "wow!!", Single, true),
        case("tilde and glob", "~root/*", Single, true),
        case("quote and dollar", "it's $5", Refused, false),
        case("quote and backtick", "it's `x`", Refused, true),
        case(
            "quote and backslashes",
            "it's a \\ path \\\\ here",
            Double,
            true,
        ),
        case(
            "quote, double quote, newline",
            "it's \"quoted\"\nnext",
            Double,
            false,
        ),
        case(
            "mixed symbols",
            "p@$$w0rd!#\"=%^&*()[]{}<>|;:,.?/",
            Single,
            false,
        ),
        case("long (70 000 bytes)", "x".repeat(70_000), Single, false),
    ]
}

fn var_name(i: usize) -> String {
    format!("PBS_CASE_{i:02}")
}

/// The accepted cases as one file, so that a value that spills into its
/// neighbours shows up too.
fn portable_file(cases: &[Case]) -> (Vec<(String, Secret)>, Vec<u8>) {
    let vars: Vec<(String, Secret)> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.portable != Portable::Refused)
        .map(|(i, c)| (var_name(i), Secret::new(c.value.clone())))
        .collect();
    let bytes = dotenv::render(&vars, Dialect::Portable).expect("accepted cases render");
    (vars, bytes.to_vec())
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
    f
}

/// Every variable `bash -c 'set -a; . file'` ends up with, out of `names`.
pub(crate) fn bash_read(file: &Path, names: &[String]) -> HashMap<String, Vec<u8>> {
    let script = r#"set -a; . "$1"; set +a; shift
        for n in "$@"; do
            if [[ -v $n ]]; then printf 'S%s\0' "${!n}"; else printf 'U\0'; fi
        done"#;
    let out = Command::new("bash")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["-c", script, "bash"])
        .arg(file)
        .args(names)
        .output()
        .expect("bash must be installed");
    assert!(out.status.success(), "bash failed: {out:?}");
    assert!(
        out.stderr.is_empty(),
        "bash complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
    assert_eq!(fields.len(), names.len() + 1, "one field per name");
    names
        .iter()
        .zip(fields)
        .filter_map(|(n, f)| f.strip_prefix(b"S").map(|v| (n.clone(), v.to_vec())))
        .collect()
}

fn python_with_dotenv() -> &'static str {
    crate::common::python_with("dotenv", "python3-dotenv")
}

fn require_python_dotenv() {
    python_with_dotenv();
}

/// Everything python-dotenv's `dotenv_values` reads from each file, in one
/// interpreter run.
fn python_read_all(files: &[&Path]) -> Vec<BTreeMap<String, Option<String>>> {
    require_python_dotenv();
    let out = Command::new(python_with_dotenv())
        .args([
            "-c",
            "import sys, json\nfrom dotenv import dotenv_values\n\
             sys.stdout.write(json.dumps([dotenv_values(f) for f in sys.argv[1:]]))",
        ])
        .args(files)
        .output()
        .expect("python3 must be installed");
    assert!(out.status.success(), "python3 failed: {out:?}");
    assert!(
        out.stderr.is_empty(),
        "python-dotenv complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn python_read(file: &Path) -> BTreeMap<String, Option<String>> {
    python_read_all(&[file]).remove(0)
}

/// What a systemd service started with `EnvironmentFile=file` sees. Runs a
/// throwaway user manager inside a private mount namespace, which needs
/// root, `unshare` and systemd installed.
fn systemd_read(file: &Path) -> Result<HashMap<String, Vec<u8>>, String> {
    let script = r#"
        set -e
        mount -t tmpfs tmpfs /run/systemd
        mkdir -p /run/systemd/system
        export XDG_RUNTIME_DIR=$(mktemp -d)
        /usr/lib/systemd/systemd --user >/dev/null 2>&1 &
        manager=$!
        trap 'kill $manager 2>/dev/null || true' EXIT
        for _ in $(seq 100); do
            state=$(systemctl --user is-system-running 2>/dev/null || true)
            case "$state" in running|degraded) break;; esac
            sleep 0.1
        done
        systemd-run --user --wait --pipe -q -p EnvironmentFile="$1" /usr/bin/env -0
    "#;
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "bash",
            "-c",
            script,
            "bash",
        ])
        .arg(file)
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "systemd user manager run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out
        .stdout
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            Some((
                String::from_utf8_lossy(&entry[..eq]).into_owned(),
                entry[eq + 1..].to_vec(),
            ))
        })
        .collect())
}

/// `docker run --env-file`: one variable per line, leading whitespace and
/// `#` lines skipped, everything after the first `=` taken literally.
fn docker_run_emulation(bytes: &[u8]) -> Vec<(String, String)> {
    std::str::from_utf8(bytes)
        .unwrap()
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).trim_start())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// docker compose's reading of an unquoted value, or `None` where it
/// would not be literal (quoting, `$` interpolation).
fn compose_emulation(raw_value: &str) -> Option<String> {
    let compose_space = |c: char| {
        matches!(
            c,
            '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
        )
    };
    let v = raw_value.trim_start_matches(compose_space);
    if v.starts_with(['"', '\'']) || v.contains('$') {
        return None;
    }
    let v = v.split(" #").next().unwrap();
    Some(v.trim_end().to_owned())
}

#[test]
fn case_table_matches_the_renderer() {
    for (i, c) in cases().iter().enumerate() {
        let vars = [(var_name(i), Secret::new(c.value.clone()))];
        let rendered = dotenv::render(&vars, Dialect::Portable);
        match (c.portable, rendered) {
            (Portable::Refused, Err(RenderError::Unrepresentable { var, .. })) => {
                assert_eq!(var, var_name(i), "{}", c.label)
            }
            (Portable::Single, Ok(b)) => {
                assert_eq!(b[var_name(i).len() + 1], b'\'', "{}", c.label)
            }
            (Portable::Double, Ok(b)) => {
                assert_eq!(b[var_name(i).len() + 1], b'"', "{}", c.label)
            }
            (want, got) => panic!("{}: expected {want:?}, got {got:?}", c.label),
        }
        let docker = dotenv::render(&vars, Dialect::Docker);
        assert_eq!(docker.is_ok(), c.docker, "{}: docker {docker:?}", c.label);
    }
}

#[test]
fn bash_reads_portable_values_back_exactly() {
    let cases = cases();
    let (vars, bytes) = portable_file(&cases);
    let file = write_temp(&bytes);
    let mut names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
    names.push("INJECTED".into());
    let got = bash_read(file.path(), &names);
    for (name, value) in &vars {
        assert_eq!(
            got.get(name).map(Vec::as_slice),
            Some(value.expose().as_bytes()),
            "{name}"
        );
    }
    assert!(
        !got.contains_key("INJECTED"),
        "a value leaked into a new variable"
    );
    assert!(!Path::new("/tmp/pbs-pwned").exists(), "bash ran a command");

    // Alone in its file too, where nothing follows a value.
    for (name, value) in &vars {
        let one = dotenv::render(&[(name.clone(), value.clone())], Dialect::Portable).unwrap();
        let file = write_temp(&one);
        let got = bash_read(file.path(), std::slice::from_ref(name));
        assert_eq!(got[name], value.expose().as_bytes(), "{name} alone");
    }
}

#[test]
fn python_dotenv_reads_portable_values_back_exactly() {
    let cases = cases();
    let (vars, bytes) = portable_file(&cases);
    let file = write_temp(&bytes);
    let got = python_read(file.path());
    let want: BTreeMap<String, Option<String>> = vars
        .iter()
        .map(|(n, v)| (n.clone(), Some(v.expose().to_owned())))
        .collect();
    assert_eq!(got, want);

    let files: Vec<_> = vars
        .iter()
        .map(|(name, value)| {
            let one = dotenv::render(&[(name.clone(), value.clone())], Dialect::Portable).unwrap();
            write_temp(&one)
        })
        .collect();
    let paths: Vec<&Path> = files.iter().map(|f| f.path()).collect();
    for ((name, value), got) in vars.iter().zip(python_read_all(&paths)) {
        assert_eq!(got.len(), 1, "{name} alone");
        assert_eq!(got[name].as_deref(), Some(value.expose()), "{name} alone");
    }
}

#[test]
fn parse_reads_portable_values_back_exactly() {
    let cases = cases();
    let (vars, bytes) = portable_file(&cases);
    let parsed = dotenv::parse(&bytes).unwrap();
    assert_eq!(parsed, vars);
}

#[test]
#[ignore = "starts a systemd user manager in a private mount namespace (needs root and systemd)"]
fn systemd_reads_portable_values_back_exactly() {
    let cases = cases();
    let (vars, bytes) = portable_file(&cases);
    let file = write_temp(&bytes);
    let got = systemd_read(file.path()).expect("systemd must be usable for this test");
    for (name, value) in &vars {
        assert_eq!(
            got.get(name).map(Vec::as_slice),
            Some(value.expose().as_bytes()),
            "{name}"
        );
    }
    assert!(!got.contains_key("INJECTED"));
}

#[test]
fn docker_refusals_name_the_variable() {
    for (value, reason_part) in [
        ("two\nlines", "line break"),
        ("cr\r", "line break"),
        (" lead", "starts with whitespace"),
        ("\tlead", "starts with whitespace"),
        ("trail ", "ends with whitespace"),
        ("trail\u{a0}", "ends with whitespace"),
        ("'quoted'", "starts with a quote"),
        ("\"quoted\"", "starts with a quote"),
        ("cost $5", "`$`"),
        ("${X}", "`$`"),
        ("a #b", "comment"),
        ("a\t#b", "comment"),
        ("nul\0", "NUL"),
    ] {
        let vars = [("DOCKER_VAR".to_owned(), Secret::new(value))];
        let err = dotenv::render(&vars, Dialect::Docker).unwrap_err();
        match &err {
            RenderError::Unrepresentable { var, reason } => {
                assert_eq!(var, "DOCKER_VAR");
                assert!(reason.contains(reason_part), "{value:?}: {reason}");
            }
            other => panic!("{value:?}: {other:?}"),
        }
        assert!(err.to_string().contains("DOCKER_VAR"));
    }
    let long = [("L".to_owned(), Secret::new("x".repeat(65_534)))];
    assert!(dotenv::render(&long, Dialect::Docker).is_err());
    let fits = [("L".to_owned(), Secret::new("x".repeat(65_533)))];
    assert!(dotenv::render(&fits, Dialect::Docker).is_ok());
}

#[test]
fn docker_accepted_values_read_back_literally() {
    let cases = cases();
    let vars: Vec<(String, Secret)> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.docker)
        .map(|(i, c)| (var_name(i), Secret::new(c.value.clone())))
        .collect();
    let bytes = dotenv::render(&vars, Dialect::Docker).unwrap();
    let read = docker_run_emulation(&bytes);
    assert_eq!(read.len(), vars.len());
    for ((name, value), (read_name, read_value)) in vars.iter().zip(&read) {
        assert_eq!(name, read_name);
        assert_eq!(value.expose(), read_value, "docker run: {name}");
        assert_eq!(
            compose_emulation(read_value).as_deref(),
            Some(value.expose()),
            "compose: {name}"
        );
    }
    let parsed = dotenv::parse_with(&bytes, Dialect::Docker).unwrap();
    assert_eq!(parsed, vars);
}

/// Raw text made visible for a table cell: line breaks, tabs and other
/// control characters become symbols, everything else is shown as is.
fn html_code(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 48 {
            let _ = write!(shown, "… ({} bytes)", bytes.len());
            break;
        }
        match c {
            '\n' => shown.push('↵'),
            '\r' => shown.push('␍'),
            '\t' => shown.push('⇥'),
            '\0' => shown.push('␀'),
            ' ' => shown.push('·'),
            c if c.is_control() || c.is_whitespace() => {
                let _ = write!(shown, "\\u{{{:x}}}", c as u32);
            }
            c => shown.push(c),
        }
    }
    let escaped = shown
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "&#124;");
    format!("<code>{escaped}</code>")
}

fn verdict(want: &[u8], got: Option<&[u8]>) -> String {
    match got {
        Some(g) if g == want => "✓ same".to_owned(),
        Some(g) => format!("✗ {}", html_code(g)),
        None => "✗ unset".to_owned(),
    }
}

/// Writes docs/dotenv.md from what the consumers actually read.
#[test]
#[ignore = "writes docs/dotenv.md; needs systemd as systemd_reads_portable_values_back_exactly"]
fn write_dotenv_table() {
    let cases = cases();
    let (vars, bytes) = portable_file(&cases);
    let file = write_temp(&bytes);
    let names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
    let bash = bash_read(file.path(), &names);
    let python = python_read(file.path());
    let systemd = systemd_read(file.path()).expect("systemd must be usable");
    let parsed: HashMap<String, Secret> = dotenv::parse(&bytes).unwrap().into_iter().collect();

    let mut md = String::new();
    md.push_str(
        "# Dotenv quoting: what each consumer reads\n\n\
         Generated by `cargo test --test dotenv_consumers -- --ignored write_dotenv_table` \
         from what the consumers actually returned. All accepted values are written into one \
         file and read back by bash (`set -a; . file`), systemd (`EnvironmentFile=`, through a \
         user manager), python-dotenv (`dotenv_values`) and dotenvy (this crate's `parse`). \
         Docker columns are emulations of `docker run --env-file` (literal after `=`) and of \
         docker compose's unquoted values.\n\n\
         In the value columns `·` is a space, `↵` a newline, `⇥` a tab, `␍` a carriage return, \
         `␀` a NUL byte and `\\u{..}` another control or space character.\n\n",
    );
    let _ = writeln!(
        md,
        "python-dotenv {}, {}, {}.\n",
        tool_version(
            python_with_dotenv(),
            &[
                "-c",
                "import importlib.metadata as m; print(m.version('python-dotenv'))"
            ]
        ),
        tool_version("bash", &["-c", "echo bash $BASH_VERSION"]),
        tool_version("systemctl", &["--version"])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
    );
    md.push_str(
        "| case | value | portable written as | bash | systemd | python-dotenv | dotenvy | docker dialect |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (i, c) in cases.iter().enumerate() {
        let name = var_name(i);
        let value = c.value.as_bytes();
        let one = [(name.clone(), Secret::new(c.value.clone()))];
        let (written, b, s, p, d) = match dotenv::render(&one, Dialect::Portable) {
            Ok(line) => (
                html_code(&line[name.len() + 1..line.len() - 1]),
                verdict(value, bash.get(&name).map(Vec::as_slice)),
                verdict(value, systemd.get(&name).map(Vec::as_slice)),
                verdict(
                    value,
                    python
                        .get(&name)
                        .and_then(|v| v.as_deref())
                        .map(str::as_bytes),
                ),
                verdict(value, parsed.get(&name).map(|s| s.expose().as_bytes())),
            ),
            Err(RenderError::Unrepresentable { reason, .. }) => (
                format!("refused: {reason}"),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
            ),
            Err(e) => panic!("{e}"),
        };
        let docker = match dotenv::render(&one, Dialect::Docker) {
            Ok(line) => {
                let read = docker_run_emulation(&line);
                let compose = compose_emulation(&read[0].1);
                if read[0].1.as_bytes() == value && compose.as_deref() == Some(c.value.as_str()) {
                    "✓ unquoted; run and compose same".to_owned()
                } else {
                    panic!("docker emulations disagree on {}", c.label)
                }
            }
            Err(RenderError::Unrepresentable { reason, .. }) => format!("refused: {reason}"),
            Err(e) => panic!("{e}"),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {written} | {b} | {s} | {p} | {d} | {docker} |",
            c.label.replace('|', "&#124;").replace('$', "&#36;"),
            html_code(value),
        );
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dotenv.md");
    std::fs::write(&path, md).unwrap();
    for (name, value) in &vars {
        assert_eq!(bash[name], value.expose().as_bytes());
        assert_eq!(systemd[name], value.expose().as_bytes());
        assert_eq!(python[name].as_deref(), Some(value.expose()));
    }
}

fn tool_version(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| format!("{program} unavailable"))
}
