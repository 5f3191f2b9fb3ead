//! The secret parser on arbitrary plaintexts, for every resource type:
//! an error, never a panic. The first byte picks the type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passbolt_client::decode::parse_secret;
use passbolt_client::model::CustomFieldEntry;

const SLUGS: &[&str] = &[
    "password-string",
    "password-and-description",
    "totp",
    "password-description-totp",
    "v5-password-string",
    "v5-default",
    "v5-default-with-totp",
    "v5-totp-standalone",
    "v5-custom-fields",
    "v5-note",
    "v5-pin-code",
    "some-future-type",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, plaintext)) = data.split_first() else {
        return;
    };
    let slug = SLUGS[pick as usize % SLUGS.len()];
    // Custom field entries as v5 metadata carries them, so the secret's
    // values are joined with labels on some inputs.
    let custom: Vec<CustomFieldEntry> = if pick & 0x80 != 0 {
        serde_json::from_str(
            r#"[{"id":"0b3e7a70-0000-4000-8000-000000000001","type":"text","metadata_key":"API token"},
                {"id":"0b3e7a70-0000-4000-8000-000000000002","type":"password","metadata_key":"pin"}]"#,
        )
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    let _ = parse_secret("9f1c5d3e-6a0b-4b7e-8f2a-1c3d5e7f9a0b", slug, plaintext, &custom);
});
