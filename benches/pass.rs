//! One sync pass (`run_pass`) over twelve targets of every format against
//! the sample set of the in-process dev server: 4 raw, 3 dotenv, 3 json, 2
//! template, by id, by name and by folder.
//!
//! Three situations: the first `once` (no file yet), `once` again (files
//! current, nothing held: every mapped secret is downloaded), and a
//! daemon's tick with the secrets held and nothing changed (nothing is
//! downloaded and no private-key operation runs).
//!
//! `cargo bench --bench pass`; under a minute.

mod support;

use std::path::Path;
use std::time::Instant;

use passbolt_devserver::seed::{self, ids};
use passbolt_devserver::{Account, DevServer, Options};
use passbolt_sync::config::Config;
use passbolt_sync::sync::held::{Held, SETTLE_SECONDS};
use passbolt_sync::sync::plan::Plan;
use passbolt_sync::sync::{PassOptions, PassReport, Status, run_pass};
use support::{Sampler, Who, fmt_bytes, new_client, row, section};

/// Twelve targets covering every format: raw by id and by name, dotenv and
/// json from vars and from a whole folder, templates by id and by name.
fn write_pass_config(dir: &Path, server: &DevServer, who: &Who) -> Config {
    let d = dir.display();
    std::fs::write(
        dir.join("app.conf.j2"),
        format!(
            "[db]\nuser = {{{{ secret('{db}', 'username') }}}}\npassword = {{{{ secret('{db}') }}}}\n\
             [gitlab]\npassword = {{{{ secret('{gl}') }}}}\n\
             [api]\ntoken = {{{{ secret('{cf}', 'custom:API token') }}}}\n\
             json = {{{{ secret('{gl}')|tojson }}}}\n",
            db = ids::MYAPP_DB,
            gl = ids::V5_DEFAULT,
            cf = ids::V5_CUSTOM_FIELDS,
        ),
    )
    .expect("template");
    // The sample set's personal items follow the order of the readers.
    let personal = match who.name() {
        "admin" => "Personal 0",
        "bob" => "Personal 1",
        _ => "Personal 2",
    };
    std::fs::write(
        dir.join("personal.j2"),
        format!(
            "me={{{{ secret('{personal}') }}}}\nsmtp={{{{ secret('SMTP relay') }}}}\nlegacy={{{{ secret('Legacy DB') }}}}\n"
        ),
    )
    .expect("template");
    let targets = format!(
        r#"targets:
  - path: {d}/gitlab.pw
    format: raw
    resource: {gitlab}
  - path: {d}/door.pin
    format: raw
    resource: {pin}
    field: pin
  - path: {d}/recovery.txt
    format: raw
    resource: {note}
    field: note
  - path: {d}/redis.pw
    format: raw
    name: Redis
  - path: {d}/app.env
    format: dotenv
    vars:
      GITLAB_PASSWORD: {{ resource: {gitlab} }}
      GITLAB_USER: {{ resource: {gitlab}, field: username }}
      SMTP_PASSWORD: {{ resource: {smtp} }}
      API_TOKEN: {{ resource: {custom}, field: "custom:API token" }}
      CLOUD_PASSWORD: {{ name: Cloud console }}
  - path: {d}/myapp.env
    format: dotenv
    folder: Production/myapp
  - path: {d}/mixed.env
    format: dotenv
    folder: Production/myapp
    vars:
      REDIS_PASSWORD: {{ name: Redis }}
  - path: {d}/app.json
    format: json
    vars:
      gitlab: {{ resource: {gitlab} }}
      pin: {{ resource: {pin}, field: pin }}
      backup: {{ resource: {backup} }}
  - path: {d}/myapp.json
    format: json
    folder: Production/myapp
  - path: {d}/hosts.json
    format: json
    vars:
      api_host: {{ resource: {custom}, field: "custom:API host" }}
      gitlab_uri: {{ resource: {gitlab}, field: uri }}
  - path: {d}/app.conf
    format: template
    template: {d}/app.conf.j2
  - path: {d}/personal.conf
    format: template
    template: {d}/personal.j2
"#,
        gitlab = ids::V5_DEFAULT,
        pin = ids::V5_PIN,
        note = ids::V5_NOTE,
        smtp = ids::V4_PASSWORD_DESCRIPTION,
        custom = ids::V5_CUSTOM_FIELDS,
        backup = ids::V4_PASSWORD_DESCRIPTION_TOTP,
    );
    let path = support::common::write_config(dir, server, &who.f, &targets);
    Config::load(&path).expect("bench config")
}

fn plan(config: &Config) -> Plan {
    Plan::build(config).expect("plan")
}

fn check_statuses(report: &PassReport, want: fn(&Status) -> bool, what: &str) {
    assert_eq!(report.targets.len(), 12, "{what}");
    for t in &report.targets {
        assert!(
            want(&t.status) && t.hook.is_none(),
            "{what}: {} is {:?}",
            t.path.display(),
            t.status
        );
    }
}

fn cost_note(report: &PassReport) -> String {
    let c = report.cost;
    format!(
        "{} requests, {}, {} secrets, {} private-key ops",
        c.requests,
        fmt_bytes(c.response_bytes),
        c.secrets_downloaded,
        c.private_key_operations
    )
}

async fn bench_pass(server: &DevServer, who: &Who) {
    let client = new_client(server, who);
    client.login().await.expect("login");
    client.list(true).await.expect("warm-up listing");

    let mut s = Sampler::new(40, 3000);
    let mut note = String::new();
    while s.more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan(&write_pass_config(dir.path(), server, who));
        let mut held = Held::new();
        let t = Instant::now();
        let report = run_pass(&client, &plan, &mut held, None, PassOptions::default())
            .await
            .expect("pass");
        s.push(t.elapsed());
        check_statuses(&report, |s| matches!(s, Status::Created), "first run");
        note = cost_note(&report);
    }
    row(
        &who.label("`once`, first: creates 12 files"),
        &s.stats(),
        &format!("{note}; fsync'd writes"),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan(&write_pass_config(dir.path(), server, who));
    let mut held = Held::new();
    run_pass(&client, &plan, &mut held, None, PassOptions::default())
        .await
        .expect("first pass");
    let mut s = Sampler::new(60, 3000);
    while s.more() {
        let mut held = Held::new();
        let t = Instant::now();
        let report = run_pass(&client, &plan, &mut held, None, PassOptions::default())
            .await
            .expect("pass");
        s.push(t.elapsed());
        check_statuses(&report, |s| matches!(s, Status::Unchanged), "once again");
        note = cost_note(&report);
    }
    row(
        &who.label("`once` again: 12 files unchanged"),
        &s.stats(),
        &note,
    );

    // `held` was filled after the seeded stamps settled (see main).
    let mut s = Sampler::new(100, 3000);
    while s.more() {
        let t = Instant::now();
        let report = run_pass(&client, &plan, &mut held, None, PassOptions::default())
            .await
            .expect("pass");
        s.push(t.elapsed());
        check_statuses(&report, |s| matches!(s, Status::Unchanged), "tick");
        assert_eq!(report.cost.secrets_downloaded, 0, "a warm tick downloads");
        assert_eq!(
            report.cost.private_key_operations, 0,
            "a warm tick decrypts"
        );
        note = cost_note(&report);
    }
    row(
        &who.label("daemon tick, held, nothing changed"),
        &s.stats(),
        &note,
    );
}

fn main() {
    let started = Instant::now();
    support::banner("one pass over 12 targets");
    let whos = Who::all();
    support::table_header();
    support::runtime().block_on(async {
        let accounts: Vec<Account> = whos.iter().map(|w| w.f.account()).collect();
        let readers: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
        let server = DevServer::start(
            Options::default(),
            accounts,
            seed::sample_folders(),
            seed::sample_resources(&readers),
        )
        .await
        .expect("dev server");
        // A stamp younger than SETTLE_SECONDS by the server's clock is
        // downloaded again on every tick: freeze the clock with the seeded
        // ones settled, so that the tick rows measure a settled state.
        server.set_clock(Some(server.now() + SETTLE_SECONDS + 1));
        section("one pass (run_pass) over 12 targets: 4 raw, 3 dotenv, 3 json, 2 template");
        for who in &whos {
            bench_pass(&server, who).await;
        }
    });
    println!();
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
