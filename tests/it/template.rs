//! minijinja templates reaching secrets through `secret()`.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::thread::{self, ThreadId};

use passbolt_client::secret::Secret;
use passbolt_sync::sync::render::{Lookup, RenderError, Template};

const DB_PASSWORD: &str = "s3cr3t-\"quoted\"\nline2 'it''s' \\ $HOME";

/// Resources by id, also reachable by name; records which thread asked.
struct Vault {
    fields: HashMap<(String, String), String>,
    names: HashMap<String, String>,
    callers: Mutex<Vec<ThreadId>>,
}

impl Vault {
    fn new() -> Vault {
        let mut fields = HashMap::new();
        let mut put = |id: &str, field: &str, value: &str| {
            fields.insert((id.to_owned(), field.to_owned()), value.to_owned());
        };
        put("9f1c", "password", DB_PASSWORD);
        put("9f1c", "username", "app");
        put("9f1c", "custom:Port", "5432");
        put("77aa", "password", "9f1c");
        let names = HashMap::from([("db".to_owned(), "9f1c".to_owned())]);
        Vault {
            fields,
            names,
            callers: Mutex::new(Vec::new()),
        }
    }
}

impl Lookup for Vault {
    fn field(&self, resource: &str, field: &str) -> Result<Secret, String> {
        self.callers.lock().unwrap().push(thread::current().id());
        let id = self.names.get(resource).map_or(resource, String::as_str);
        match self.fields.get(&(id.to_owned(), field.to_owned())) {
            Some(v) => Ok(Secret::new(v.clone())),
            None if self.fields.keys().any(|(i, _)| i == id) => {
                Err(format!("resource {resource:?} has no field {field:?}"))
            }
            None => Err(format!("no resource {resource:?}")),
        }
    }
}

fn render(source: &str) -> Result<String, RenderError> {
    let t = Template::parse("app.conf", source.to_owned())?;
    t.render(&Vault::new())
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
}

#[test]
fn secret_by_id_and_name_with_default_and_named_fields() {
    let out = render(
        "user={{ secret('db', 'username') }}\n\
         port={{ secret('9f1c', field='custom:Port') }}\n\
         same={{ secret('db') == secret('9f1c', 'password') }}\n",
    )
    .unwrap();
    assert_eq!(out, "user=app\nport=5432\nsame=True\n");
    assert_eq!(render("{{ secret('db') }}").unwrap(), DB_PASSWORD);
}

#[test]
fn output_is_not_escaped_and_keeps_its_trailing_newline() {
    let t = Template::parse("page.html", "<{{ secret('db', 'username') }}>&\n\n".into()).unwrap();
    let out = t.render(&Vault::new()).unwrap();
    assert_eq!(out.as_slice(), b"<app>&\n\n");
}

#[test]
fn tojson_escapes_for_json() {
    let out = render("{\"password\": {{ secret('db')|tojson }}}\n").unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["password"], DB_PASSWORD);
}

#[test]
fn shell_quote_reads_back_in_a_shell() {
    let out = render("printf %s {{ secret('db')|shell_quote }}").unwrap();
    let printed = Command::new("sh").args(["-c", &out]).output().unwrap();
    assert!(printed.status.success());
    assert_eq!(printed.stdout, DB_PASSWORD.as_bytes());
}

#[test]
fn lookups_run_on_the_callers_thread() {
    let vault = Vault::new();
    let t = Template::parse(
        "t",
        "{{ secret('db') }}{{ secret('db', 'username') }}".into(),
    )
    .unwrap();
    t.render(&vault).unwrap();
    t.render(&vault).unwrap();
    let callers = vault.callers.lock().unwrap();
    assert_eq!(callers.len(), 4);
    assert!(callers.iter().all(|&id| id == thread::current().id()));
}

#[test]
fn templates_render_from_several_threads() {
    let t = Template::parse("t", "{{ secret('db', 'username') }}".into()).unwrap();
    let vault = Vault::new();
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(t.render(&vault).unwrap().as_slice(), b"app"));
        }
    });
}

#[test]
fn unknown_resource_or_field_is_an_error_with_its_line() {
    let err = render("a\nb\n{{ secret('nope') }}\n").unwrap_err();
    match &err {
        RenderError::Lookup {
            template,
            line,
            resource,
            field,
            message,
        } => {
            assert_eq!(template, "app.conf");
            assert_eq!(*line, Some(3));
            assert_eq!(resource, "nope");
            assert_eq!(field, "password");
            assert_eq!(message, "no resource \"nope\"");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "template app.conf, line 3: secret(\"nope\", field=\"password\"): no resource \"nope\""
    );

    let err = render("{{ secret('db', field='totp') }}").unwrap_err();
    assert!(
        matches!(err, RenderError::Lookup { ref field, .. } if field == "totp"),
        "{err:?}"
    );
}

#[test]
fn undefined_variables_are_errors() {
    let err = render("x\n{{ password }}").unwrap_err();
    match err {
        RenderError::TemplateRender { line, message, .. } => {
            assert_eq!(line, Some(2));
            assert!(message.contains("undefined"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(render("{{ secret('db').nope }}").is_err());
    assert!(render("{% if missing %}x{% endif %}").is_err());
}

#[test]
fn syntax_errors_report_the_line() {
    let err = Template::parse("bad.tmpl", "ok\nok\n{{ secret('db') \n".into()).unwrap_err();
    match &err {
        RenderError::TemplateSyntax { template, line, .. } => {
            assert_eq!(template, "bad.tmpl");
            assert_eq!(*line, Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("template bad.tmpl, line 3: syntax error")
    );
}

#[test]
fn bad_calls_to_secret_are_errors() {
    assert!(render("{{ secret() }}").is_err());
    assert!(render("{{ secret('db', 'password', field='username') }}").is_err());
    assert!(render("{{ secret('db', colour='blue') }}").is_err());
}

#[test]
fn errors_never_carry_secret_values() {
    for source in [
        // A value used where it cannot be.
        "{{ secret('db') + 1 }}",
        "{{ secret('db')|int }}",
        "{{ secret('db')[99] }}",
        // A value used as a template name.
        "{% include secret('db') %}",
        // A value used as a resource name: '77aa' holds the id '9f1c', and
        // a value used as a missing resource name is redacted.
        "{{ secret(secret('db', 'username') ~ secret('db')) }}",
        "{{ secret('db', secret('db')) }}",
    ] {
        let err = render(source).unwrap_err();
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(DB_PASSWORD), "{source}: {shown}");
            assert!(!shown.contains("s3cr3t"), "{source}: {shown}");
        }
    }
}
