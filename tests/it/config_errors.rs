//! Config errors that point at the fix, verbatim with file:line:column.

use std::path::Path;

use passbolt_sync::config::Config;

const HEAD: &str = "server:
  url: https://passbolt.example.com
auth:
  user_id: 8bb7f6a2-1f7b-4c1e-9a55-0d6a3c2b1e00
  private_key_file: /etc/passbolt-sync/private.asc
";

const ID: &str = "8bb7f6a2-1f7b-4c1e-9a55-0d6a3c2b1e00";

fn error(text: &str) -> String {
    Config::parse(text, Path::new("/etc/passbolt-sync/sync.yaml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn an_unknown_key_suggests_the_closest_one() {
    let text = format!(
        "{HEAD}targets:\n  - path: /etc/app/k\n    format: raw\n    resource: {ID}\n    mdoe: \"0640\"\n"
    );
    assert_eq!(
        error(&text),
        "/etc/passbolt-sync/sync.yaml:10:5: targets[0]: unknown field `mdoe`; did you mean `mode`?"
    );
    let text = HEAD.replace("auth:", "auht:");
    assert_eq!(
        error(&text),
        "/etc/passbolt-sync/sync.yaml:3:1: unknown field `auht`; did you mean `auth`?"
    );
}

#[test]
fn an_unknown_value_suggests_the_closest_one() {
    let text =
        format!("{HEAD}targets:\n  - path: /etc/app/k\n    format: rwa\n    resource: {ID}\n");
    assert_eq!(
        error(&text),
        "/etc/passbolt-sync/sync.yaml:8:13: targets[0].format: unknown variant `rwa`; did you mean `raw`?"
    );
}

#[test]
fn a_key_like_no_other_keeps_the_list_of_valid_ones() {
    let text = format!("{HEAD}zzz: 1\n");
    assert_eq!(
        error(&text),
        "/etc/passbolt-sync/sync.yaml:6:1: unknown field `zzz`, expected one of `server`, `auth`, `schedule`, `timezone`, `splay`, `full_sync_every`, `metrics`, `status_file`, `state_dir`, `targets`, `exec`, `rotate`, `agent`"
    );
}

#[test]
fn a_misspelt_every_names_both_schedule_forms() {
    let text = format!("{HEAD}schedule: evry 5m\n");
    assert_eq!(
        error(&text),
        "/etc/passbolt-sync/sync.yaml:6:11: schedule: \"evry 5m\" is neither `every <duration>` (e.g. every 5m, every 1h 30m) nor a cron expression (5 fields, e.g. \"*/15 * * * *\", or 6 with seconds first)"
    );
}

#[test]
fn a_target_without_resource_is_reported_at_its_own_line() {
    let text = format!(
        "{HEAD}targets:\n  - path: /etc/app/a\n    format: raw\n    resource: {ID}\n  - format: raw\n    path: \"/etc/app/b\"\n    field: username\n  - path: /etc/app/c\n    format: raw\n    resource: {ID}\n"
    );
    assert_eq!(
        error(&text),
        "/etc/passbolt-sync/sync.yaml:11:5: targets: target /etc/app/b: a raw target needs `resource` (an id) or `name`"
    );
}

/// A `rotate:` entry as written, with `rest` after `resource`.
fn rotate(rest: &str) -> String {
    format!("{HEAD}state_dir: /var/lib/passbolt-sync\nrotate:\n  - resource: {ID}\n{rest}")
}

const APPLY: &str = "    apply:\n      command: [/usr/local/sbin/rotate-db]\n";

#[test]
fn rotation_errors_name_the_rotation_and_the_fix() {
    let entry = format!(
        "/etc/passbolt-sync/sync.yaml:8:3: rotate: the rotation of password of resource {ID}"
    );
    for (rest, expected) in [
        (
            APPLY.to_string(),
            format!("{entry}: give `every` (e.g. every: 30d), `when: expired`, or both"),
        ),
        (
            "    every: 30d\n".to_string(),
            format!("{entry}: `apply` is required: the command that puts the new value in place (it gets the old and the new value as JSON on its stdin)"),
        ),
        (
            format!("    every: 30d\n    field: username\n{APPLY}"),
            "/etc/passbolt-sync/sync.yaml:10:12: rotate[0].field: field username cannot be rotated: a rotation makes a new password, for `password` or a `custom:<label>` field".to_string(),
        ),
        (
            format!("    when: modified\n{APPLY}"),
            "/etc/passbolt-sync/sync.yaml:9:11: rotate[0].when: unknown variant `modified`, expected `expired`".to_string(),
        ),
        (
            format!("    every: 30d\n    generate: {{length: 12, characters: digits}}\n{APPLY}"),
            format!("{entry}: generate.length 12 gives 40 bits; at least 39 characters of this alphabet reach 128"),
        ),
        (
            format!("    every: 30d\n    generate: strong\n{APPLY}"),
            format!("{entry}: generate \"strong\": write `policy` or {{length: N, characters: alphanumeric|digits|symbols}}"),
        ),
        (
            format!("    every: 30d\n    generate: {{length: 40, charset: digits}}\n{APPLY}"),
            "/etc/passbolt-sync/sync.yaml:10:28: rotate[0].generate: unknown field `charset`, expected `length` or `characters`".to_string(),
        ),
        (
            "    every: 30d\n    apply:\n      command: []\n".to_string(),
            format!("{entry}: `apply.command` is empty"),
        ),
        (
            format!("    every: 0s\n{APPLY}"),
            format!("{entry}: `every` must be at least 1s"),
        ),
    ] {
        assert_eq!(error(&rotate(&rest)), expected, "{rest}");
    }
}

#[test]
fn a_rotation_selects_by_id_only_and_once_per_field() {
    let by_name = format!("{HEAD}rotate:\n  - name: Prod DB\n    every: 30d\n{APPLY}");
    assert_eq!(
        error(&by_name),
        "/etc/passbolt-sync/sync.yaml:7:3: rotate: a rotation selects its resource by `resource:` (its id) only: a name can come to match another resource, whose secret would then be rotated; `passbolt-sync resources` lists the ids"
    );
    let twice = rotate(&format!(
        "    every: 30d\n{APPLY}  - resource: {ID}\n    when: expired\n{APPLY}"
    ));
    assert_eq!(
        error(&twice),
        format!(
            "/etc/passbolt-sync/sync.yaml: rotate: the rotation of password of resource {ID} appears twice; one entry per resource and field"
        )
    );
    let custom = rotate(&format!(
        "    field: custom:api token\n    every: 30d\n    generate: {{length: 40, characters: symbols}}\n{APPLY}  - resource: {ID}\n    when: expired\n{APPLY}"
    ));
    let config = Config::parse(&custom, Path::new("/etc/passbolt-sync/sync.yaml")).unwrap();
    assert_eq!(config.rotate.len(), 2);
    assert_eq!(config.rotate[0].key(), format!("{ID}/custom:api token"));
}
