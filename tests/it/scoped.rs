//! The scoped listing: a tick lists only what its targets map, by id
//! (`filter[has-id][]`) and by folder (`filter[has-parent][]`); names,
//! folder paths and template references are resolved on a full listing
//! at the first pass, every resolution period, and when something
//! resolved stops resolving. Every pass here runs in-process against the
//! dev server, with its clock frozen so that stamps settle on demand.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{client, devserver, fixture, write_config};
use passbolt_client::Client;
use passbolt_devserver::seed::{SeedFolder, ids};
use passbolt_devserver::{DevServer, Options};
use passbolt_sync::config::Config;
use passbolt_sync::sync::held::Held;
use passbolt_sync::sync::plan::Plan;
use passbolt_sync::sync::{PassOptions, PassReport, run_pass};

struct Rig {
    server: DevServer,
    dir: tempfile::TempDir,
    client: Client,
    plan: Plan,
    held: Held,
    /// Requests seen before the last pass.
    seen: usize,
}

impl Rig {
    async fn new(targets: impl Fn(&Path) -> String) -> Rig {
        let server = devserver(Options::default()).await;
        // Frozen, with the seeded stamps settled.
        server.set_clock(Some(server.now() + 3));
        let dir = tempfile::tempdir().unwrap();
        let who = fixture("bob");
        let config = write_config(dir.path(), &server, &who, &targets(dir.path()));
        let plan = Plan::build(&Config::load(&config).unwrap()).unwrap();
        let client = client(&server, &who);
        Rig {
            server,
            dir,
            client,
            plan,
            held: Held::new(),
            seen: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    async fn pass(&mut self) -> PassReport {
        self.seen = self.server.requests().len();
        run_pass(
            &self.client,
            &self.plan,
            &mut self.held,
            None,
            PassOptions::default(),
        )
        .await
        .unwrap()
    }

    /// The queries of the listings (without secrets) of the last pass.
    fn listings(&self) -> Vec<String> {
        self.server.requests()[self.seen..]
            .iter()
            .filter(|(p, q, _)| p == "/resources.json" && !q.contains("secret"))
            .map(|(_, q, _)| q.clone())
            .collect()
    }

    /// Lets the server's clock move on past the settling delay.
    fn settle(&self) {
        self.server.set_clock(Some(self.server.now() + 3));
    }

    fn status(&self, report: &PassReport, name: &str) -> String {
        let t = report
            .targets
            .iter()
            .find(|t| t.path == self.path(name))
            .unwrap_or_else(|| panic!("no report for {name}: {report:?}"));
        format!("{:?}", t.status)
    }
}

fn is(status: &str, prefix: &str) -> bool {
    status.starts_with(prefix)
}

const PIN_AND_FOLDER: fn(&Path) -> String = |out| {
    format!(
        "schedule: every 1s\ntargets:\n  - {{ path: {out}/pin, format: raw, resource: {pin}, field: pin }}\n  - {{ path: {out}/myapp.env, format: dotenv, folder: Production/myapp }}\n",
        out = out.display(),
        pin = ids::V5_PIN,
    )
};

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_tick_lists_the_mapped_ids_and_folders_only() {
    let mut rig = Rig::new(PIN_AND_FOLDER).await;
    let first = rig.pass().await;
    assert!(first.full_listing, "the folder path is resolved first");
    assert_eq!(rig.read("pin"), "73019468");
    assert!(rig.read("myapp.env").contains("DB_PASSWORD="));

    for _ in 0..3 {
        let tick = rig.pass().await;
        assert!(!tick.full_listing, "{tick:?}");
        assert!(tick.all_current(), "{tick:?}");
        assert_eq!(tick.cost.secrets_downloaded, 0);
        assert_eq!(tick.cost.requests, 2, "one listing by id, one by folder");
        assert_eq!(tick.resources_listed, 3, "the pin and the folder's two");
        let listings = rig.listings();
        assert_eq!(listings.len(), 2, "{listings:?}");
        assert!(
            listings
                .iter()
                .any(|q| q == &format!("filter%5Bhas-id%5D%5B%5D={}", ids::V5_PIN)),
            "{listings:?}"
        );
        assert!(
            listings
                .iter()
                .any(|q| q == &format!("filter%5Bhas-parent%5D%5B%5D={}", ids::FOLDER_MYAPP)),
            "{listings:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_by_id_only_never_list_everything_not_even_cold() {
    let mut rig = Rig::new(|out| {
        format!(
            "targets:\n  - {{ path: {out}/pin, format: raw, resource: {pin}, field: pin }}\n  - path: {out}/app.env\n    format: dotenv\n    vars:\n      REDIS: {{ resource: {redis} }}\n      SMTP: {{ resource: {smtp} }}\n",
            out = out.display(),
            pin = ids::V5_PIN,
            redis = ids::V5_PASSWORD_STRING,
            smtp = ids::V4_PASSWORD_DESCRIPTION,
        )
    })
    .await;
    let cold = rig.pass().await;
    assert!(!cold.full_listing);
    assert!(cold.all_current(), "{cold:?}");
    assert_eq!(cold.resources_listed, 3);
    assert_eq!(cold.cost.secrets_downloaded, 3);
    let listings = rig.listings();
    assert_eq!(listings.len(), 1, "one scoped listing: {listings:?}");
    assert_eq!(listings[0].matches("has-id").count(), 3, "{listings:?}");
    assert!(rig.read("app.env").contains("smtp-pass-v4"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_moved_into_or_out_of_a_selected_folder_shows_at_the_next_tick() {
    let mut rig = Rig::new(PIN_AND_FOLDER).await;
    rig.pass().await;
    assert!(!rig.read("myapp.env").contains("GITLAB"));

    rig.server
        .move_resource(ids::V5_DEFAULT, Some(ids::FOLDER_MYAPP));
    let moved_in = rig.pass().await;
    assert!(!moved_in.full_listing, "{moved_in:?}");
    assert!(
        is(&rig.status(&moved_in, "myapp.env"), "Updated"),
        "{moved_in:?}"
    );
    assert_eq!(moved_in.cost.secrets_downloaded, 1, "only the newcomer");
    assert!(rig.read("myapp.env").contains("GITLAB="));

    rig.server.move_resource(ids::V5_DEFAULT, None);
    let moved_out = rig.pass().await;
    assert!(!moved_out.full_listing, "{moved_out:?}");
    assert!(is(&rig.status(&moved_out, "myapp.env"), "Updated"));
    assert_eq!(moved_out.cost.secrets_downloaded, 0);
    assert!(!rig.read("myapp.env").contains("GITLAB"));
    assert!(rig.read("myapp.env").contains("DB_PASSWORD="));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_that_leaves_the_scoped_listing_follows_on_missing() {
    let mut rig = Rig::new(|out| {
        format!(
            "targets:\n  - {{ path: {out}/pin, format: raw, resource: {pin}, field: pin, on_missing: remove }}\n  - {{ path: {out}/redis, format: raw, name: Redis, on_missing: keep }}\n",
            out = out.display(),
            pin = ids::V5_PIN,
        )
    })
    .await;
    let first = rig.pass().await;
    assert!(first.full_listing, "the name is resolved first");
    assert_eq!(rig.read("redis"), "redis-pass-v5");
    let tick = rig.pass().await;
    assert!(!tick.full_listing);
    assert_eq!(tick.resources_listed, 2);

    // By id: gone from the scoped listing is gone; nothing to re-resolve.
    let bob = fixture("bob").id.clone();
    rig.server.revoke(ids::V5_PIN, &bob);
    let gone = rig.pass().await;
    assert!(!gone.full_listing, "{gone:?}");
    assert!(is(&rig.status(&gone, "pin"), "Removed"), "{gone:?}");
    assert!(!rig.path("pin").exists());

    // By name: renamed away, the scoped listing no longer resolves it, so
    // the pass resolves it again on a full listing, where it is missing.
    rig.server
        .rename(ids::V5_PASSWORD_STRING, "Redis old")
        .unwrap();
    rig.settle();
    let renamed = rig.pass().await;
    assert!(renamed.full_listing, "{renamed:?}");
    assert!(is(&rig.status(&renamed, "redis"), "Kept"), "{renamed:?}");
    assert_eq!(rig.read("redis"), "redis-pass-v5", "kept as it was");
    // Missing since the last resolution: no full listing at every tick.
    let after = rig.pass().await;
    assert!(!after.full_listing, "{after:?}");
    assert!(is(&rig.status(&after, "redis"), "Kept"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_renamed_is_noticed_at_the_next_resolution_and_one_gone_at_once() {
    let mut rig = Rig::new(PIN_AND_FOLDER).await;
    // Resolve every half second (the full sync's period).
    rig.plan.full_sync_every = Some(Duration::from_millis(500));
    rig.pass().await;
    let env = rig.read("myapp.env");

    rig.server
        .add_folder(SeedFolder {
            id: ids::FOLDER_MYAPP.into(),
            name: "myapp-renamed".into(),
            parent: Some(ids::FOLDER_PRODUCTION.into()),
            encrypted: true,
        })
        .unwrap();
    let tick = rig.pass().await;
    assert!(
        !tick.full_listing,
        "tracked by folder id until resolved again"
    );
    assert!(tick.all_current(), "{tick:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let resolved = rig.pass().await;
    assert!(resolved.full_listing, "{resolved:?}");
    assert!(
        is(&rig.status(&resolved, "myapp.env"), "Kept"),
        "the path names no folder any more: {resolved:?}"
    );
    assert_eq!(rig.read("myapp.env"), env);

    // Back under its name, then gone: the folder id stops answering, and
    // the same tick resolves again on a full listing.
    rig.server
        .add_folder(SeedFolder {
            id: ids::FOLDER_MYAPP.into(),
            name: "myapp".into(),
            parent: Some(ids::FOLDER_PRODUCTION.into()),
            encrypted: true,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let back = rig.pass().await;
    assert!(back.full_listing && back.all_current(), "{back:?}");
    rig.server.remove_folder(ids::FOLDER_MYAPP);
    let gone = rig.pass().await;
    assert!(gone.full_listing, "{gone:?}");
    assert!(is(&rig.status(&gone, "myapp.env"), "Kept"), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_starts_to_match_is_found_at_the_next_resolution() {
    let mut rig = Rig::new(|out| {
        std::fs::write(
            out.join("t.tpl"),
            "{{ secret(\"Production/myapp/db password\") }}\n",
        )
        .unwrap();
        format!(
            "targets:\n  - {{ path: {out}/late, format: raw, name: Redis later, on_missing: keep }}\n  - path: {out}/t.txt\n    format: template\n    template: {out}/t.tpl\n",
            out = out.display(),
        )
    })
    .await;
    rig.plan.full_sync_every = Some(Duration::from_millis(500));

    let first = rig.pass().await;
    assert!(first.full_listing);
    assert!(is(&rig.status(&first, "late"), "Kept"), "{first:?}");
    assert_eq!(rig.read("t.txt"), "myapp-db-pass\n");
    let tick = rig.pass().await;
    assert!(!tick.full_listing, "{tick:?}");
    assert_eq!(tick.resources_listed, 1, "the template's one resource");

    rig.server
        .rename(ids::V5_PASSWORD_STRING, "Redis later")
        .unwrap();
    rig.settle();
    let unseen = rig.pass().await;
    assert!(!unseen.full_listing);
    assert!(
        is(&rig.status(&unseen, "late"), "Kept"),
        "not before the next resolution: {unseen:?}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let found = rig.pass().await;
    assert!(found.full_listing);
    assert!(is(&rig.status(&found, "late"), "Created"), "{found:?}");
    assert_eq!(rig.read("late"), "redis-pass-v5");
}
