//! The dotenv renderer: whatever it writes reads back identically, in
//! both dialects, and the reader never panics on any file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passbolt_sync::sync::render::dotenv::{self, Dialect};
use passbolt_client::secret::Secret;

fuzz_target!(|data: &[u8]| {
    let _ = dotenv::parse(data);
    let _ = dotenv::parse_with(data, Dialect::Docker);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Values separated by NUL, one variable each.
    let vars: Vec<(String, Secret)> = text
        .split('\0')
        .enumerate()
        .map(|(i, v)| (format!("VAR_{i}"), Secret::new(v)))
        .collect();
    for dialect in [Dialect::Portable, Dialect::Docker] {
        let Ok(rendered) = dotenv::render(&vars, dialect) else {
            continue;
        };
        let back = dotenv::parse_with(&rendered, dialect).expect("rendered output parses");
        assert_eq!(back.len(), vars.len(), "{dialect:?}: variable count");
        for ((name, value), (bname, bvalue)) in vars.iter().zip(&back) {
            assert_eq!(name, bname, "{dialect:?}");
            assert!(
                value.expose() == bvalue.expose(),
                "{dialect:?}: {name} does not read back: {:?} became {:?}",
                value.expose(),
                bvalue.expose()
            );
        }
    }
});
