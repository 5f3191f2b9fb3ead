//! Checks of single values, run while serde reads them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::*;

// Each check runs inside the visitor of the scalar it checks, so that
// serde_yaml reports the error at that scalar's line and column (an error
// raised after the value was read would point at the enclosing mapping).

pub(super) struct Checked<F>(F, &'static str);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for Checked<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

pub(super) fn checked<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    d.deserialize_str(Checked(f, expecting))
}

/// Like `checked` for an optional value (`~` or `null` give `None`).
pub(super) struct OptChecked<F>(F, &'static str);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for OptChecked<F> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        checked(d, self.1, self.0).map(Some)
    }
}

pub(super) fn opt_checked<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    d.deserialize_option(OptChecked(f, expecting))
}

pub(super) fn de_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, "a URL", check_url)
}

/// Checks a server URL and returns it without trailing slash.
pub fn check_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("invalid server URL {s:?}: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "server URL {s:?} must not have a query or fragment"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("server URL {s:?} must not carry credentials"));
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                return Err(format!(
                    "server URL {s:?}: http:// is refused except on loopback; use https://"
                ));
            }
        }
        other => return Err(format!("server URL {s:?}: unsupported scheme {other:?}")),
    }
    Ok(s.trim_end_matches('/').to_string())
}

pub(super) fn de_fingerprint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt_checked(d, "a fingerprint", |s| {
        let fp = passbolt_client::pgp::normalize_fingerprint(s);
        if fp.len() != 40 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("fingerprint {s:?} is not 40 hexadecimal digits"));
        }
        Ok(fp)
    })
}

pub(super) fn check_uuid(s: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| format!("{s:?} is not a UUID"))
}

pub(super) fn de_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, "a UUID", check_uuid)
}

pub(super) fn de_opt_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt_checked(d, "a UUID", check_uuid)
}

pub(super) fn check_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(s))
}

pub(super) fn de_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    checked(d, "a path", check_path)
}

pub(super) fn de_opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    opt_checked(d, "a path", check_path)
}

pub(super) fn de_opt_folder<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt_checked(d, "a folder path", |s| {
        let norm = normalize_folder(s);
        if norm.is_empty() {
            return Err("empty folder path".into());
        }
        Ok(norm)
    })
}

/// `"/Production//myapp/"` and `"Production/myapp"` name the same folder.
pub fn normalize_folder(s: &str) -> String {
    s.split('/')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// A dotenv/json variable name, checked where it is written.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct VarName(String);

impl<'de> Deserialize<'de> for VarName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "a variable name", |s| {
            match values::var_name_problem(s) {
                None => Ok(VarName(s.to_string())),
                Some(reason) => Err(format!("invalid variable name {s:?}: {reason}")),
            }
        })
    }
}

pub(super) fn de_vars<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, VarSpec>>, D::Error> {
    let vars = Option::<BTreeMap<VarName, VarSpec>>::deserialize(d)?;
    Ok(vars.map(|v| v.into_iter().map(|(k, v)| (k.0, v)).collect()))
}

struct ModeVisitor;

impl<'de> Visitor<'de> for ModeVisitor {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quoted octal file mode such as \"0640\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u32>, E> {
        values::parse_mode(v).map(Some).map_err(E::custom)
    }

    // An unquoted 0640 is octal in YAML 1.1 and decimal 640 in serde_yaml:
    // refuse the ambiguity rather than guess.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u32>, E> {
        Err(E::custom(format!(
            "mode {v}: quote file modes, e.g. mode: \"0640\""
        )))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u32>, E> {
        Err(E::custom(format!(
            "mode {v}: quote file modes, e.g. mode: \"0640\""
        )))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u32>, E> {
        Ok(None)
    }
}

pub(super) fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    d.deserialize_any(ModeVisitor)
}

struct IdOrName;

impl<'de> Visitor<'de> for IdOrName {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a user or group name, or a numeric id")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        if v.is_empty() {
            return Err(E::custom("empty user or group name"));
        }
        Ok(Some(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<String>, E> {
        u32::try_from(v)
            .map(|id| Some(id.to_string()))
            .map_err(|_| E::custom(format!("id {v} is out of range")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
}

pub(super) fn de_opt_id_or_name<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    d.deserialize_any(IdOrName)
}

pub(super) fn check_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("duration {s:?}: {e}"))
}

pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    checked(d, "a duration such as 30s", check_duration)
}

pub(super) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    opt_checked(d, "a duration such as 30s", check_duration)
}

/// A duration, or `0` (a number or a string) to disable.
pub(super) fn de_full_sync_every<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 1h, or 0 to disable")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            match v {
                0 => Ok(None),
                _ => Err(E::custom(format!(
                    "{v} has no unit: write a duration such as 1h, or 0 to disable"
                ))),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_u64(
                u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?,
            )
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            if s.trim() == "0" {
                return Ok(None);
            }
            check_duration(s)
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// A duration up to `schedule::MAX_SPLAY`, or `0` (a number or a string).
pub(super) fn de_splay<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 5m, or 0")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            match v {
                0 => Ok(Duration::ZERO),
                _ => Err(E::custom(format!(
                    "splay {v} has no unit: write a duration such as 5m"
                ))),
            }
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            self.visit_u64(u64::try_from(v).map_err(|_| E::custom("splay cannot be negative"))?)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            let splay = check_duration(s).map_err(|e| E::custom(format!("splay: {e}")))?;
            if splay > crate::runtime::schedule::MAX_SPLAY {
                return Err(E::custom(format!(
                    "splay {s:?} is longer than the maximum of {}h",
                    crate::runtime::schedule::MAX_SPLAY.as_secs() / 3600
                )));
            }
            Ok(splay)
        }
    }
    d.deserialize_any(V)
}

pub(super) fn de_timezone<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt_checked(d, "an IANA time zone name", |s| {
        match s.parse::<chrono_tz::Tz>() {
            Ok(_) => Ok(s.to_string()),
            Err(_) => Err(format!(
                "unknown time zone {s:?}: use an IANA name such as Europe/Berlin"
            )),
        }
    })
}
