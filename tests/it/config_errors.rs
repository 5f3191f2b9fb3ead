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
        "/etc/passbolt-sync/sync.yaml:6:1: unknown field `zzz`, expected one of `server`, `auth`, `schedule`, `timezone`, `splay`, `full_sync_every`, `metrics`, `status_file`, `state_dir`, `targets`, `exec`, `agent`"
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
