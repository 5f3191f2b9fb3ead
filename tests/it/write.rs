//! Atomic writes on a real filesystem. These run as root (chown tests).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use passbolt_sync::sync::write::{
    WriteError, WriteOutcome, WriteSpec, plan, read_current, remove, resolve_group, resolve_user,
    write_atomic,
};

const NOBODY: u32 = 65534;

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn create_update_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WriteSpec::new(dir.path().join("app.env"));

    assert_eq!(plan(&spec, b"one\n").unwrap(), WriteOutcome::Created);
    assert!(!spec.path.exists(), "plan wrote something");
    assert_eq!(
        write_atomic(&spec, b"one\n").unwrap(),
        WriteOutcome::Created
    );
    assert_eq!(fs::read(&spec.path).unwrap(), b"one\n");

    let before = fs::metadata(&spec.path).unwrap();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(plan(&spec, b"one\n").unwrap(), WriteOutcome::Unchanged);
    assert_eq!(
        write_atomic(&spec, b"one\n").unwrap(),
        WriteOutcome::Unchanged
    );
    let after = fs::metadata(&spec.path).unwrap();
    assert_eq!(before.ino(), after.ino(), "file was replaced");
    assert_eq!(
        (before.mtime(), before.mtime_nsec()),
        (after.mtime(), after.mtime_nsec()),
        "file was written"
    );
    assert_eq!(
        (before.ctime(), before.ctime_nsec()),
        (after.ctime(), after.ctime_nsec()),
        "file metadata was touched"
    );

    assert_eq!(plan(&spec, b"two\n").unwrap(), WriteOutcome::Updated);
    assert_eq!(
        fs::read(&spec.path).unwrap(),
        b"one\n",
        "plan wrote something"
    );
    assert_eq!(
        write_atomic(&spec, b"two\n").unwrap(),
        WriteOutcome::Updated
    );
    assert_eq!(fs::read(&spec.path).unwrap(), b"two\n");
    assert_ne!(fs::metadata(&spec.path).unwrap().ino(), before.ino());

    // Same length, different bytes.
    assert_eq!(
        write_atomic(&spec, b"owt\n").unwrap(),
        WriteOutcome::Updated
    );
    assert_eq!(write_atomic(&spec, b"").unwrap(), WriteOutcome::Updated);
    assert_eq!(fs::read(&spec.path).unwrap(), b"");
    assert_eq!(write_atomic(&spec, b"").unwrap(), WriteOutcome::Unchanged);

    assert_eq!(
        dir_entries(dir.path()),
        ["app.env"],
        "no temporary file left"
    );
}

#[test]
fn modes_are_exact_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let default = WriteSpec::new(dir.path().join("default"));
    assert_eq!(default.mode, 0o600);
    write_atomic(&default, b"x").unwrap();
    assert_eq!(mode_of(&default.path), 0o600);

    let shared = WriteSpec {
        mode: 0o640,
        ..WriteSpec::new(dir.path().join("shared"))
    };
    write_atomic(&shared, b"x").unwrap();
    assert_eq!(mode_of(&shared.path), 0o640);

    // Looser than any usual umask allows: set explicitly, not through open().
    let open = WriteSpec {
        mode: 0o666,
        ..WriteSpec::new(dir.path().join("open"))
    };
    write_atomic(&open, b"x").unwrap();
    assert_eq!(mode_of(&open.path), 0o666);

    let invalid = WriteSpec {
        mode: 0o10000,
        ..WriteSpec::new(dir.path().join("invalid"))
    };
    assert!(matches!(
        write_atomic(&invalid, b"x"),
        Err(WriteError::InvalidMode { .. })
    ));
}

#[test]
fn owner_and_group_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WriteSpec {
        mode: 0o640,
        owner: Some(NOBODY),
        group: Some(NOBODY),
        ..WriteSpec::new(dir.path().join("owned"))
    };
    assert_eq!(write_atomic(&spec, b"x").unwrap(), WriteOutcome::Created);
    let meta = fs::metadata(&spec.path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
    assert_eq!(meta.mode() & 0o7777, 0o640);

    // A content change keeps them.
    assert_eq!(write_atomic(&spec, b"y").unwrap(), WriteOutcome::Updated);
    let meta = fs::metadata(&spec.path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (NOBODY, NOBODY, 0o640)
    );

    // Set-id bits survive the chown that would clear them.
    let setgid = WriteSpec {
        mode: 0o2750,
        ..spec.clone()
    };
    write_atomic(&setgid, b"z").unwrap();
    assert_eq!(mode_of(&spec.path), 0o2750);
}

#[test]
fn metadata_is_fixed_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WriteSpec::new(dir.path().join("meta"));
    write_atomic(&spec, b"content").unwrap();
    fs::set_permissions(&spec.path, fs::Permissions::from_mode(0o644)).unwrap();
    let inode = fs::metadata(&spec.path).unwrap().ino();

    assert_eq!(
        plan(&spec, b"content").unwrap(),
        WriteOutcome::MetadataFixed
    );
    assert_eq!(mode_of(&spec.path), 0o644, "plan changed the mode");
    assert_eq!(
        write_atomic(&spec, b"content").unwrap(),
        WriteOutcome::MetadataFixed
    );
    assert_eq!(mode_of(&spec.path), 0o600);
    assert_eq!(
        fs::metadata(&spec.path).unwrap().ino(),
        inode,
        "file was replaced"
    );
    assert!(!WriteOutcome::MetadataFixed.content_changed());

    let chowned = WriteSpec {
        owner: Some(NOBODY),
        ..spec.clone()
    };
    assert_eq!(
        write_atomic(&chowned, b"content").unwrap(),
        WriteOutcome::MetadataFixed
    );
    let meta = fs::metadata(&spec.path).unwrap();
    assert_eq!((meta.uid(), meta.ino()), (NOBODY, inode));
    assert_eq!(
        write_atomic(&chowned, b"content").unwrap(),
        WriteOutcome::Unchanged
    );
}

#[test]
fn a_symlink_at_the_target_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    fs::write(&elsewhere, b"precious").unwrap();
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("link");
    symlink(&elsewhere, &link).unwrap();
    let spec = WriteSpec::new(&link);

    // Even with identical content, a symlink counts as a change.
    assert_eq!(read_current(&link).unwrap(), None);
    assert_eq!(plan(&spec, b"precious").unwrap(), WriteOutcome::Updated);
    assert_eq!(
        write_atomic(&spec, b"precious").unwrap(),
        WriteOutcome::Updated
    );
    let meta = fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(fs::read(&elsewhere).unwrap(), b"precious");
    assert_eq!(mode_of(&elsewhere), 0o644);

    // A dangling symlink too.
    let dangling = dir.path().join("dangling");
    symlink(dir.path().join("nowhere"), &dangling).unwrap();
    write_atomic(&WriteSpec::new(&dangling), b"new").unwrap();
    assert!(!dir.path().join("nowhere").exists());
    assert_eq!(fs::read(&dangling).unwrap(), b"new");
}

#[test]
fn missing_parent_is_an_error_unless_create_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let top_mode = mode_of(dir.path());
    let path = dir.path().join("a/b/c.env");
    let spec = WriteSpec::new(&path);
    assert!(matches!(
        plan(&spec, b"x"),
        Err(WriteError::NoParent { .. })
    ));
    let err = write_atomic(&spec, b"x").unwrap_err();
    assert!(matches!(&err, WriteError::NoParent { path: p } if *p == path));
    assert!(err.to_string().contains("a/b/c.env"));
    assert!(!dir.path().join("a").exists());

    let spec = WriteSpec {
        create_dirs: true,
        ..spec
    };
    assert_eq!(plan(&spec, b"x").unwrap(), WriteOutcome::Created);
    assert!(!dir.path().join("a").exists(), "plan created a directory");
    assert_eq!(write_atomic(&spec, b"x").unwrap(), WriteOutcome::Created);
    assert_eq!(fs::read(&path).unwrap(), b"x");
    assert_eq!(mode_of(&dir.path().join("a")), 0o700);
    assert_eq!(mode_of(&dir.path().join("a/b")), 0o700);
    // Existing directories keep their mode.
    assert_eq!(mode_of(dir.path()), top_mode);
}

#[test]
fn leftover_temporary_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let leftover = dir.path().join(".app.env.pbsync.0123456789abcdef.tmp");
    let other_target = dir.path().join(".db.env.pbsync.0123456789abcdef.tmp");
    let unrelated = dir.path().join(".app.env.pbsync.notes");
    for p in [&leftover, &other_target, &unrelated] {
        fs::write(p, b"partial").unwrap();
    }
    let spec = WriteSpec::new(dir.path().join("app.env"));
    write_atomic(&spec, b"x").unwrap();
    assert!(!leftover.exists());
    assert!(other_target.exists());
    assert!(unrelated.exists());

    // Also when nothing else needs doing.
    fs::write(&leftover, b"partial").unwrap();
    assert_eq!(write_atomic(&spec, b"x").unwrap(), WriteOutcome::Unchanged);
    assert!(!leftover.exists());
}

#[test]
fn bad_targets_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("is-a-dir");
    fs::create_dir(&target).unwrap();
    let err = write_atomic(&WriteSpec::new(&target), b"x").unwrap_err();
    assert!(matches!(err, WriteError::InvalidTarget { .. }), "{err:?}");

    let file_parent = dir.path().join("file");
    fs::write(&file_parent, b"x").unwrap();
    let err = write_atomic(&WriteSpec::new(file_parent.join("child")), b"x").unwrap_err();
    assert!(matches!(err, WriteError::InvalidTarget { .. }), "{err:?}");

    assert_eq!(dir_entries(dir.path()), ["file", "is-a-dir"]);
    assert!(dir_entries(&target).is_empty());
}

/// An immutable target makes the final rename fail after the temporary
/// file was written: it must be gone and the target as it was.
#[test]
fn a_failed_rename_removes_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WriteSpec::new(dir.path().join("locked"));
    write_atomic(&spec, b"old").unwrap();
    let chattr = |flag: &str| {
        let ok = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&spec.path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "chattr {flag} failed: needs root and a filesystem with inode flags"
        );
    };
    chattr("+i");
    let result = write_atomic(&spec, b"new content");
    chattr("-i");
    match result {
        Err(WriteError::Io { op, path, .. }) => {
            assert_eq!(op, "replace");
            assert_eq!(path, spec.path);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read(&spec.path).unwrap(), b"old");
    assert_eq!(dir_entries(dir.path()), ["locked"]);
}

#[test]
fn read_current_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    assert_eq!(read_current(&path).unwrap(), None);
    assert_eq!(read_current(&dir.path().join("no/such/f")).unwrap(), None);
    write_atomic(&WriteSpec::new(&path), b"abc").unwrap();
    assert_eq!(read_current(&path).unwrap().unwrap().as_slice(), b"abc");

    assert!(remove(&path).unwrap());
    assert!(!path.exists());
    assert!(!remove(&path).unwrap());
    assert!(!remove(&dir.path().join("no/such/f")).unwrap());

    let kept = dir.path().join("kept");
    fs::write(&kept, b"k").unwrap();
    let link = dir.path().join("link");
    symlink(&kept, &link).unwrap();
    assert!(remove(&link).unwrap());
    assert!(fs::symlink_metadata(&link).is_err());
    assert_eq!(fs::read(&kept).unwrap(), b"k");

    assert!(matches!(
        remove(dir.path()),
        Err(WriteError::InvalidTarget { .. })
    ));
}

#[test]
fn users_and_groups_resolve() {
    assert_eq!(resolve_user("root").unwrap(), 0);
    assert_eq!(resolve_user("0").unwrap(), 0);
    assert_eq!(resolve_user("4242").unwrap(), 4242);
    assert_eq!(resolve_user("nobody").unwrap(), NOBODY);
    assert_eq!(resolve_group("root").unwrap(), 0);
    assert_eq!(resolve_group("123").unwrap(), 123);
    let err = resolve_user("no-such-user-pbs").unwrap_err();
    assert!(matches!(err, WriteError::UnknownUser { .. }));
    assert!(err.to_string().contains("no-such-user-pbs"));
    assert!(matches!(
        resolve_group("no-such-group-pbs"),
        Err(WriteError::UnknownGroup { .. })
    ));
    assert!(resolve_user("").is_err());
    assert!(resolve_user("-1").is_err());
}

/// A reader in a tight loop never sees anything but one of the two full
/// contents while the target is rewritten 1,000 times.
#[test]
fn concurrent_readers_never_see_partial_content() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WriteSpec::new(dir.path().join("atomic"));
    let small = b"small-0123".to_vec();
    let large: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    write_atomic(&spec, &small).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads) = (stop.clone(), reads.clone());
        let (path, small, large) = (spec.path.clone(), small.clone(), large.clone());
        thread::spawn(move || {
            let (mut saw_small, mut saw_large) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let got = fs::read(&path).expect("the target always exists");
                if got == small {
                    saw_small += 1;
                } else if got == large {
                    saw_large += 1;
                } else {
                    panic!("read {} bytes that are neither content", got.len());
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            (saw_small, saw_large)
        })
    };

    for i in 0..1000 {
        let content = if i % 2 == 0 { &large } else { &small };
        assert_eq!(write_atomic(&spec, content).unwrap(), WriteOutcome::Updated);
    }
    stop.store(true, Ordering::Relaxed);
    let (saw_small, saw_large) = reader.join().expect("reader saw partial content");
    assert!(
        saw_small > 0 && saw_large > 0,
        "reader did not overlap the writes"
    );
    assert!(reads.load(Ordering::Relaxed) > 100);
    assert_eq!(dir_entries(dir.path()), ["atomic"]);
}

/// Temporary files watched while they exist: until they have their final
/// owner, nobody but their owner can read them.
#[test]
fn temporary_files_are_never_readable_by_others_before_the_chown() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WriteSpec {
        mode: 0o644,
        owner: Some(NOBODY),
        group: Some(NOBODY),
        ..WriteSpec::new(dir.path().join("watched"))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, dir) = (stop.clone(), dir.path().to_owned());
        thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                for entry in fs::read_dir(&dir).unwrap().flatten() {
                    if !entry.file_name().to_string_lossy().ends_with(".tmp") {
                        continue;
                    }
                    let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                        continue;
                    };
                    seen += 1;
                    if meta.uid() != NOBODY || meta.gid() != NOBODY {
                        assert_eq!(meta.mode() & 0o077, 0, "readable before the chown");
                    }
                }
            }
            seen
        })
    };
    for i in 0..300 {
        write_atomic(&spec, format!("content {i}").as_bytes()).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().expect("a temporary file was too open");
    eprintln!("observed {seen} temporary files");
    let meta = fs::metadata(&spec.path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (NOBODY, NOBODY, 0o644)
    );
}
