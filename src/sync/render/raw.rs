//! A single field written as-is.

use zeroize::Zeroizing;

use passbolt_client::secret::Secret;

/// The field's bytes exactly: no trailing newline is added, because a
/// consumer reading a key or a password file would take it as part of the
/// value.
pub fn render(value: &Secret) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(value.expose().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_exact() {
        for v in ["", "hunter2", "line\n", "  spaced  ", "é☃"] {
            assert_eq!(render(&Secret::new(v)).as_slice(), v.as_bytes());
        }
    }
}
