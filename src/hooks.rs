// placeholder until the hooks module lands
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum HookCommand {
    Argv(Vec<String>),
    Shell(String),
}
