//! Turning secrets into file content.
//!
//! Every renderer returns its output in a [`Zeroizing`](zeroize::Zeroizing)
//! buffer, and every [`RenderError`] names what went wrong (a variable, a
//! template and line) without ever carrying a secret value.

pub mod dotenv;
pub mod env;
pub mod json;
pub mod raw;
pub mod template;

pub use template::{Lookup, Template};

/// Why content could not be rendered. No variant carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("invalid variable name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("variable {var} is defined more than once")]
    DuplicateName { var: String },

    #[error("the value of variable {var} cannot be written safely: {reason}")]
    Unrepresentable { var: String, reason: &'static str },

    #[error("existing dotenv content is malformed at entry {entry}: {reason}")]
    Parse { entry: usize, reason: &'static str },

    #[error("template {template}{}: syntax error: {message}", at_line(*.line))]
    TemplateSyntax {
        template: String,
        line: Option<usize>,
        message: String,
    },

    #[error("template {template}{}: {message}", at_line(*.line))]
    TemplateRender {
        template: String,
        line: Option<usize>,
        message: String,
    },

    #[error(
        "template {template}{}: secret({resource:?}, field={field:?}): {message}",
        at_line(*.line)
    )]
    Lookup {
        template: String,
        line: Option<usize>,
        resource: String,
        field: String,
        message: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}
