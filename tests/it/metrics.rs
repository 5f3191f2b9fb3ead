//! The metrics endpoint, the textfile, `/readyz` and `passbolt-sync status`
//! of a real daemon against the dev server. Every exposition is read by
//! the Python `prometheus_client` parsers (OpenMetrics for `/metrics` with
//! the OpenMetrics `Accept`, the classic text parser for the textfile and
//! a plain scrape), never by string matching alone.

use crate::common;
use crate::common::replace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, cli, devserver, fixture, text, write_config};
use passbolt_devserver::{Options, seed::ids};

fn python() -> &'static str {
    crate::common::python_with("prometheus_client", "python3-prometheus-client")
}

#[derive(Debug, serde::Deserialize)]
pub struct Sample {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Clone, Copy)]
pub enum Format {
    OpenMetrics,
    Text,
}

/// Every sample of `exposition`, as the Python parser of `format` reads
/// it; panics when the parser refuses it.
pub fn parse(exposition: &str, format: Format) -> Vec<Sample> {
    let module = match format {
        Format::OpenMetrics => "prometheus_client.openmetrics.parser",
        Format::Text => "prometheus_client.parser",
    };
    let script = format!(
        "import sys, json\nfrom {module} import text_string_to_metric_families as parse\n\
         out = [dict(type=f.type, name=s.name, labels=s.labels, value=s.value)\n\
                for f in parse(sys.stdin.read()) for s in f.samples]\n\
         sys.stdout.write(json.dumps(out))"
    );
    let mut child = Command::new(python())
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused:\n{exposition}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of sample `name` with exactly `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// The address the daemon's endpoint listens on, from its log.
pub async fn endpoint(d: &Daemon) -> String {
    assert!(
        d.wait_log("serving /metrics", 1, Duration::from_secs(10))
            .await,
        "{}",
        d.log()
    );
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("serving /metrics"))
        .unwrap();
    let addr = line.split("listen=").nth(1).unwrap();
    format!("http://{}", addr.split_whitespace().next().unwrap())
}

pub async fn get(url: &str, openmetrics: bool) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = client.get(url).timeout(Duration::from_secs(5));
    if openmetrics {
        req = req.header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        );
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Polls `/metrics` until `cond` holds on its samples.
async fn scrape_until(
    base: &str,
    within: Duration,
    cond: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (_, body) = get(&format!("{base}/metrics"), true).await;
        let samples = parse(&body, Format::OpenMetrics);
        if cond(&samples) || tokio::time::Instant::now() >= deadline {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn v(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or(0.0)
}

/// `passbolt-sync status -c config`: exit code and stdout.
async fn status(config: &Path) -> (Option<i32>, String) {
    let out = cli(&["status", "-c", config.to_str().unwrap()], &[]).await;
    let (stdout, stderr) = text(&out);
    (out.status.code(), format!("{stdout}{stderr}"))
}

fn observe_section(dir: &Path) -> String {
    format!(
        "metrics:\n  listen: 127.0.0.1:0\n  textfile: {}\nstatus_file: {}\n",
        dir.join("passbolt_sync.prom").display(),
        dir.join("status.json").display(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_known_sequence_of_passes_a_failure_and_an_outage() {
    let mut server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let pin = out.join("pin");
    let env = out.join("app.env");
    let bad = out.join("bad");
    let (pin_s, env_s, bad_s) = (
        pin.to_str().unwrap(),
        env.to_str().unwrap(),
        bad.to_str().unwrap(),
    );
    // An hour apart: only the start and the reloads run passes.
    let targets = format!(
        "schedule: every 1h\ntargets:\n  - {{ path: {pin_s}, format: raw, resource: {}, field: pin, on_change: 'true' }}\n  - {{ path: {env_s}, format: dotenv, folder: Production/myapp }}\n",
        ids::V5_PIN
    );
    let who = fixture("bob");
    let config = write_config(
        dir.path(),
        &server,
        &who,
        &format!("{}{targets}", observe_section(dir.path())),
    );
    let started = chrono::Utc::now().timestamp() as f64;
    let d = Daemon::start(&config, &[("PASSBOLT_SYNC_TEST_BACKOFF", "200ms 400ms")]).await;
    let base = endpoint(&d).await;
    assert!(
        d.wait_log("first sync complete", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.log()
    );

    // 1. The first pass: both targets created, the pin's hook ran once.
    let (code, body) = get(&format!("{base}/metrics"), true).await;
    assert_eq!(code, 200);
    assert!(body.ends_with("# EOF\n"), "OpenMetrics when asked");
    let s = parse(&body, Format::OpenMetrics);
    let p = [("path", pin_s)];
    let e = [("path", env_s)];
    assert_eq!(
        v(&s, "passbolt_sync_passes_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        value(&s, "passbolt_sync_passes_total", &[("result", "failed")]),
        Some(0.0),
        "every result is there from the start"
    );
    assert_eq!(
        value(
            &s,
            "passbolt_sync_config_reloads_total",
            &[("result", "failed")]
        ),
        Some(0.0)
    );
    assert_eq!(v(&s, "passbolt_sync_pass_duration_seconds_count", &[]), 1.0);
    assert_eq!(v(&s, "passbolt_sync_logins_total", &[]), 1.0);
    assert_eq!(v(&s, "passbolt_sync_refreshes_total", &[]), 0.0);
    assert_eq!(
        v(&s, "passbolt_sync_secrets_downloaded_total", &[]),
        server.count_secret_reads() as f64,
        "the server's own count"
    );
    assert_eq!(v(&s, "passbolt_sync_secrets_downloaded_total", &[]), 3.0);
    assert!(v(&s, "passbolt_sync_private_key_operations_total", &[]) >= 4.0);
    assert_eq!(v(&s, "passbolt_sync_target_content_changes_total", &p), 1.0);
    assert_eq!(v(&s, "passbolt_sync_target_content_changes_total", &e), 1.0);
    assert_eq!(v(&s, "passbolt_sync_target_hook_runs_total", &p), 1.0);
    assert_eq!(v(&s, "passbolt_sync_target_hook_failures_total", &p), 0.0);
    assert_eq!(
        value(&s, "passbolt_sync_target_hook_runs_total", &e),
        Some(0.0)
    );
    for (path, _) in [(pin_s, ()), (env_s, ())] {
        for (result, want) in [
            ("current", 1.0),
            ("failed", 0.0),
            ("kept", 0.0),
            ("removed", 0.0),
        ] {
            assert_eq!(
                value(
                    &s,
                    "passbolt_sync_target_last_result",
                    &[("path", path), ("result", result)]
                ),
                Some(want),
                "{path} {result}"
            );
        }
        let success = v(
            &s,
            "passbolt_sync_target_last_success_timestamp_seconds",
            &[("path", path)],
        );
        let attempt = v(
            &s,
            "passbolt_sync_target_last_attempt_timestamp_seconds",
            &[("path", path)],
        );
        assert!(
            success >= started && success == attempt,
            "{success} {attempt} {started}"
        );
    }
    assert_eq!(v(&s, "passbolt_sync_server_up", &[]), 1.0);
    assert!(
        v(
            &s,
            "passbolt_sync_server_last_contact_timestamp_seconds",
            &[]
        ) >= started
    );
    assert!(v(&s, "passbolt_sync_server_since_last_contact_seconds", &[]) < 30.0);
    assert_eq!(v(&s, "passbolt_sync_ready", &[]), 1.0);
    assert_eq!(
        value(
            &s,
            "passbolt_sync_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(
        s.iter()
            .filter(|x| x.name.ends_with("_total"))
            .all(|x| x.kind == "counter"),
        "every _total is a counter"
    );
    assert_eq!(
        get(&format!("{base}/readyz"), false).await,
        (200, "ready\n".into())
    );
    assert_eq!(get(&format!("{base}/healthz"), false).await.0, 200);
    assert_eq!(get(&format!("{base}/nothing"), false).await.0, 404);
    assert_eq!(get(&format!("{base}/metrics/x"), false).await.0, 404);
    let post = reqwest::Client::new()
        .post(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 405, "GET and HEAD only");
    let head = reqwest::Client::new()
        .head(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    // The classic format too, for scrapers that do not ask for OpenMetrics.
    let (_, classic) = get(&format!("{base}/metrics"), false).await;
    assert!(!classic.contains("# EOF"));
    let c = parse(&classic, Format::Text);
    assert_eq!(
        v(&c, "passbolt_sync_passes_total", &[("result", "ok")]),
        1.0
    );
    let (code, shown) = status(&config).await;
    assert_eq!(code, Some(0), "{shown}");

    // 2. A reload adds a target whose field its resource's type lacks:
    //    one degraded pass, over that target alone.
    let base_config = std::fs::read_to_string(&config).unwrap();
    replace(
        &config,
        &format!(
            "{base_config}  - {{ path: {bad_s}, format: raw, resource: {}, field: password }}\n",
            ids::V5_NOTE
        ),
    );
    let s = scrape_until(&base, Duration::from_secs(15), |s| {
        v(s, "passbolt_sync_passes_total", &[("result", "degraded")]) >= 1.0
    })
    .await;
    assert_eq!(
        v(&s, "passbolt_sync_passes_total", &[("result", "degraded")]),
        1.0,
        "{}",
        d.log()
    );
    assert_eq!(
        v(&s, "passbolt_sync_passes_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        v(
            &s,
            "passbolt_sync_config_reloads_total",
            &[("result", "applied")]
        ),
        1.0
    );
    let b = [("path", bad_s), ("result", "failed")];
    assert_eq!(v(&s, "passbolt_sync_target_last_result", &b), 1.0);
    assert_eq!(
        value(
            &s,
            "passbolt_sync_target_last_success_timestamp_seconds",
            &[("path", bad_s)]
        ),
        None,
        "never synced"
    );
    assert_eq!(
        v(&s, "passbolt_sync_target_content_changes_total", &p),
        1.0,
        "the pin was not in that pass"
    );
    assert_eq!(v(&s, "passbolt_sync_ready", &[]), 0.0);
    let (code, why) = get(&format!("{base}/readyz"), false).await;
    assert_eq!(code, 503);
    assert_eq!(why.lines().count(), 1, "{why}");
    assert!(
        why.contains(bad_s) && why.contains("lacks a field"),
        "{why}"
    );
    let (code, shown) = status(&config).await;
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("failed: resource"), "{shown}");

    // 3. The server goes away, and the reload that drops the bad target
    //    and edits the pin's changes nothing until it is back.
    server.stop().await;
    replace(
        &config,
        &base_config.replace("on_change: 'true'", "on_change: 'true', mode: '0640'"),
    );
    let s = scrape_until(&base, Duration::from_secs(15), |s| {
        v(s, "passbolt_sync_passes_total", &[("result", "failed")]) >= 1.0
    })
    .await;
    assert!(
        v(&s, "passbolt_sync_passes_total", &[("result", "failed")]) >= 1.0,
        "{}",
        d.log()
    );
    assert_eq!(v(&s, "passbolt_sync_server_up", &[]), 0.0);
    assert_eq!(
        v(
            &s,
            "passbolt_sync_config_reloads_total",
            &[("result", "applied")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &s,
            "passbolt_sync_target_last_result",
            &[("path", bad_s), ("result", "failed")]
        ),
        None,
        "a target gone from the config is gone from the metrics"
    );
    assert_eq!(
        v(
            &s,
            "passbolt_sync_target_last_result",
            &[("path", pin_s), ("result", "failed")]
        ),
        1.0
    );
    let (code, why) = get(&format!("{base}/readyz"), false).await;
    assert_eq!(code, 503);
    assert!(why.contains("cannot reach the passbolt server"), "{why}");
    let (code, shown) = status(&config).await;
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains("cannot reach the passbolt server"),
        "{shown}"
    );

    // 4. Back: the retry succeeds and everything is current again.
    server.restart().await.unwrap();
    let s = scrape_until(&base, Duration::from_secs(15), |s| {
        v(s, "passbolt_sync_ready", &[]) == 1.0
    })
    .await;
    assert_eq!(v(&s, "passbolt_sync_ready", &[]), 1.0, "{}", d.log());
    assert_eq!(v(&s, "passbolt_sync_server_up", &[]), 1.0);
    assert_eq!(
        v(&s, "passbolt_sync_passes_total", &[("result", "ok")]),
        2.0
    );
    assert_eq!(get(&format!("{base}/readyz"), false).await.0, 200);
    let failed = v(&s, "passbolt_sync_passes_total", &[("result", "failed")]);
    assert_eq!(
        v(&s, "passbolt_sync_pass_duration_seconds_count", &[]),
        3.0 + failed,
        "every pass is timed"
    );
    let (code, shown) = status(&config).await;
    assert_eq!(code, Some(0), "{shown}");

    // The textfile holds what the endpoint shows, in the classic format.
    let (code, _) = d.stop().await;
    assert_eq!(code, Some(0));
    let file = std::fs::read_to_string(dir.path().join("passbolt_sync.prom")).unwrap();
    let t = parse(&file, Format::Text);
    for name in [
        "passbolt_sync_logins_total",
        "passbolt_sync_secrets_downloaded_total",
        "passbolt_sync_pass_duration_seconds_count",
    ] {
        assert_eq!(value(&t, name, &[]), value(&s, name, &[]), "{name}");
    }
    assert_eq!(
        v(&t, "passbolt_sync_passes_total", &[("result", "ok")]),
        2.0
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("passbolt_sync.prom"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o644);
    eprintln!("{file}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_current_kept_and_failed_targets_and_the_textfile_is_never_partial() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let path = |n: &str| out.join(n).to_str().unwrap().to_string();
    let targets = format!(
        "schedule: every 1s\ntargets:
  - {{ path: {}, format: raw, resource: {}, field: pin }}
  - {{ path: {}, format: raw, resource: {} }}
  - {{ path: {}, format: json, vars: {{ NOTE: {{ resource: {}, field: password }} }} }}
",
        path("pin"),
        ids::V5_PIN,
        path("gone"),
        ids::V4_PASSWORD_STRING,
        path("bad.json"),
        ids::V5_NOTE,
    );
    let config = write_config(
        dir.path(),
        &server,
        &fixture("bob"),
        &format!("{}{targets}", observe_section(dir.path())),
    );
    let d = Daemon::start(&config, &[]).await;
    let base = endpoint(&d).await;
    assert!(
        d.wait_log("first sync complete", 1, Duration::from_secs(20))
            .await,
        "{}",
        d.log()
    );
    server.remove_resource(ids::V4_PASSWORD_STRING);

    // Passes run every second while the textfile is read back-to-back:
    // every read is a whole file.
    let file = dir.path().join("passbolt_sync.prom");
    let mut seen = std::collections::BTreeSet::new();
    let mut reads = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        let content = std::fs::read_to_string(&file).unwrap();
        reads += 1;
        assert!(
            content.ends_with('\n') && content.contains("passbolt_sync_build_info{"),
            "a partial textfile:\n{content}"
        );
        seen.insert(content);
        tokio::task::yield_now().await;
    }
    assert!(
        seen.len() >= 2,
        "{} distinct contents in {reads} reads",
        seen.len()
    );
    for content in &seen {
        parse(content, Format::Text);
    }

    let (code, shown) = status(&config).await;
    assert_eq!(code, Some(1), "{shown}");
    eprintln!("{shown}");
    let row = |n: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&path(n)))
            .unwrap_or_else(|| panic!("no row for {n}:\n{shown}"))
            .to_string()
    };
    assert!(
        shown.lines().nth(1).unwrap().starts_with("TARGET "),
        "{shown}"
    );
    assert!(
        row("pin").contains(" raw ") && row("pin").ends_with(" current"),
        "{shown}"
    );
    assert!(
        row("gone").contains(&format!(
            "kept: resource {} is gone or not readable by this account (on_missing: keep)",
            ids::V4_PASSWORD_STRING
        )),
        "{shown}"
    );
    assert!(row("bad.json").contains(" json "), "{shown}");
    assert!(row("bad.json").contains(" never "), "{shown}");
    assert!(row("bad.json").contains("failed: resource"), "{shown}");
    // A scheduled tick is at most a second or two ahead.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(row("pin").matches(&today).count() >= 2, "{shown}");

    // Kept is within its policy; the failed target keeps the daemon unready.
    let (code, why) = get(&format!("{base}/readyz"), false).await;
    assert_eq!(code, 503);
    assert!(why.contains("bad.json"), "{why}");
    let s = parse(
        &get(&format!("{base}/metrics"), true).await.1,
        Format::OpenMetrics,
    );
    let gone = path("gone");
    assert_eq!(
        v(
            &s,
            "passbolt_sync_target_last_result",
            &[("path", &gone), ("result", "kept")]
        ),
        1.0
    );

    // The status file itself: 0644, JSON, one entry per target.
    let status_file = dir.path().join("status.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&status_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o644);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    assert_eq!(json["targets"].as_array().unwrap().len(), 3);
    assert_eq!(json["targets"][1]["last_result"], "kept");

    let (code, _) = d.stop().await;
    assert_eq!(code, Some(0));
    // The daemon is gone: its status is stale.
    let (code, shown) = status(&config).await;
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("stale"), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_listen_is_refused_unless_allowed_and_no_status_file_exits_3() {
    let server = devserver(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let target = format!(
        "targets:\n  - {{ path: {}/pin, format: raw, resource: {}, field: pin }}\n",
        dir.path().display(),
        ids::V5_PIN
    );
    let who = fixture("bob");
    let check = |section: &str| {
        let config = write_config(dir.path(), &server, &who, &format!("{section}{target}"));
        async move {
            let out = cli(&["check", "-c", config.to_str().unwrap()], &[]).await;
            (out.status.code(), text(&out).1)
        }
    };
    let (code, err) = check("metrics:\n  listen: 0.0.0.0:9792\n").await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("metrics.listen 0.0.0.0:9792 is not a loopback address")
            && err.contains("allow_remote"),
        "{err}"
    );
    let (code, err) = check("metrics:\n  listen: 192.0.2.7:9792\n").await;
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = check("metrics:\n  listen: localhost:9792\n").await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not an IP address and port"), "{err}");
    let (code, err) = check("metrics:\n  allow_remote: true\n").await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("give `listen`, `textfile` or both"), "{err}");
    for ok in [
        "metrics:\n  listen: 0.0.0.0:9792\n  allow_remote: true\n",
        "metrics:\n  listen: '[::1]:9792'\n",
        "metrics:\n  textfile: metrics.prom\nstatus_file: false\n",
    ] {
        let (code, err) = check(ok).await;
        assert_eq!(code, Some(0), "{ok}: {err}");
    }

    // No status file, and status_file switched off.
    let config: PathBuf = write_config(
        dir.path(),
        &server,
        &who,
        &format!("status_file: {}/none.json\n{target}", dir.path().display()),
    );
    let (code, shown) = status(&config).await;
    assert_eq!(code, Some(3), "{shown}");
    assert!(shown.contains("no status file at"), "{shown}");
    let config = write_config(
        dir.path(),
        &server,
        &who,
        &format!("status_file: false\n{target}"),
    );
    let (code, shown) = status(&config).await;
    assert_eq!(code, Some(3), "{shown}");
}
