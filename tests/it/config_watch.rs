use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use passbolt_sync::runtime::watch::{ConfigWatcher, WatchError};
use tokio::sync::mpsc::Receiver;
use tokio::sync::mpsc::error::TryRecvError;

const ARRIVAL_LIMIT: Duration = Duration::from_secs(1);
/// Comfortably longer than the debounce plus a tick, so an event that was
/// going to come has come.
const SETTLE: Duration = Duration::from_millis(800);

fn setup(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.yaml");
    fs::write(&path, content).unwrap();
    (dir, path)
}

fn start(path: &Path, initial: &str) -> (ConfigWatcher, Receiver<Vec<u8>>) {
    ConfigWatcher::spawn(path.to_path_buf(), initial.as_bytes()).unwrap()
}

/// Waits for the next change, prints and returns how long it took.
async fn expect_change(
    rx: &mut Receiver<Vec<u8>>,
    since: Instant,
    expected: &str,
    what: &str,
) -> Duration {
    let got = tokio::time::timeout(ARRIVAL_LIMIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: no change within {ARRIVAL_LIMIT:?}"))
        .expect("channel closed");
    let latency = since.elapsed();
    println!("{what}: change arrived after {latency:?}");
    assert_eq!(String::from_utf8(got).unwrap(), expected, "{what}");
    latency
}

async fn expect_quiet(rx: &mut Receiver<Vec<u8>>, what: &str) {
    tokio::time::sleep(SETTLE).await;
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        Ok(content) => panic!(
            "{what}: unexpected change {:?}",
            String::from_utf8_lossy(&content)
        ),
        Err(TryRecvError::Disconnected) => panic!("{what}: channel closed"),
    }
}

fn replace_by_rename(path: &Path, content: &str, tmp_name: &str) {
    let tmp = path.with_file_name(tmp_name);
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn replace_by_rename_is_reported_once() {
    let (_dir, path) = setup("a: 1\n");
    let (_watcher, mut rx) = start(&path, "a: 1\n");

    let t = Instant::now();
    replace_by_rename(&path, "a: 2\n", ".sync.yaml.tmp");
    expect_change(&mut rx, t, "a: 2\n", "write tmp + rename").await;
    expect_quiet(&mut rx, "after rename").await;

    // The watch survives the replaced inode.
    let t = Instant::now();
    replace_by_rename(&path, "a: 3\n", ".sync.yaml.tmp");
    expect_change(&mut rx, t, "a: 3\n", "second rename").await;
}

#[tokio::test]
async fn sed_style_rewrite_is_reported() {
    let (_dir, path) = setup("level: info\n");
    let (_watcher, mut rx) = start(&path, "level: info\n");

    // What `sed -i` does: a temporary sibling renamed over the original.
    let t = Instant::now();
    replace_by_rename(&path, "level: debug\n", "sedAbC123");
    expect_change(&mut rx, t, "level: debug\n", "sed -i (new file + rename)").await;

    // What a naive editor does: truncate and write the same inode.
    let t = Instant::now();
    fs::write(&path, "level: warn\n").unwrap();
    expect_change(&mut rx, t, "level: warn\n", "truncate + write in place").await;
}

#[tokio::test]
async fn identical_content_is_not_reported() {
    let (_dir, path) = setup("same\n");
    let (_watcher, mut rx) = start(&path, "same\n");

    fs::write(&path, "same\n").unwrap();
    replace_by_rename(&path, "same\n", ".tmp");
    expect_quiet(&mut rx, "identical rewrite").await;
}

#[tokio::test]
async fn unrelated_file_in_directory_is_not_reported() {
    let (dir, path) = setup("x\n");
    let (_watcher, mut rx) = start(&path, "x\n");

    fs::write(dir.path().join("other.txt"), "noise").unwrap();
    fs::write(dir.path().join("other.txt"), "more noise").unwrap();
    fs::remove_file(dir.path().join("other.txt")).unwrap();
    expect_quiet(&mut rx, "unrelated file").await;
}

/// The layout a Kubernetes ConfigMap volume uses: the config is a symlink
/// through `..data`, which points at a timestamped directory; an update
/// writes a new directory and atomically renames a new `..data` over the old.
#[tokio::test]
async fn kubernetes_configmap_symlink_swap_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data_dir = |version: u32| root.join(format!("..2027_01_01_00_00_0{version}.000000001"));
    let first = data_dir(1);
    fs::create_dir(&first).unwrap();
    fs::write(first.join("sync.yaml"), "version: 1\n").unwrap();
    symlink(first.file_name().unwrap(), root.join("..data")).unwrap();
    symlink("..data/sync.yaml", root.join("sync.yaml")).unwrap();
    let path = root.join("sync.yaml");

    let (_watcher, mut rx) = start(&path, "version: 1\n");

    for version in 2..=3 {
        let t = Instant::now();
        let next = data_dir(version);
        fs::create_dir(&next).unwrap();
        fs::write(next.join("sync.yaml"), format!("version: {version}\n")).unwrap();
        symlink(next.file_name().unwrap(), root.join("..data_tmp")).unwrap();
        fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        fs::remove_dir_all(data_dir(version - 1)).unwrap();
        expect_change(
            &mut rx,
            t,
            &format!("version: {version}\n"),
            &format!("ConfigMap symlink swap to version {version}"),
        )
        .await;
    }
    expect_quiet(&mut rx, "after ConfigMap swaps").await;
}

/// A config symlinked from another directory and edited there.
#[tokio::test]
async fn symlink_target_edited_elsewhere_is_reported() {
    let link_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let target = target_dir.path().join("real.yaml");
    fs::write(&target, "where: there\n").unwrap();
    let path = link_dir.path().join("sync.yaml");
    symlink(&target, &path).unwrap();

    let (_watcher, mut rx) = start(&path, "where: there\n");

    let t = Instant::now();
    replace_by_rename(&target, "where: still there\n", "real.yaml.tmp");
    expect_change(
        &mut rx,
        t,
        "where: still there\n",
        "symlink target replaced",
    )
    .await;

    let t = Instant::now();
    fs::write(&target, "where: edited\n").unwrap();
    expect_change(
        &mut rx,
        t,
        "where: edited\n",
        "symlink target edited in place",
    )
    .await;
}

#[tokio::test]
async fn temporarily_missing_file_is_not_an_error() {
    let (_dir, path) = setup("v: 1\n");
    let (_watcher, mut rx) = start(&path, "v: 1\n");

    fs::remove_file(&path).unwrap();
    expect_quiet(&mut rx, "file removed").await;

    let t = Instant::now();
    fs::write(&path, "v: 2\n").unwrap();
    expect_change(&mut rx, t, "v: 2\n", "file recreated").await;
}

#[tokio::test]
async fn change_before_the_watch_started_is_caught() {
    let (_dir, path) = setup("newer\n");
    // The caller read "older" just before the file was replaced.
    let (_watcher, mut rx) = start(&path, "older\n");
    expect_change(&mut rx, Instant::now(), "newer\n", "change before spawn").await;
}

#[tokio::test]
async fn force_check_rereads_without_waiting_for_events() {
    let (_dir, path) = setup("h: 1\n");
    let (watcher, mut rx) = start(&path, "h: 1\n");

    fs::write(&path, "h: 2\n").unwrap();
    let t = Instant::now();
    watcher.force_check();
    let latency = expect_change(&mut rx, t, "h: 2\n", "force_check").await;
    assert!(
        latency < Duration::from_millis(200),
        "force_check waited for the debounce: {latency:?}"
    );
    // The debounced event for the same write finds nothing new.
    expect_quiet(&mut rx, "event after force_check").await;

    watcher.force_check();
    expect_quiet(&mut rx, "force_check without change").await;
}

#[tokio::test]
async fn dropping_the_watcher_closes_the_channel() {
    let (_dir, path) = setup("z\n");
    let (watcher, mut rx) = start(&path, "z\n");
    drop(watcher);
    let closed = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("channel not closed");
    assert_eq!(closed, None);
}

#[tokio::test]
async fn missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope").join("sync.yaml");
    let err = ConfigWatcher::spawn(path.clone(), b"").unwrap_err();
    assert!(matches!(err, WatchError::WatchDir { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn needs_a_runtime() {
    let (_dir, path) = setup("r\n");
    let err = ConfigWatcher::spawn(path, b"r\n").unwrap_err();
    assert!(matches!(err, WatchError::NoRuntime), "{err:?}");
}
