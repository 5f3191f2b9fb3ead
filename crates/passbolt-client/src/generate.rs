//! New secret values: the organisation's password policy
//! (`/password-policies/settings.json`) when the server has one, else a
//! documented default. Randomness comes from the OS CSPRNG (`getrandom`),
//! drawn without modulo bias.

use serde::Deserialize;

use crate::secret::Secret;

/// Entropy every generated value reaches at least. A policy's length is
/// a default chosen for people typing passwords; a machine secret gets as
/// many more characters of the policy's alphabet as this takes.
pub const MIN_BITS: f64 = 128.0;

/// Length of a password made without a policy: 32 characters of the 57
/// unambiguous letters and digits, 186 bits, safe in any config syntax.
pub const DEFAULT_LENGTH: usize = 32;

/// `GET /password-policies/settings.json`, as far as generating reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct PasswordPolicy {
    #[serde(default)]
    pub default_generator: Option<String>,
    pub password_generator_settings: PasswordSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PasswordSettings {
    pub length: usize,
    #[serde(default)]
    pub mask_upper: bool,
    #[serde(default)]
    pub mask_lower: bool,
    #[serde(default)]
    pub mask_digit: bool,
    #[serde(default)]
    pub mask_parenthesis: bool,
    #[serde(default)]
    pub mask_emoji: bool,
    #[serde(default)]
    pub mask_char1: bool,
    #[serde(default)]
    pub mask_char2: bool,
    #[serde(default)]
    pub mask_char3: bool,
    #[serde(default)]
    pub mask_char4: bool,
    #[serde(default)]
    pub mask_char5: bool,
    #[serde(default)]
    pub exclude_look_alike_chars: bool,
}

/// The characters behind each mask, as the browser extension defines them
/// (the server only stores the switches).
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const DIGIT: &str = "0123456789";
const PARENTHESIS: &str = "{([|])}";
const CHAR1: &str = "#$%&@^~";
const CHAR2: &str = ".,:;";
const CHAR3: &str = "'\"`";
const CHAR4: &str = "/\\_-";
const CHAR5: &str = "<*+!?=";
const LOOK_ALIKE: &str = "Ol|I01";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error("the password policy enables no character class")]
    EmptyAlphabet,
    #[error("the OS random number generator failed: {0}")]
    Random(String),
}

/// The alphabet a policy allows, in a fixed order.
pub fn alphabet(p: &PasswordSettings) -> Vec<char> {
    let mut out: Vec<char> = Vec::new();
    for (on, set) in [
        (p.mask_upper, UPPER),
        (p.mask_lower, LOWER),
        (p.mask_digit, DIGIT),
        (p.mask_parenthesis, PARENTHESIS),
        (p.mask_char1, CHAR1),
        (p.mask_char2, CHAR2),
        (p.mask_char3, CHAR3),
        (p.mask_char4, CHAR4),
        (p.mask_char5, CHAR5),
    ] {
        if on {
            out.extend(set.chars());
        }
    }
    if p.mask_emoji {
        // The Unicode "Emoticons" block.
        out.extend((0x1F600u32..=0x1F64F).filter_map(char::from_u32));
    }
    if p.exclude_look_alike_chars {
        out.retain(|c| !LOOK_ALIKE.contains(*c));
    }
    out.dedup();
    out
}

/// The default alphabet: letters and digits without look-alikes.
pub fn default_alphabet() -> Vec<char> {
    UPPER
        .chars()
        .chain(LOWER.chars())
        .chain(DIGIT.chars())
        .filter(|c| !LOOK_ALIKE.contains(*c))
        .collect()
}

/// Characters of an `n`-letter alphabet needed for `MIN_BITS`.
pub fn length_for_min_bits(n: usize) -> usize {
    (MIN_BITS / (n as f64).log2()).ceil() as usize
}

/// A new password: the policy's alphabet and length (raised to reach
/// `MIN_BITS`), or `DEFAULT_LENGTH` characters of `default_alphabet`.
/// A passphrase policy is answered with a password of its password
/// settings: passphrases need the EFF word list, which is not shipped.
pub fn generate(policy: Option<&PasswordPolicy>) -> Result<Secret, GenerateError> {
    let (alphabet, length) = match policy {
        Some(p) => {
            let a = alphabet(&p.password_generator_settings);
            if a.len() < 2 {
                return Err(GenerateError::EmptyAlphabet);
            }
            let n = a.len();
            (
                a,
                p.password_generator_settings
                    .length
                    .max(length_for_min_bits(n)),
            )
        }
        None => (default_alphabet(), DEFAULT_LENGTH),
    };
    pick(&alphabet, length)
}

/// `length` characters drawn uniformly from `alphabet`.
pub fn pick(alphabet: &[char], length: usize) -> Result<Secret, GenerateError> {
    let n = alphabet.len() as u32;
    // Values at or above `limit` would favour the first characters.
    let limit = u32::MAX - (u32::MAX % n);
    let mut out = String::with_capacity(length * 4);
    let mut buf = zeroize::Zeroizing::new([0u8; 256]);
    while out.chars().count() < length {
        getrandom::fill(&mut buf[..]).map_err(|e| GenerateError::Random(e.to_string()))?;
        for word in buf.chunks_exact(4) {
            let v = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            if v < limit {
                out.push(alphabet[(v % n) as usize]);
                if out.chars().count() == length {
                    break;
                }
            }
        }
    }
    Ok(Secret::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_default() -> PasswordPolicy {
        serde_json::from_str(
            r#"{"default_generator":"password","password_generator_settings":{"length":18,"mask_upper":true,"mask_lower":true,
 "mask_digit":true,"mask_parenthesis":true,"mask_emoji":false,"mask_char1":true,"mask_char2":true,"mask_char3":true,
 "mask_char4":true,"mask_char5":true,"exclude_look_alike_chars":true},"passphrase_generator_settings":{"words":9,
 "word_separator":" ","word_case":"lowercase"},"source":"default","external_dictionary_check":true}"#,
        )
        .unwrap()
    }

    #[test]
    fn default_reaches_128_bits_without_look_alikes() {
        let a = default_alphabet();
        assert_eq!(a.len(), 57);
        assert!(DEFAULT_LENGTH as f64 * (a.len() as f64).log2() >= MIN_BITS);
        let s = generate(None).unwrap();
        assert_eq!(s.expose().chars().count(), DEFAULT_LENGTH);
        assert!(s.expose().chars().all(|c| a.contains(&c)));
    }

    #[test]
    fn follows_the_policy_and_raises_its_length_to_128_bits() {
        let p = live_default();
        let a = alphabet(&p.password_generator_settings);
        assert!(!a.iter().any(|c| LOOK_ALIKE.contains(*c)));
        let s = generate(Some(&p)).unwrap();
        let len = s.expose().chars().count();
        assert!(len >= 18);
        assert!(len as f64 * (a.len() as f64).log2() >= MIN_BITS);
        assert!(s.expose().chars().all(|c| a.contains(&c)));
    }

    #[test]
    fn longer_policy_length_is_kept_and_digits_only_policy_works() {
        let mut p = live_default();
        p.password_generator_settings.length = 64;
        assert_eq!(generate(Some(&p)).unwrap().expose().chars().count(), 64);
        let s = &mut p.password_generator_settings;
        (s.mask_upper, s.mask_lower, s.mask_parenthesis) = (false, false, false);
        (
            s.mask_char1,
            s.mask_char2,
            s.mask_char3,
            s.mask_char4,
            s.mask_char5,
        ) = (false, false, false, false, false);
        s.length = 8;
        let v = generate(Some(&p)).unwrap();
        // 8 digits (0 and 1 excluded) give 24 bits; 43 give 129.
        assert_eq!(v.expose().len(), length_for_min_bits(8));
        assert!(v.expose().chars().all(|c| ('2'..='9').contains(&c)));
    }

    #[test]
    fn empty_policy_is_refused() {
        let mut p = live_default();
        let s = &mut p.password_generator_settings;
        (s.mask_upper, s.mask_lower, s.mask_digit, s.mask_parenthesis) =
            (false, false, false, false);
        (
            s.mask_char1,
            s.mask_char2,
            s.mask_char3,
            s.mask_char4,
            s.mask_char5,
        ) = (false, false, false, false, false);
        assert_eq!(generate(Some(&p)), Err(GenerateError::EmptyAlphabet));
    }

    #[test]
    fn draws_are_uniform_enough() {
        // 57 symbols, 57,000 draws: every symbol within a wide band of
        // its expected 1,000 (a modulo bias or a stuck source would not be).
        let a = default_alphabet();
        let s = pick(&a, 57_000).unwrap();
        for c in &a {
            let n = s.expose().chars().filter(|x| x == c).count();
            assert!((800..1200).contains(&n), "{c}: {n}");
        }
    }
}
