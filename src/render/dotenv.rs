#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[default]
    Portable,
    Docker,
}
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("empty".into())
    } else {
        Ok(())
    }
}
