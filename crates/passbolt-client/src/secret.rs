//! Decoded resources and the `Secret` type that carries their sensitive fields.
//!
//! `Secret` never prints its content: not through `Debug`, not through
//! `Display` (it has none), not through serde. Reading it takes an explicit
//! `expose()`, which makes every place that touches a secret easy to find.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string, wiped from memory on drop.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret value. Callers must not log it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

/// A TOTP definition as passbolt stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Totp {
    /// The base32 shared key: a secret.
    pub secret_key: Secret,
    pub algorithm: String,
    pub digits: u32,
    pub period: u64,
}

impl Totp {
    /// The `otpauth://` URI authenticator apps read. It embeds the secret key.
    pub fn uri(&self, label: &str, issuer: Option<&str>) -> Secret {
        let mut uri = format!(
            "otpauth://totp/{}?secret={}&algorithm={}&digits={}&period={}",
            percent_encode(label),
            self.secret_key.expose().replace(' ', ""),
            self.algorithm,
            self.digits,
            self.period
        );
        if let Some(issuer) = issuer {
            uri.push_str("&issuer=");
            uri.push_str(&percent_encode(issuer));
        }
        Secret::new(uri)
    }
}

/// RFC 3986 unreserved characters pass, everything else is %-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A custom field after joining metadata (label) and secret (value) by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomField {
    pub id: String,
    pub label: String,
    pub kind: String,
    pub value: Secret,
}

/// The decrypted secret part of a resource. Which fields exist depends on
/// the resource type: `None` means the type has no such field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretFields {
    pub password: Option<Secret>,
    pub description: Option<Secret>,
    pub note: Option<Secret>,
    pub pin: Option<Secret>,
    pub totp: Option<Totp>,
    pub custom_fields: Vec<CustomField>,
}

impl SecretFields {
    pub fn custom(&self, label: &str) -> Option<&CustomField> {
        self.custom_fields.iter().find(|c| c.label == label)
    }
}

/// A resource with its metadata decoded (v4 cleartext or v5 decrypted).
/// Nothing here is secret: the secret part travels as `SecretFields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub id: String,
    pub name: String,
    pub username: Option<String>,
    pub uris: Vec<String>,
    /// Description kept in the metadata (v5) or cleartext (v4 password-string).
    pub description: Option<String>,
    /// Folder path from the root, `/`-separated; `None` at the root.
    pub folder: Option<String>,
    pub type_slug: String,
    /// Labels of the custom fields the metadata declares, by field id.
    pub custom_field_labels: Vec<(String, String)>,
    /// The server's `modified` of the resource: changes with every update,
    /// the secret's included, at one-second precision.
    pub modified: Option<String>,
}

/// Which field of a resource a target or variable takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Password,
    Username,
    Uri,
    Name,
    Description,
    Note,
    Pin,
    Totp,
    TotpUri,
    Custom(String),
}

impl Field {
    pub fn parse(s: &str) -> Result<Field, String> {
        Ok(match s {
            "password" => Field::Password,
            "username" => Field::Username,
            "uri" => Field::Uri,
            "name" => Field::Name,
            "description" => Field::Description,
            "note" => Field::Note,
            "pin" => Field::Pin,
            "totp" => Field::Totp,
            "totp_uri" => Field::TotpUri,
            _ => match s.strip_prefix("custom:") {
                Some(label) if !label.is_empty() => Field::Custom(label.to_string()),
                _ => {
                    return Err(format!(
                        "unknown field {s:?}: expected one of password, username, uri, name, \
                         description, note, pin, totp, totp_uri, custom:<label>"
                    ));
                }
            },
        })
    }

    /// Whether reading the field needs the resource's secret decrypted.
    pub fn is_secret(&self) -> bool {
        !matches!(self, Field::Username | Field::Uri | Field::Name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Password => f.write_str("password"),
            Field::Username => f.write_str("username"),
            Field::Uri => f.write_str("uri"),
            Field::Name => f.write_str("name"),
            Field::Description => f.write_str("description"),
            Field::Note => f.write_str("note"),
            Field::Pin => f.write_str("pin"),
            Field::Totp => f.write_str("totp"),
            Field::TotpUri => f.write_str("totp_uri"),
            Field::Custom(l) => write!(f, "custom:{l}"),
        }
    }
}

/// Every resource type slug of passbolt v5.12.
pub const RESOURCE_TYPES: &[&str] = &[
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
];

/// Whether resources of type `slug` have `field` at all. Unknown (future)
/// types are given the benefit of the doubt; the value check happens on read.
pub fn type_has_field(slug: &str, field: &Field) -> bool {
    if !RESOURCE_TYPES.contains(&slug) {
        return true;
    }
    let is = |list: &[&str]| list.contains(&slug);
    match field {
        Field::Name => true,
        // Every type with a password also has a username, and no other.
        Field::Password | Field::Username => is(&[
            "password-string",
            "password-and-description",
            "password-description-totp",
            "v5-password-string",
            "v5-default",
            "v5-default-with-totp",
        ]),
        Field::Uri => slug != "v5-pin-code",
        Field::Description => slug != "totp",
        Field::Note => slug == "v5-note",
        Field::Pin => slug == "v5-pin-code",
        Field::Totp | Field::TotpUri => is(&[
            "totp",
            "password-description-totp",
            "v5-default-with-totp",
            "v5-totp-standalone",
        ]),
        Field::Custom(_) => is(&["v5-default", "v5-default-with-totp", "v5-custom-fields"]),
    }
}

/// Why a field cannot be read from a resource. Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("resource {id} ({name:?}) is of type {slug}, which has no {field} field")]
    NotInType {
        id: String,
        name: String,
        slug: String,
        field: String,
    },
    #[error("resource {id} ({name:?}) has no custom field labelled {label:?}{}", if available.is_empty() { String::new() } else { format!(" (it has: {})", available.join(", ")) })]
    NoCustomField {
        id: String,
        name: String,
        label: String,
        available: Vec<String>,
    },
    #[error("resource {id} ({name:?}) has no value for {field}")]
    Empty {
        id: String,
        name: String,
        field: String,
    },
    #[error("the secret of resource {id} was not decrypted")]
    NotDecrypted { id: String },
}

impl Resource {
    /// Reads one field. Name, username and uri come from the metadata; the
    /// rest needs `secret`, the resource's decrypted secret.
    pub fn field(
        &self,
        field: &Field,
        secret: Option<&SecretFields>,
    ) -> Result<Secret, FieldError> {
        if !type_has_field(&self.type_slug, field) {
            return Err(FieldError::NotInType {
                id: self.id.clone(),
                name: self.name.clone(),
                slug: self.type_slug.clone(),
                field: field.to_string(),
            });
        }
        let empty = || FieldError::Empty {
            id: self.id.clone(),
            name: self.name.clone(),
            field: field.to_string(),
        };
        match field {
            Field::Name => return Ok(Secret::new(self.name.clone())),
            Field::Username => return self.username.clone().map(Secret::new).ok_or_else(empty),
            Field::Uri => {
                return self
                    .uris
                    .first()
                    .cloned()
                    .map(Secret::new)
                    .ok_or_else(empty);
            }
            _ => {}
        }
        let secret = secret.ok_or_else(|| FieldError::NotDecrypted {
            id: self.id.clone(),
        })?;
        match field {
            Field::Password => secret.password.clone().ok_or_else(empty),
            Field::Description => secret
                .description
                .clone()
                .or_else(|| self.description.clone().map(Secret::new))
                .ok_or_else(empty),
            Field::Note => secret.note.clone().ok_or_else(empty),
            Field::Pin => secret.pin.clone().ok_or_else(empty),
            Field::Totp => secret
                .totp
                .as_ref()
                .map(|t| t.secret_key.clone())
                .ok_or_else(empty),
            Field::TotpUri => {
                let label = match &self.username {
                    Some(u) => format!("{}:{u}", self.name),
                    None => self.name.clone(),
                };
                secret
                    .totp
                    .as_ref()
                    .map(|t| t.uri(&label, Some(&self.name)))
                    .ok_or_else(empty)
            }
            Field::Custom(label) => {
                secret
                    .custom(label)
                    .map(|c| c.value.clone())
                    .ok_or_else(|| FieldError::NoCustomField {
                        id: self.id.clone(),
                        name: self.name.clone(),
                        label: label.clone(),
                        available: secret
                            .custom_fields
                            .iter()
                            .map(|c| c.label.clone())
                            .collect(),
                    })
            }
            Field::Name | Field::Username | Field::Uri => unreachable!("handled above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        let f = SecretFields {
            password: Some(s.clone()),
            totp: Some(Totp {
                secret_key: Secret::new("JBSWY3DPEHPK3PXP"),
                algorithm: "SHA1".into(),
                digits: 6,
                period: 30,
            }),
            ..Default::default()
        };
        let dbg = format!("{f:?}");
        assert!(!dbg.contains("hunter2"));
        assert!(!dbg.contains("JBSWY3DPEHPK3PXP"));
    }

    #[test]
    fn totp_uri_encodes_label() {
        let t = Totp {
            secret_key: Secret::new("JBSWY3DPEHPK3PXP"),
            algorithm: "SHA1".into(),
            digits: 6,
            period: 30,
        };
        assert_eq!(
            t.uri("ops@cloud console", Some("ACME")).expose(),
            "otpauth://totp/ops%40cloud%20console?secret=JBSWY3DPEHPK3PXP&algorithm=SHA1&digits=6&period=30&issuer=ACME"
        );
    }
}
