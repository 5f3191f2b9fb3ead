//! A flat JSON object of named secrets.

use serde::ser::{Serialize, SerializeMap, Serializer};
use zeroize::Zeroizing;

use passbolt_client::secret::Secret;

struct InOrder<'a>(&'a [(String, Secret)]);

impl Serialize for InOrder<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value.expose())?;
        }
        map.end()
    }
}

/// A pretty-printed JSON object with the keys in the given order, followed
/// by a newline. Keys are expected to be unique.
pub fn render(vars: &[(String, Secret)]) -> Zeroizing<Vec<u8>> {
    // Escaping grows a byte to at most six (`\u001f`); sizing for that up
    // front keeps the buffer from reallocating and leaving copies behind.
    let capacity = 4 + vars
        .iter()
        .map(|(n, v)| 6 * (n.len() + v.expose().len()) + 8)
        .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    serde_json::to_writer_pretty(&mut *out, &InOrder(vars))
        .expect("serializing strings into memory cannot fail");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_escaping() {
        let vars = [
            ("zeta".to_owned(), Secret::new("q\"uote\n")),
            ("alpha".to_owned(), Secret::new("\u{1}é")),
        ];
        let out = render(&vars);
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            "{\n  \"zeta\": \"q\\\"uote\\n\",\n  \"alpha\": \"\\u0001é\"\n}\n"
        );
        let back: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back["zeta"], "q\"uote\n");
        assert_eq!(render(&[]).as_slice(), b"{}\n");
    }
}
