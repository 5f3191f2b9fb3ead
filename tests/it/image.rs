//! The container image that `.ci/image` builds (Containerfile, buildah,
//! from Debian packages): it runs as 10001 on a read-only root file system
//! and syncs from a real server, holds no secret in its layer, is small and
//! labelled.
//!
//! `#[ignore]`d: they need root and the tools of `.ci/deps --image`, which
//! `.ci/run` installs before it runs them. They build the image around the
//! binary the tests were built with, stripped as the release profile
//! strips it; with `PASSBOLT_SYNC_IMAGE` naming an archive that `.ci/image`
//! built (from the release binary), they test that one instead
//! (`PASSBOLT_SYNC_RELEASE_IMAGE=1 .ci/run` does).
//!
//! No container runtime runs on the CI machine (crun and runc need cgroup
//! controllers its sandbox does not hand out), so the image runs as a
//! runtime would run it: umoci unpacks it into a bundle with the image's
//! own user, environment and entrypoint; `unshare` gives it its own mount
//! and PID namespaces; its root file system is mounted read-only, with /tmp
//! and the volumes of docs/containers.md bound in; `chroot --userspec` runs
//! the entrypoint as the image's user. The network is the host's (as with
//! `--network host`), so the dev server on loopback is reachable.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use passbolt_devserver::seed::ids;
use serde_json::Value;

use crate::common::{run, stdout};

/// What the image's user is, in the Containerfile and in the docs.
const UID: u32 = 10001;

/// The goal of issue #19 for the release image, uncompressed.
const SIZE_LIMIT: u64 = 30 * 1024 * 1024;

/// What the release binary may take of it (12.6 MB in the README's
/// measure): the rest of the image must fit in what is left, whichever
/// binary the image was built around.
const RELEASE_BINARY_BUDGET: u64 = 14 * 1024 * 1024;

struct Image {
    _dir: tempfile::TempDir,
    archive: PathBuf,
    /// The archive unpacked: an OCI image layout.
    layout: PathBuf,
    /// `layout:tag`, as umoci and skopeo name the image in it.
    reference: String,
    /// What umoci made of it: rootfs/ and the runtime's config.json.
    bundle: PathBuf,
    /// Whether it was built around the release binary, not the test one.
    release: bool,
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let (archive, release) = match std::env::var_os("PASSBOLT_SYNC_IMAGE") {
            Some(path) => (PathBuf::from(path), true),
            None => {
                let bin = dir.path().join("passbolt-sync");
                std::fs::copy(env!("CARGO_BIN_EXE_passbolt-sync"), &bin).unwrap();
                run(Command::new("strip").arg(&bin));
                let out = dir.path().join("out");
                let log = run(Command::new(root.join(".ci/image"))
                    .arg("--binary")
                    .arg(&bin)
                    .arg("--output")
                    .arg(&out)
                    .current_dir(root));
                eprintln!("{}", String::from_utf8_lossy(&log.stdout));
                (out.join("passbolt-sync.oci.tar"), false)
            }
        };
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout));
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .expect("the archive names its image")
            .to_string();
        let reference = format!("{}:{tag}", layout.display());
        let bundle = dir.path().join("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--image", &reference])
            .arg(&bundle));
        Image {
            _dir: dir,
            archive,
            layout,
            reference,
            bundle,
            release,
        }
    })
}

impl Image {
    fn runtime_config(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.bundle.join("config.json")).unwrap()).unwrap()
    }

    fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    /// The blob a descriptor points to.
    fn blob(&self, descriptor: &Value) -> PathBuf {
        let digest = descriptor["digest"].as_str().unwrap();
        let (algorithm, hex) = digest.split_once(':').unwrap();
        self.layout.join("blobs").join(algorithm).join(hex)
    }

    fn manifest(&self) -> Value {
        let index: Value =
            serde_json::from_slice(&std::fs::read(self.layout.join("index.json")).unwrap())
                .unwrap();
        serde_json::from_slice(&std::fs::read(self.blob(&index["manifests"][0])).unwrap()).unwrap()
    }

    /// Every layer's entries, as `tar -tv` lists them.
    fn layer_entries(&self) -> Vec<Entry> {
        let manifest = self.manifest();
        let layers = manifest["layers"].as_array().unwrap();
        assert!(!layers.is_empty());
        let mut entries = Vec::new();
        for layer in layers {
            let listing = stdout(
                Command::new("tar")
                    .args(["--numeric-owner", "-tvf"])
                    .arg(self.blob(layer)),
            );
            entries.extend(listing.lines().map(Entry::parse));
        }
        entries
    }

    /// Runs the image's entrypoint with `args` instead of its CMD, as a
    /// container runtime would (see the module's comment). `volumes` are
    /// (host path, path in the container, read-only).
    fn run(&self, args: &[&str], volumes: &[(&Path, &str, bool)]) -> (i32, String, String) {
        let config = self.runtime_config();
        let process = &config["process"];
        let uid = process["user"]["uid"].as_u64().unwrap();
        let gid = process["user"]["gid"].as_u64().unwrap();
        let entrypoint = process["args"][0].as_str().unwrap();
        let env: Vec<&str> = process["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let root = self.rootfs();
        let r = quote(&root);
        // Mount points are made before the root goes read-only, as a
        // runtime makes them.
        let mut script = String::from("set -e\n");
        script += &format!("mount --bind {r} {r}\n");
        for (host, inner, read_only) in volumes {
            let target = quote(&root.join(inner.trim_start_matches('/')));
            if host.is_dir() {
                script += &format!("mkdir -p {target}\n");
            } else {
                script += &format!("mkdir -p \"$(dirname {target})\"; touch {target}\n");
            }
            script += &format!("mount --bind {} {target}\n", quote(host));
            if *read_only {
                script += &format!("mount -o remount,bind,ro {target}\n");
            }
        }
        script += &format!("mount -o remount,bind,ro {r}\n");
        script += &format!("mount -t proc proc {r}/proc\n");
        script += &format!("mount -t tmpfs -o mode=0755,nosuid tmpfs {r}/dev\n");
        for dev in ["null", "zero", "random", "urandom"] {
            script += &format!("touch {r}/dev/{dev}; mount --bind /dev/{dev} {r}/dev/{dev}\n");
        }
        script += &format!(
            "exec env -i {} \"$(command -v chroot)\" --userspec={uid}:{gid} {r} {entrypoint} \"$@\"\n",
            env.iter()
                .map(|e| quote(Path::new(e)))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--propagation", "private"])
            .args(["sh", "-c", &script, "sh"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("unshare runs");
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        let code = out.status.code().unwrap_or(-1);
        eprintln!("image$ passbolt-sync {}: exit {code}", args.join(" "));
        (code, o, e)
    }
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// One line of `tar -tv --numeric-owner`.
#[derive(Debug)]
struct Entry {
    mode: String,
    owner: String,
    size: u64,
    path: String,
}

impl Entry {
    fn parse(line: &str) -> Entry {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 6, "{line}");
        Entry {
            mode: cols[0].to_string(),
            owner: cols[1].to_string(),
            size: cols[2].parse().unwrap_or(0),
            path: cols[5].trim_start_matches("./").to_string(),
        }
    }
}

/// `passbolt-sync demo --serve` in its own process, stopped on drop.
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_passbolt-sync"))
            .args(["demo", "--serve", "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let done = line.contains("Ctrl-C stops it");
                    seen.push_str(&line);
                    seen.push('\n');
                    if done {
                        break;
                    }
                }
                _ => panic!("the demo ended before serving:\n{seen}"),
            }
        }
        // Keep reading, so that the demo never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Demo { child, dir }
    }

    /// `key: value` of the demo's config for its Curve25519 account.
    fn setting(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("sync-curve25519.yaml")).unwrap();
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .to_string()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

#[test]
#[ignore = "needs root and .ci/deps --image: .ci/run builds the image and runs it"]
fn the_image_runs_read_only_as_10001_and_syncs_from_the_dev_server() {
    let image = image();
    let config = image.runtime_config();
    assert_eq!(config["process"]["user"]["uid"], UID, "{config:#}");
    assert_eq!(config["process"]["user"]["gid"], UID, "{config:#}");
    assert_eq!(config["process"]["args"][0], "passbolt-sync", "{config:#}");

    let (code, out, err) = image.run(&["--version"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    eprint!("{out}");
    assert_eq!(
        out.trim(),
        format!("passbolt-sync {}", env!("CARGO_PKG_VERSION"))
    );

    // The volumes of docs/containers.md: the config (a ConfigMap), the
    // account's key and passphrase (a Secret, 0400, the pod's fsGroup),
    // /tmp (an emptyDir, for the instance lock and here the files).
    let demo = Demo::start();
    let url = demo.setting("url");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let scratch = tempfile::tempdir().unwrap();
    let credentials = scratch.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    for (from, to) in [
        ("curve25519.key.asc", "private.asc"),
        ("curve25519.passphrase", "passphrase"),
    ] {
        let path = credentials.join(to);
        std::fs::copy(demo.dir.path().join(from), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        chown(&path, UID);
    }
    let etc = scratch.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let server = format!(
        "server:\n  url: {url}\n  fingerprint: {}\nauth:\n  user_id: {}\n  \
         private_key_file: /run/secrets/passbolt/private.asc\n  \
         passphrase_file: /run/secrets/passbolt/passphrase\n",
        demo.setting("fingerprint"),
        demo.setting("user_id"),
    );
    std::fs::write(
        etc.join("files.yaml"),
        format!(
            "{server}targets:\n  - {{ path: /tmp/out/db.password, format: raw, resource: {} }}\n  \
             - {{ path: /tmp/out/myapp.env, format: dotenv, folder: Production/myapp }}\n",
            ids::V4_PASSWORD_STRING
        ),
    )
    .unwrap();
    std::fs::write(
        etc.join("exec.yaml"),
        format!(
            "{server}exec:\n  env:\n    DB_PASSWORD: {{ resource: {} }}\n",
            ids::V4_PASSWORD_STRING
        ),
    )
    .unwrap();
    std::fs::write(
        etc.join("read-only.yaml"),
        format!(
            "{server}targets:\n  - {{ path: /etc/passbolt-sync/db.password, format: raw, resource: {} }}\n",
            ids::V4_PASSWORD_STRING
        ),
    )
    .unwrap();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::create_dir(tmp.join("out")).unwrap();
    chown(&tmp.join("out"), UID);
    // The image has no shell; a program that prints a variable, which
    // needs nothing but the libc the image has, stands in for the
    // application.
    let printenv = Path::new("/usr/bin/printenv");
    let volumes: &[(&Path, &str, bool)] = &[
        (&etc, "/etc/passbolt-sync", true),
        (&credentials, "/run/secrets/passbolt", true),
        (&tmp, "/tmp", false),
        (printenv, "/usr/local/bin/printenv", true),
    ];

    let (code, out, err) = image.run(&["once", "-c", "/etc/passbolt-sync/files.yaml"], volumes);
    eprintln!("once:\n{out}{err}");
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let written = tmp.join("out/db.password");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "legacy-db-pass");
    let meta = std::fs::metadata(&written).unwrap();
    assert_eq!(meta.uid(), UID);
    assert_eq!(meta.mode() & 0o077, 0, "{:o}", meta.mode());
    let env = std::fs::read_to_string(tmp.join("out/myapp.env")).unwrap();
    assert!(env.contains("myapp-db-pass"), "{env}");

    let exec = |command: &[&str]| {
        let mut args = vec!["exec", "-c", "/etc/passbolt-sync/exec.yaml", "--"];
        args.extend_from_slice(command);
        image.run(&args, volumes)
    };
    let (code, out, err) = exec(&["printenv", "DB_PASSWORD"]);
    eprintln!("{err}stdout: {out}");
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out, "legacy-db-pass\n");
    // The application's status is the container's.
    let (code, out, err) = exec(&["printenv", "NOT_SET_ANYWHERE"]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert_eq!(out, "");
    // No shell in the image: a command string cannot run, and says so.
    let (code, _, err) = exec(&["/bin/sh", "-c", "echo $DB_PASSWORD"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("/bin/sh"), "{err}");
    eprint!("{err}");

    // The root file system is read-only, whatever the config asks.
    let (code, out, err) = image.run(
        &["once", "-c", "/etc/passbolt-sync/read-only.yaml"],
        volumes,
    );
    assert_ne!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(err.to_lowercase().contains("read-only"), "{err}");
    eprint!("{err}");
    // The image's trust store is found where the system's TLS stack
    // looks: an https:// URL gets as far as connecting (to a closed
    // port). Hidden under an empty directory, as on a host without
    // ca-certificates, http:// needs none, and https:// names both fixes.
    let https = server.replace(&url, "https://127.0.0.1:9");
    std::fs::write(
        etc.join("https.yaml"),
        format!(
            "{https}targets:\n  - {{ path: /tmp/out/https, format: raw, resource: {} }}\n",
            ids::V4_PASSWORD_STRING
        ),
    )
    .unwrap();
    let (code, _, err) = image.run(&["once", "-c", "/etc/passbolt-sync/https.yaml"], volumes);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("TLS setup"), "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");
    let empty = scratch.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut no_store = volumes.to_vec();
    no_store.push((&empty, "/etc/ssl", true));
    let (code, out, err) = image.run(&["once", "-c", "/etc/passbolt-sync/files.yaml"], &no_store);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let (code, _, err) = image.run(&["once", "-c", "/etc/passbolt-sync/https.yaml"], &no_store);
    assert_eq!(code, 1, "{err}");
    for part in [
        "TLS setup: no CA certificate to check the certificate of https://127.0.0.1:9",
        "this host has no trust store",
        "ca-certificates package",
        "set server.ca_file",
    ] {
        assert!(err.contains(part), "no {part:?} in {err}");
    }
    eprint!("{err}");
    // A config that is not there: status 2, naming it.
    let (code, _, err) = image.run(&["once", "-c", "/etc/passbolt-sync/none.yaml"], volumes);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/etc/passbolt-sync/none.yaml"), "{err}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        2,
        "only out/ and the lock dir"
    );
}

#[test]
#[ignore = "needs root and .ci/deps --image: .ci/run builds the image and runs it"]
fn the_layers_hold_no_secret_and_nothing_writable_or_setuid() {
    let image = image();
    let entries = image.layer_entries();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for needed in [
        "usr/local/bin/passbolt-sync",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "usr/share/zoneinfo/Etc/UTC",
        "tmp/",
    ] {
        assert!(paths.contains(&needed), "no {needed} in {paths:#?}");
    }
    for e in &entries {
        assert_eq!(e.owner, "0/0", "{e:?}");
        assert!(!e.mode.contains(['s', 'S']), "setuid or setgid: {e:?}");
        let other_writable = e.mode.as_bytes()[8] == b'w' && !e.mode.starts_with('l');
        assert!(
            !other_writable || e.path == "tmp/",
            "writable by anyone: {e:?}"
        );
        let name = e.path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
        let secret_like = [
            ".asc",
            ".gpg",
            ".key",
            ".p12",
            ".pfx",
            "passphrase",
            "id_rsa",
            "id_ed25519",
            ".env",
        ]
        .iter()
        .any(|s| name.ends_with(s) || name.starts_with(s));
        assert!(!secret_like, "{e:?}");
        assert!(
            !(e.path.starts_with("etc/passbolt-sync/") && e.path != "etc/passbolt-sync/"),
            "a config in the image: {e:?}"
        );
        assert!(
            !(e.path.starts_with("root/") && e.path != "root/"),
            "root's home is not empty: {e:?}"
        );
    }
    // No key in any file's content. The binary names the armor headers it
    // parses, so ELF files are left out of this.
    let root = image.rootfs();
    let mut scanned = 0;
    for e in entries.iter().filter(|e| e.mode.starts_with('-')) {
        let data = std::fs::read(root.join(&e.path)).unwrap();
        if data.starts_with(b"\x7fELF") {
            continue;
        }
        scanned += 1;
        let text = String::from_utf8_lossy(&data);
        for marker in ["PRIVATE KEY", "BEGIN PGP"] {
            assert!(!text.contains(marker), "{marker} in {}", e.path);
        }
    }
    assert!(scanned > 100, "{scanned}");
    // The image's config: no variable but PATH, and no secret in history.
    let config: Value =
        serde_json::from_slice(&std::fs::read(image.blob(&image.manifest()["config"])).unwrap())
            .unwrap();
    let env = config["config"]["Env"].as_array().unwrap();
    assert_eq!(env.len(), 1, "{env:?}");
    assert!(env[0].as_str().unwrap().starts_with("PATH="));
    let history = config["history"].to_string();
    assert!(!history.contains("PRIVATE"), "{history}");
}

#[test]
#[ignore = "needs root and .ci/deps --image: .ci/run builds the image and runs it"]
fn the_image_is_small_labelled_and_starts_passbolt_sync_as_10001() {
    let image = image();
    let inspect: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", image.archive.display())),
    ))
    .unwrap();
    let labels = &inspect["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "passbolt-sync");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        "AGPL-3.0-or-later"
    );
    for label in [
        "org.opencontainers.image.revision",
        "org.opencontainers.image.created",
        "org.opencontainers.image.description",
    ] {
        assert!(
            labels[label].as_str().is_some_and(|v| !v.is_empty()),
            "{label}: {inspect:#}"
        );
    }
    let config: Value = serde_json::from_str(&stdout(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", image.archive.display())),
    ))
    .unwrap();
    assert_eq!(config["config"]["User"], "10001:10001", "{config:#}");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["passbolt-sync"])
    );
    let passwd = std::fs::read_to_string(image.rootfs().join("etc/passwd")).unwrap();
    assert!(passwd.contains("passbolt-sync:x:10001:10001:"), "{passwd}");

    let entries = image.layer_entries();
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let binary = entries
        .iter()
        .find(|e| e.path == "usr/local/bin/passbolt-sync")
        .unwrap()
        .size;
    let stat = stdout(Command::new("umoci").args(["stat", "--image", &image.reference]));
    eprintln!(
        "image: {total} bytes uncompressed, {binary} of them the binary ({}); archive {} bytes\n{stat}",
        if image.release {
            "release"
        } else {
            "test build"
        },
        std::fs::metadata(&image.archive).unwrap().len()
    );
    // Everything but the binary is the same whichever binary it is.
    assert!(
        total - binary < SIZE_LIMIT - RELEASE_BINARY_BUDGET,
        "{} bytes besides the binary",
        total - binary
    );
    if image.release {
        assert!(total < SIZE_LIMIT, "{total} bytes");
    }
}

/// The YAML blocks of a Markdown file.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == "```yaml" => current = Some(String::new()),
            Some(block) if line.trim_end() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
#[ignore = "needs kubernetes-validate: .ci/deps --image installs it"]
fn the_manifests_of_the_docs_pass_the_kubernetes_schema_and_use_the_image_as_built() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let validator = match std::env::var_os("KUBERNETES_VALIDATE") {
        Some(v) => PathBuf::from(v),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("tools/k8s/bin/kubernetes-validate"),
    };
    assert!(
        validator.exists(),
        "{} is missing: run .ci/deps --image",
        validator.display()
    );
    let doc = std::fs::read_to_string(root.join("docs/containers.md")).unwrap();
    let blocks = yaml_blocks(&doc);
    let kinds: Vec<&str> = blocks
        .iter()
        .map(|b| {
            b.lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(kinds, ["ConfigMap", "Pod", "Deployment", "Deployment"]);
    let dir = tempfile::tempdir().unwrap();
    for (n, block) in blocks.iter().enumerate() {
        let file = dir.path().join(format!("{n}.yaml"));
        std::fs::write(&file, block).unwrap();
        let out = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", "1.33.0"])
            .arg(&file)
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "block {n}:\n{block}\n{report}");
        assert!(!report.contains("WARN"), "block {n}: {report}");
        if kinds[n] == "ConfigMap" {
            continue;
        }
        // As the image is built: its user, a read-only root file system,
        // and /tmp writable for the instance lock.
        for needed in [
            "runAsUser: 10001",
            "runAsNonRoot: true",
            "readOnlyRootFilesystem: true",
            "mountPath: /tmp",
            "mountPath: /run/secrets/passbolt, readOnly: true",
            "mountPath: /etc/passbolt-sync, readOnly: true",
        ] {
            assert!(
                block.contains(needed),
                "block {n} lacks {needed:?}:\n{block}"
            );
        }
    }
    // A bad manifest fails, so that the passes above mean something.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        blocks[1].replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: yes please",
        ),
    )
    .unwrap();
    let out = Command::new(&validator)
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
