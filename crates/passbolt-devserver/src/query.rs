//! The query string as the real server reads it, for the parameters the
//! dev server honours: PHP's bracket syntax (`filter[has-id][]=a`), then
//! `QueryStringComponent`'s whitelist, normalisation and validation
//! (`src/Controller/Component/QueryStringComponent.php`, v5.12). Keys a
//! controller does not whitelist are dropped silently: an unknown filter
//! lists everything.

/// A request's query, decoded.
pub(super) struct Query {
    pairs: Vec<(String, String)>,
}

/// One `filter[has-id]` entry as PHP builds it: its array key, and its
/// value unless that is itself an array (`filter[has-id][0][x]=...`).
struct Entry {
    key: String,
    value: Option<String>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        Query {
            pairs: url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        }
    }

    /// Every value of `key`, in order (`filter[has-access]` and the like).
    pub fn values(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `contain[name]` is there: the server includes a contain as
    /// soon as its key is present, `contain[secret]=0` included.
    pub fn contains(&self, name: &str) -> bool {
        let key = format!("contain[{name}]");
        self.pairs.iter().any(|(k, _)| *k == key)
    }

    /// `filter[has-id]`: `None` when absent, else the ids (lower-cased, as
    /// the server's UUID type compares them). An entry that is not a UUID
    /// is the server's 400, whose message this returns.
    pub fn has_id(&self) -> Result<Option<Vec<String>>, String> {
        let Some(entries) = self.has_id_entries() else {
            return Ok(None);
        };
        let mut ids = Vec::with_capacity(entries.len());
        for Entry { key, value } in entries {
            let invalid = |what: &str| {
                format!("Invalid filter. \"{what}\" is not a valid resource id for filter has-id.")
            };
            if !is_php_int(&key) {
                return Err(invalid(&key));
            }
            match value {
                // PHP's empty(): "" and "0". The server's message for this
                // case passes too few arguments and keeps its placeholder.
                None => return Err(empty_entry(&key)),
                Some(v) if v.is_empty() || v == "0" => return Err(empty_entry(&key)),
                Some(v) if !is_uuid(&v) => return Err(invalid(&v)),
                Some(v) => ids.push(v.to_ascii_lowercase()),
            }
        }
        Ok(Some(ids))
    }

    /// `filter[has-parent]`: `None` when absent, else the folder ids
    /// (lower-cased), `None` in the list standing for the root (`false`
    /// or `0`, the server's `Folder::ROOT_ID`). An entry that is neither a
    /// UUID nor the root is a 400 (the message follows `has-id`'s; the
    /// server's own wording for this filter is not captured).
    #[allow(clippy::type_complexity)]
    pub fn has_parent(&self) -> Result<Option<Vec<Option<String>>>, String> {
        let Some(entries) = self.entries("filter[has-parent]") else {
            return Ok(None);
        };
        let mut ids = Vec::with_capacity(entries.len());
        for Entry { key, value } in entries {
            let invalid = |what: &str| {
                format!(
                    "Invalid filter. \"{what}\" is not a valid folder id for filter has-parent."
                )
            };
            if !is_php_int(&key) {
                return Err(invalid(&key));
            }
            match value {
                Some(v) if v == "0" || v.eq_ignore_ascii_case("false") => ids.push(None),
                Some(v) if is_uuid(&v) => ids.push(Some(v.to_ascii_lowercase())),
                Some(v) => return Err(invalid(&v)),
                None => return Err(invalid(&key)),
            }
        }
        Ok(Some(ids))
    }

    fn has_id_entries(&self) -> Option<Vec<Entry>> {
        self.entries("filter[has-id]")
    }

    /// The `KEY` array PHP builds from the query (e.g. `filter[has-id]`):
    /// a later plain `KEY=x` replaces what came before (the server then
    /// casts it to `[x]`), `[]` appends, `[k]` sets key `k`.
    fn entries(&self, key: &str) -> Option<Vec<Entry>> {
        let mut entries: Option<Vec<Entry>> = None;
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix(key) else {
                continue;
            };
            if rest.is_empty() {
                entries = Some(vec![Entry {
                    key: "0".into(),
                    value: Some(v.clone()),
                }]);
                continue;
            }
            let Some((sub, deeper)) = rest.strip_prefix('[').and_then(|r| r.split_once(']')) else {
                continue;
            };
            let list = entries.get_or_insert_with(Vec::new);
            let key = if sub.is_empty() {
                let next = list
                    .iter()
                    .filter_map(|e| e.key.parse::<i64>().ok().filter(|_| is_php_int(&e.key)))
                    .max()
                    .map_or(0, |m| m + 1);
                next.to_string()
            } else {
                sub.to_string()
            };
            let value = deeper.is_empty().then(|| v.clone());
            match list.iter_mut().find(|e| e.key == key) {
                Some(e) => e.value = value,
                None => list.push(Entry { key, value }),
            }
        }
        entries
    }
}

fn empty_entry(key: &str) -> String {
    format!("Invalid filter. \"{key}\" is not a valid resource id for filter {{1}}.")
}

/// Whether PHP makes an integer array key of `s` ("12", "-3"; not "012").
fn is_php_int(s: &str) -> bool {
    s.parse::<i64>().is_ok_and(|n| n.to_string() == s)
}

/// CakePHP's `Validation::uuid`: the hyphenated form, version 0 to 5,
/// variant 0, 8, 9, a or b, either case.
pub(super) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
        && (b'0'..=b'5').contains(&b[14])
        && matches!(b[19], b'0' | b'8' | b'9' | b'a' | b'b' | b'A' | b'B')
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3c2b5e1a-0000-4000-8000-000000000001";
    const B: &str = "3c2b5e1a-0000-4000-8000-000000000002";

    fn has_id(raw: &str) -> Result<Option<Vec<String>>, String> {
        Query::parse(Some(raw)).has_id()
    }

    #[test]
    fn has_id_takes_every_form_php_reads() {
        assert_eq!(has_id("contain[secret]=1"), Ok(None));
        assert_eq!(
            has_id(&format!(
                "filter%5Bhas-id%5D%5B%5D={A}&filter[has-id][]={B}"
            )),
            Ok(Some(vec![A.into(), B.into()]))
        );
        assert_eq!(
            has_id(&format!("filter[has-id]={A}")),
            Ok(Some(vec![A.into()]))
        );
        // A later plain value replaces the array; a later [] starts anew.
        assert_eq!(
            has_id(&format!("filter[has-id][]={A}&filter[has-id]={B}")),
            Ok(Some(vec![B.into()]))
        );
        assert_eq!(
            has_id(&format!("filter[has-id][3]={A}&filter[has-id][]={B}")),
            Ok(Some(vec![A.into(), B.into()]))
        );
        assert_eq!(
            has_id(&format!("filter[has-id][]={}", A.to_uppercase())),
            Ok(Some(vec![A.into()]))
        );
    }

    #[test]
    fn has_id_refuses_what_the_server_refuses_with_its_message() {
        assert_eq!(
            has_id("filter[has-id][]=nope"),
            Err("Invalid filter. \"nope\" is not a valid resource id for filter has-id.".into())
        );
        assert_eq!(
            has_id(&format!("filter[has-id][x]={A}")),
            Err("Invalid filter. \"x\" is not a valid resource id for filter has-id.".into())
        );
        assert_eq!(
            has_id(&format!("filter[has-id][]={A}&filter[has-id][]=")),
            Err("Invalid filter. \"1\" is not a valid resource id for filter {1}.".into())
        );
        // The simple and braced forms the uuid crate accepts are not UUIDs
        // to CakePHP.
        assert!(has_id("filter[has-id][]=3c2b5e1a000040008000000000000001").is_err());
        assert!(has_id(&format!("filter[has-id][]={{{A}}}")).is_err());
    }

    #[test]
    fn has_parent_takes_folder_ids_and_the_root() {
        let q = |raw: &str| Query::parse(Some(raw)).has_parent();
        assert_eq!(q("contain[secret]=1"), Ok(None));
        assert_eq!(
            q(&format!(
                "filter%5Bhas-parent%5D%5B%5D={A}&filter[has-parent][]=false&filter[has-parent][]=0"
            )),
            Ok(Some(vec![Some(A.into()), None, None]))
        );
        assert!(q("filter[has-parent][]=nope").is_err());
    }

    #[test]
    fn contain_is_present_whatever_its_value() {
        let q = Query::parse(Some("contain%5Bsecret%5D=0"));
        assert!(q.contains("secret"));
        assert!(!q.contains("permission"));
    }
}
