//! One session per host: `get` and `env` ask the running daemon of their
//! config on its local socket, and log in themselves only when no daemon
//! answers. Real daemon, real binary, real Unix sockets; the peer check
//! with a process running as `nobody`.

use crate::common;
use crate::metrics::{Format, Sample, endpoint, parse, value};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, cli, devserver, fixture, known_secrets, text, write_config};
use passbolt_devserver::{DevServer, Options, seed::ids};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GITLAB_PASSWORD: &str = "g1t$lab \"pa ss\" `x` #1 ü";
const TRACE: &str = "passbolt_sync=trace,passbolt_client=trace";

struct Host {
    server: DevServer,
    dir: tempfile::TempDir,
    config: PathBuf,
    run: PathBuf,
}

impl Host {
    /// A config mapping three resources to files and two to `exec.env`,
    /// `extra` appended; the daemon's runtime directory under the test's.
    async fn new(extra: &str) -> Host {
        let server = devserver(Options::default()).await;
        // The seeded stamps settled: what the daemon downloads it holds.
        server.set_clock(Some(server.now() + 3));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().display();
        let yaml = format!(
            "schedule: every 1h\nmetrics:\n  listen: 127.0.0.1:0\n{extra}targets:\n  \
             - {{ path: {out}/gitlab, format: raw, resource: {gitlab} }}\n  \
             - {{ path: {out}/pin, format: raw, resource: {pin}, field: pin }}\n\
             exec:\n  env:\n    GITLAB: {{ resource: {gitlab} }}\n    PIN: {{ resource: {pin}, field: pin }}\n",
            gitlab = ids::V5_DEFAULT,
            pin = ids::V5_PIN,
        );
        let config = write_config(dir.path(), &server, &fixture("bob"), &yaml);
        let run = dir.path().join("run");
        Host {
            server,
            dir,
            config,
            run,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("RUNTIME_DIRECTORY", self.run.to_str().unwrap()),
            ("RUST_LOG", TRACE),
        ]
    }

    async fn daemon(&self) -> Daemon {
        let d = Daemon::start(&self.config, &self.env()).await;
        assert!(
            d.wait_log("first sync complete", 1, Duration::from_secs(30))
                .await,
            "{}",
            d.log()
        );
        d
    }

    async fn run(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec![args[0], "-c", self.config.to_str().unwrap()];
        full.extend(&args[1..]);
        cli(&full, &self.env()).await
    }

    fn socket(&self) -> PathBuf {
        only_socket(&self.run)
    }
}

fn only_socket(dir: &Path) -> PathBuf {
    let socks: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    assert_eq!(socks.len(), 1, "{socks:?}");
    socks[0].clone()
}

async fn scrape(d: &Daemon) -> Vec<Sample> {
    let base = endpoint(d).await;
    let (_, body) = crate::metrics::get(&format!("{base}/metrics"), true).await;
    parse(&body, Format::OpenMetrics)
}

fn requests(samples: &[Sample], op: &str, result: &str) -> f64 {
    value(
        samples,
        "passbolt_sync_agent_requests_total",
        &[("op", op), ("result", result)],
    )
    .unwrap_or(0.0)
}

fn counter(samples: &[Sample], name: &str) -> f64 {
    value(samples, name, &[]).unwrap_or(0.0)
}

/// One raw request on `socket`, and the raw answer.
async fn raw(socket: &Path, request: &[u8]) -> serde_json::Value {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(request).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    serde_json::from_slice(&answer).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn get_and_env_ask_the_running_daemon_without_a_login_or_a_download_of_what_it_holds() {
    let host = Host::new("").await;
    let d = host.daemon().await;
    let socket = host.socket();
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = scrape(&d).await;
    let (logins, reads) = (host.server.count_logins(), host.server.count_secret_reads());

    // Held by the daemon: answered from memory.
    for _ in 0..3 {
        let out = host.run(&["get", ids::V5_DEFAULT]).await;
        let (_, log) = text(&out);
        assert!(out.status.success(), "{log}");
        assert_eq!(out.stdout, GITLAB_PASSWORD.as_bytes());
        assert!(log.contains("answered by the daemon"), "{log}");
    }
    let out = host.run(&["env", "--format", "json"]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(env["GITLAB"], GITLAB_PASSWORD);
    assert_eq!(env["PIN"], "73019468");
    assert_eq!(host.server.count_logins(), logins, "no login");
    assert_eq!(host.server.count_secret_reads(), reads, "no download");

    // Not mapped: the daemon downloads it with its own session.
    let out = host
        .run(&["get", "API credentials", "--field", "custom:API token"])
        .await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(out.stdout, b"tok-123456");
    assert_eq!(host.server.count_logins(), logins, "still no login");
    assert_eq!(host.server.count_secret_reads(), reads + 1);

    // What the command would say itself, with its exit status.
    let out = host.run(&["get", "No such thing"]).await;
    let (stdout, log) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(stdout.is_empty());
    assert!(
        log.contains(
            "no resource readable by this account matches resource named \"No such thing\""
        ),
        "{log}"
    );
    let out = host.run(&["get", "GitLab", "--field", "colour"]).await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));

    // --no-agent: a login of its own, as before the socket.
    let out = host.run(&["get", ids::V5_DEFAULT, "--no-agent"]).await;
    assert_eq!(out.stdout, GITLAB_PASSWORD.as_bytes());
    assert_eq!(host.server.count_logins(), logins + 1);

    let after = scrape(&d).await;
    assert_eq!(
        requests(&after, "get", "ok") - requests(&before, "get", "ok"),
        4.0
    );
    assert_eq!(requests(&after, "env", "ok"), 1.0);
    assert_eq!(requests(&after, "get", "error"), 1.0, "no such resource");
    assert_eq!(
        counter(&after, "passbolt_sync_logins_total"),
        counter(&before, "passbolt_sync_logins_total"),
    );
    assert_eq!(
        counter(&after, "passbolt_sync_secrets_downloaded_total")
            - counter(&before, "passbolt_sync_secrets_downloaded_total"),
        1.0,
        "the unmapped one"
    );

    // No value in the daemon's trace log, nor in the peers'.
    let (_, log) = d.stop().await;
    assert!(!socket.exists(), "the socket is removed at exit");
    for known in known_secrets(&host.server, &fixture("bob")) {
        assert!(!log.contains(&known), "a value in the daemon's log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_socket_answers_only_its_own_protocol_version_and_config_bytes() {
    let host = Host::new("").await;
    let d = host.daemon().await;
    let socket = host.socket();
    let digest = {
        use sha2::Digest;
        let bytes = std::fs::read(&host.config).unwrap();
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let get = |version: u32, config: &str| {
        format!(
            r#"{{"version":{version},"config":"{config}","op":"get","selector":"{}"}}"#,
            ids::V5_DEFAULT
        )
        .into_bytes()
    };
    let a = raw(&socket, &get(1, &digest)).await;
    assert_eq!(a["result"], "ok");
    assert_eq!(a["values"][0][1], GITLAB_PASSWORD);
    let a = raw(&socket, &get(1, &"0".repeat(64))).await;
    assert_eq!(
        a,
        serde_json::json!({"version": 1, "result": "declined", "reason": "config"})
    );
    let a = raw(&socket, &get(2, &digest)).await;
    assert_eq!(a["reason"], "version");
    let a = raw(&socket, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(a["reason"], "malformed");

    // An edit the daemon applies: the new bytes are answered, the old not.
    let mut yaml = std::fs::read_to_string(&host.config).unwrap();
    yaml.push_str("# edited\n");
    common::replace(&host.config, &yaml);
    assert!(
        d.wait_log("nothing in it changed", 1, Duration::from_secs(10))
            .await,
        "{}",
        d.log()
    );
    assert_eq!(raw(&socket, &get(1, &digest)).await["reason"], "config");
    let out = host.run(&["get", ids::V5_DEFAULT]).await;
    assert_eq!(out.stdout, GITLAB_PASSWORD.as_bytes());
    assert!(
        text(&out).1.contains("answered by the daemon"),
        "{:?}",
        text(&out)
    );

    let samples = scrape(&d).await;
    assert_eq!(requests(&samples, "get", "config"), 2.0);
    assert_eq!(requests(&samples, "get", "version"), 1.0);
    assert_eq!(requests(&samples, "unknown", "malformed"), 1.0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_logs_in_itself_when_no_daemon_or_a_broken_one_is_at_the_socket() {
    let host = Host::new("").await;
    // Where the daemon would listen: found by starting and stopping one.
    let d = host.daemon().await;
    let socket = host.socket();
    d.stop().await;
    assert!(!socket.exists());

    let logins = host.server.count_logins();
    let check = |out: std::process::Output, why: &str| {
        let (_, log) = text(&out);
        assert!(out.status.success(), "{why}: {log}");
        assert_eq!(out.stdout, GITLAB_PASSWORD.as_bytes(), "{why}");
        assert!(log.contains("logging in"), "{why}: {log}");
    };
    check(host.run(&["get", ids::V5_DEFAULT]).await, "no socket");

    // A socket left behind by a daemon that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    check(host.run(&["get", ids::V5_DEFAULT]).await, "stale socket");
    std::fs::remove_file(&socket).unwrap();

    // A daemon that dies mid-request, and one that answers nonsense.
    for (why, reply) in [
        ("gone", &b""[..]),
        ("nonsense", &b"{\"version\":1,\"result\""[..]),
    ] {
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let serve = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut line = Vec::new();
            let _ = s.read_to_end(&mut line).await;
            s.write_all(reply).await.unwrap();
        });
        check(host.run(&["get", ids::V5_DEFAULT]).await, why);
        serve.await.unwrap();
        std::fs::remove_file(&socket).unwrap();
    }
    assert_eq!(host.server.count_logins(), logins + 4);
    assert_eq!(host.server.active_refresh_tokens(&fixture("bob").id), 0);
}

/// `nobody` runs a copy of the binary it can reach, with a config it can
/// read and credentials it cannot.
async fn as_nobody(host: &Host, bin: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg(args[0])
        .args(["-c", host.config.to_str().unwrap()])
        .args(&args[1..])
        .env_clear()
        .env("RUNTIME_DIRECTORY", &host.run)
        .env("RUST_LOG", TRACE)
        .uid(65534)
        .gid(65534);
    cmd.output().await.unwrap()
}

/// The test directory opened for `nobody` to traverse, the config for it
/// to read, the passphrase not; a copy of the binary it can run.
fn open_for_nobody(host: &Host) -> PathBuf {
    let set = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    set(host.dir.path(), 0o711).unwrap();
    set(&host.config, 0o644).unwrap();
    set(&host.dir.path().join("bob.pass"), 0o600).unwrap();
    let bin = host.dir.path().join("passbolt-sync");
    std::fs::copy(env!("CARGO_BIN_EXE_passbolt-sync"), &bin).unwrap();
    set(&bin, 0o755).unwrap();
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_outside_the_socket_group_is_refused_and_a_member_is_answered() {
    if !nix::unistd::Uid::effective().is_root() {
        // No process of another uid can be started without root (CI runs
        // as root): what can be checked is the socket a group gives.
        let gid = nix::unistd::getegid().as_raw();
        let host = Host::new(&format!("agent:\n  socket_group: {gid}\n")).await;
        let d = host.daemon().await;
        let meta = std::fs::metadata(host.socket()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
        eprintln!("not root: the peer checks as nobody were not run");
        d.stop().await;
        return;
    }
    // No group: only root and the daemon's user.
    let host = Host::new("").await;
    let bin = open_for_nobody(&host);
    let d = host.daemon().await;
    let socket = host.socket();
    std::fs::set_permissions(&host.run, std::fs::Permissions::from_mode(0o711)).unwrap();

    // The socket's mode keeps nobody out at connect; nobody's own login
    // then fails on the passphrase it cannot read.
    let out = as_nobody(&host, &bin, &["get", ids::V5_DEFAULT]).await;
    let (stdout, log) = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(stdout.is_empty());
    assert!(log.contains("cannot read"), "{log}");

    // A socket loosened by hand: the peer check refuses all the same.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&host, &bin, &["get", ids::V5_DEFAULT]).await;
    let (stdout, log) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty());
    assert!(
        log.contains("the daemon does not answer this user"),
        "{log}"
    );
    assert!(
        d.wait_log("refused a peer", 1, Duration::from_secs(5))
            .await,
        "{}",
        d.log()
    );
    assert!(d.log().contains("uid=65534"), "{}", d.log());
    assert_eq!(requests(&scrape(&d).await, "unknown", "refused"), 1.0);
    d.stop().await;

    // nogroup is nobody's group: with it as socket_group, nobody is
    // answered without reading a credential.
    let host = Host::new("agent:\n  socket_group: nogroup\n").await;
    let bin = open_for_nobody(&host);
    let d = host.daemon().await;
    let socket = host.socket();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.gid(), 65534);
    let out = as_nobody(&host, &bin, &["get", ids::V5_DEFAULT]).await;
    let (_, log) = text(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(out.stdout, GITLAB_PASSWORD.as_bytes());
    for known in known_secrets(&host.server, &fixture("bob")) {
        assert!(!log.contains(&known), "a value in the peer's trace log");
    }
    let (_, log) = d.stop().await;
    for known in known_secrets(&host.server, &fixture("bob")) {
        assert!(!log.contains(&known), "a value in the daemon's trace log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_socket_group_stops_the_daemon_with_exit_2() {
    let host = Host::new("agent:\n  socket_group: no-such-group-passbolt-sync\n").await;
    let out = cli(&["run", "-c", host.config.to_str().unwrap()], &host.env()).await;
    let (_, log) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains(
            "agent.socket_group: no group named \"no-such-group-passbolt-sync\" on this host"
        ),
        "{log}"
    );
    // Off: no socket, and get does not look for one.
    let host = Host::new("agent:\n  socket: false\n").await;
    let d = host.daemon().await;
    assert!(
        std::fs::read_dir(&host.run)
            .unwrap()
            .all(|e| { e.unwrap().path().extension().is_none_or(|x| x != "sock") })
    );
    let out = host.run(&["get", ids::V5_DEFAULT]).await;
    assert_eq!(out.stdout, GITLAB_PASSWORD.as_bytes());
    assert!(!text(&out).1.contains("not answered by a daemon"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_cannot_be_bound_is_a_warning_unless_asked_for() {
    let host = Host::new("").await;
    // Longer than a Unix socket's path may be (108 bytes).
    let deep = host.dir.path().join("r".repeat(120));
    let env = [
        ("RUNTIME_DIRECTORY", deep.to_str().unwrap()),
        ("RUST_LOG", "passbolt_sync=info"),
    ];
    let d = Daemon::start(&host.config, &env).await;
    assert!(
        d.wait_log("first sync complete", 1, Duration::from_secs(30))
            .await,
        "{}",
        d.log()
    );
    assert!(
        d.log().contains("get and env log in themselves"),
        "{}",
        d.log()
    );
    d.stop().await;

    let mut yaml = std::fs::read_to_string(&host.config).unwrap();
    yaml.push_str("agent:\n  socket: true\n");
    std::fs::write(&host.config, yaml).unwrap();
    let out = cli(&["run", "-c", host.config.to_str().unwrap()], &env).await;
    let (_, log) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("cannot listen on"), "{log}");
    assert!(
        log.contains("agent.socket: false runs the daemon without it"),
        "{log}"
    );
}
