//! The `rotate:` section: which secrets the daemon rotates, when, how it
//! makes the new value and the command that puts it in place. Checked as
//! it is read, so that every error has the entry's line and column.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::checks::*;
use super::*;

/// Default of `apply.timeout`.
pub const DEFAULT_APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Shortest `every` accepted: a rotation is a write to passbolt and a run
/// of `apply`, not something to repeat faster than a sync.
pub const MIN_ROTATE_EVERY: Duration = Duration::from_secs(1);

/// Fewest bits of entropy a configured generator must give (as
/// `passbolt_client::generate::MIN_BITS` for the policy's).
const MIN_BITS: f64 = passbolt_client::generate::MIN_BITS;

/// One `rotate:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotate {
    /// The resource's id: a rotation never selects by name.
    pub resource: String,
    /// `password`, or `custom:<label>`.
    pub field: Field,
    /// Rotate once the current secret is this old.
    pub every: Option<Duration>,
    /// Rotate once passbolt marks the resource expired.
    pub when_expired: bool,
    pub generate: Generator,
    pub apply: Apply,
}

impl Rotate {
    /// How logs, errors, metrics and the status name the rotation: ids and
    /// config words only.
    pub fn key(&self) -> String {
        format!("{}/{}", self.resource, self.field)
    }
}

impl fmt::Display for Rotate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rotation of {} of resource {}",
            self.field, self.resource
        )
    }
}

/// How a new value is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generator {
    /// The organisation's password policy, as `set --generate`.
    Policy,
    /// `length` characters of `characters`.
    Own {
        length: usize,
        characters: Characters,
    },
}

/// The alphabets of an own generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Characters {
    /// The 57 letters and digits that cannot be confused.
    Alphanumeric,
    /// 0 to 9.
    Digits,
    /// Letters and digits without look-alikes, and `-_.:+=!?*#%@`:
    /// characters every config syntax takes unquoted or quotes easily.
    Symbols,
}

impl Characters {
    pub fn alphabet(self) -> Vec<char> {
        let mut a = passbolt_client::generate::default_alphabet();
        match self {
            Characters::Alphanumeric => a,
            Characters::Digits => ('0'..='9').collect(),
            Characters::Symbols => {
                a.extend("-_.:+=!?*#%@".chars());
                a
            }
        }
    }
}

/// The command that puts a new value in place.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apply {
    pub command: HookCommand,
    #[serde(default = "default_apply_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

fn default_apply_timeout() -> Duration {
    DEFAULT_APPLY_TIMEOUT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotate {
    #[serde(default, deserialize_with = "de_opt_uuid")]
    resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    field: Option<RotatedField>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    every: Option<Duration>,
    #[serde(default)]
    when: Option<When>,
    #[serde(default)]
    generate: Option<RawGenerator>,
    #[serde(default)]
    apply: Option<Apply>,
}

/// `when:`: only `expired` (passbolt's password expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum When {
    Expired,
}

/// `generate: policy`, or `{length: N, characters: ...}`.
enum RawGenerator {
    Word(String),
    Own(OwnGenerator),
}

impl<'de> Deserialize<'de> for RawGenerator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawGenerator;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`policy` or {length: N, characters: alphanumeric|digits|symbols}")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawGenerator, E> {
                Ok(RawGenerator::Word(s.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawGenerator, A::Error> {
                OwnGenerator::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawGenerator::Own)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnGenerator {
    length: usize,
    #[serde(default = "default_characters")]
    characters: Characters,
}

fn default_characters() -> Characters {
    Characters::Alphanumeric
}

/// A field a rotation may change, checked where it is written.
struct RotatedField(Field);

impl<'de> Deserialize<'de> for RotatedField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "password or custom:<label>", |s| {
            let field = Field::parse(s)?;
            match field {
                Field::Password | Field::Custom(_) => Ok(RotatedField(field)),
                other => Err(format!(
                    "field {other} cannot be rotated: a rotation makes a new password, for `password` or a `custom:<label>` field"
                )),
            }
        })
    }
}

impl<'de> Deserialize<'de> for Rotate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRotate::deserialize(d)?;
        Rotate::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RawRotate> for Rotate {
    type Error = String;

    fn try_from(r: RawRotate) -> Result<Rotate, String> {
        if r.name.is_some() || r.folder.is_some() {
            return Err("a rotation selects its resource by `resource:` (its id) only: a name can come to match another resource, whose secret would then be rotated; `passbolt-sync resources` lists the ids".into());
        }
        let Some(resource) = r.resource else {
            return Err(
                "rotate: each entry needs `resource:`, the id of the resource to rotate".into(),
            );
        };
        let field = r.field.map(|f| f.0).unwrap_or(Field::Password);
        let at = format!("the rotation of {field} of resource {resource}");
        if let Some(every) = r.every
            && every < MIN_ROTATE_EVERY
        {
            return Err(format!("{at}: `every` must be at least 1s"));
        }
        if r.every.is_none() && r.when.is_none() {
            return Err(format!(
                "{at}: give `every` (e.g. every: 30d), `when: expired`, or both"
            ));
        }
        let Some(apply) = r.apply else {
            return Err(format!(
                "{at}: `apply` is required: the command that puts the new value in place (it gets the old and the new value as JSON on its stdin)"
            ));
        };
        if matches!(&apply.command, HookCommand::Argv(a) if a.is_empty())
            || matches!(&apply.command, HookCommand::Shell(s) if s.trim().is_empty())
        {
            return Err(format!("{at}: `apply.command` is empty"));
        }
        let generate = generator(&at, r.generate)?;
        Ok(Rotate {
            resource,
            field,
            every: r.every,
            when_expired: r.when == Some(When::Expired),
            generate,
            apply,
        })
    }
}

fn generator(at: &str, raw: Option<RawGenerator>) -> Result<Generator, String> {
    match raw {
        None => Ok(Generator::Policy),
        Some(RawGenerator::Word(w)) if w == "policy" => Ok(Generator::Policy),
        Some(RawGenerator::Word(w)) => Err(format!(
            "{at}: generate {w:?}: write `policy` or {{length: N, characters: alphanumeric|digits|symbols}}"
        )),
        Some(RawGenerator::Own(g)) => {
            let n = g.characters.alphabet().len() as f64;
            let bits = g.length as f64 * n.log2();
            if g.length > 1024 {
                return Err(format!("{at}: generate.length {} is over 1024", g.length));
            }
            if bits < MIN_BITS {
                let needed = (MIN_BITS / n.log2()).ceil();
                return Err(format!(
                    "{at}: generate.length {} gives {bits:.0} bits; at least {needed} characters of this alphabet reach {MIN_BITS:.0}",
                    g.length
                ));
            }
            Ok(Generator::Own {
                length: g.length,
                characters: g.characters,
            })
        }
    }
}
