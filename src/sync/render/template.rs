//! Free-form files rendered from a minijinja template.
//!
//! Templates reach secrets only through `secret(resource, field="password")`,
//! where `resource` is an id or a name and `field` is `password`,
//! `username`, `custom:Label` and so on, whatever the [`Lookup`] knows.
//! A resource or field that cannot be found is an error, never an empty
//! string, and so is any undefined variable. Output is not auto-escaped;
//! `|tojson` and `|shell_quote` escape for JSON and POSIX shells.

use std::sync::mpsc;
use std::thread;

use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use zeroize::Zeroizing;

use super::RenderError;
use passbolt_client::secret::Secret;

/// Where a template's `secret()` calls are answered.
pub trait Lookup: Send + Sync {
    /// The value of `field` of `resource` (an id or a name). The error is a
    /// message for the user and must not contain any secret.
    fn field(&self, resource: &str, field: &str) -> Result<Secret, String>;
}

/// A parsed template, ready to render any number of times.
pub struct Template {
    name: String,
    env: Environment<'static>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .finish()
    }
}

struct Request {
    resource: String,
    field: String,
    reply: mpsc::SyncSender<Result<Secret, String>>,
}

impl Template {
    /// Parses `source`; `name` is what errors call the template.
    pub fn parse(name: &str, source: String) -> Result<Template, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Config files usually end with a newline that must survive.
        env.set_keep_trailing_newline(true);
        // Debug info records the values of template variables, which may be
        // secrets, inside errors.
        env.set_debug(false);
        env.add_filter("shell_quote", shell_quote);
        env.add_template_owned(name.to_owned(), source)
            .map_err(|e| RenderError::TemplateSyntax {
                template: name.to_owned(),
                line: e.line(),
                message: safe_message(&e),
            })?;
        Ok(Template {
            name: name.to_owned(),
            env,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders the template, answering `secret()` calls from `lookup`.
    pub fn render(&self, lookup: &dyn Lookup) -> Result<Zeroizing<Vec<u8>>, RenderError> {
        // minijinja functions must be 'static, and `lookup` is borrowed. The
        // template therefore renders on a scoped thread whose `secret()`
        // sends each request back here, where `lookup` is called on the
        // caller's own thread (keeping its thread-locals and tracing span).
        let (tx, rx) = mpsc::channel::<Request>();
        let mut env = self.env.clone();
        env.add_function("secret", secret_function(tx));
        let name = self.name.clone();

        thread::scope(|scope| {
            let spawned =
                thread::Builder::new()
                    .name("template".into())
                    .spawn_scoped(scope, move || {
                        let rendered = env.get_template(&name).and_then(|t| t.render(()));
                        // `env` holds the only sender; dropping it ends the
                        // request loop below.
                        drop(env);
                        rendered
                    });
            let Ok(worker) = spawned else {
                return Err(RenderError::TemplateRender {
                    template: self.name.clone(),
                    line: None,
                    message: "cannot start a thread to render it".to_owned(),
                });
            };

            let mut served: Vec<Secret> = Vec::new();
            let mut failure: Option<(String, String, String)> = None;
            for req in rx {
                let answer = lookup.field(&req.resource, &req.field);
                match &answer {
                    Ok(secret) => served.push(secret.clone()),
                    Err(message) => {
                        failure = Some((req.resource.clone(), req.field.clone(), message.clone()));
                    }
                }
                let _ = req.reply.send(answer);
            }

            let rendered = match worker.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            match rendered {
                Ok(text) => Ok(Zeroizing::new(text.into_bytes())),
                Err(e) => Err(match failure {
                    // A template can build a resource name out of another
                    // secret, and the lookup's message may quote that name
                    // in any escaped form.
                    Some((resource, field, message)) => {
                        let resource_tainted = contains_secret(&resource, &served);
                        let field_tainted = contains_secret(&field, &served);
                        let message_tainted =
                            resource_tainted || field_tainted || contains_secret(&message, &served);
                        RenderError::Lookup {
                            template: self.name.clone(),
                            line: e.line(),
                            resource: redact(resource, resource_tainted),
                            field: redact(field, field_tainted),
                            message: redact(message, message_tainted),
                        }
                    }
                    None => RenderError::TemplateRender {
                        template: self.name.clone(),
                        line: e.line(),
                        message: safe_message(&e),
                    },
                }),
            }
        })
    }
}

fn secret_function(
    requests: mpsc::Sender<Request>,
) -> impl Fn(String, Option<String>, Kwargs) -> Result<Value, minijinja::Error> + Send + Sync + 'static
{
    move |resource, field, kwargs| {
        let field_kw: Option<String> = kwargs.get("field")?;
        kwargs.assert_all_used()?;
        let field = match (field, field_kw) {
            (Some(_), Some(_)) => {
                return Err(minijinja::Error::new(
                    ErrorKind::TooManyArguments,
                    "secret() got the field twice",
                ));
            }
            (Some(f), None) | (None, Some(f)) => f,
            (None, None) => "password".to_owned(),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let unavailable =
            || minijinja::Error::new(ErrorKind::InvalidOperation, "secret lookup is unavailable");
        requests
            .send(Request {
                resource,
                field,
                reply,
            })
            .map_err(|_| unavailable())?;
        match answer.recv().map_err(|_| unavailable())? {
            Ok(secret) => Ok(Value::from(secret.expose())),
            Err(message) => Err(minijinja::Error::new(ErrorKind::InvalidOperation, message)),
        }
    }
}

/// Quotes a string for a POSIX shell: `it's` becomes `'it'\''s'`.
fn shell_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// minijinja's details can quote runtime values (a template name computed
/// from a secret, a value that failed to convert), so they are kept only
/// for kinds whose detail names template constructs.
fn safe_message(e: &minijinja::Error) -> String {
    let kind = e.kind();
    let detail_is_static = matches!(
        kind,
        ErrorKind::SyntaxError
            | ErrorKind::BadEscape
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownMethod
            | ErrorKind::TooManyArguments
            | ErrorKind::MissingArgument
    );
    match e.detail() {
        Some(detail) if detail_is_static => format!("{kind}: {detail}"),
        _ => kind.to_string(),
    }
}

fn contains_secret(text: &str, secrets: &[Secret]) -> bool {
    secrets
        .iter()
        .any(|s| !s.is_empty() && text.contains(s.expose()))
}

fn redact(text: String, tainted: bool) -> String {
    if tainted {
        "[redacted]".to_owned()
    } else {
        text
    }
}
