//! The TOTP second factor of an account under an MFA policy: the seed,
//! the codes it gives at a server time, and the `passbolt_mfa` cookie.
//!
//! The session decides when a code is sent; this module only knows what a
//! seed is and how passbolt spells the cookie and the MFA redirect.

use zeroize::Zeroizing;

/// The cookie that proves a verified second factor.
pub const COOKIE: &str = "passbolt_mfa";

/// Where the server sends every request while MFA is not verified.
pub const ERROR_PATH: &str = "/mfa/verify/error.json";

pub const TOTP_VERIFY_PATH: &str = "/mfa/verify/totp.json";

/// Why a TOTP seed cannot be used. Never carries the seed.
#[derive(Debug, thiserror::Error)]
pub enum TotpSeedError {
    #[error("empty")]
    Empty,
    #[error("not a base32 seed (letters A-Z and digits 2-7)")]
    Base32,
    #[error("not a usable otpauth://totp/ URI: {0}")]
    Uri(String),
    #[error("{digits} digits: passbolt accepts 6 to 8")]
    Digits { digits: u8 },
    #[error("a period of 0 seconds")]
    Period,
}

/// A TOTP seed with its algorithm, digits and period. Zeroized when
/// dropped (totp-rs's `zeroize` feature) and never printed.
#[derive(Clone)]
pub struct TotpSeed(totp_rs::Totp);

impl std::fmt::Debug for TotpSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSeed([redacted])")
    }
}

impl TotpSeed {
    /// Reads a seed as an authenticator app would take it: an
    /// `otpauth://totp/...` URI (algorithm, digits and period from its
    /// query), or a bare base32 seed (SHA-1, 6 digits, 30 s, the defaults
    /// passbolt's own setup uses). Spaces and `=` padding in a bare seed
    /// are ignored, and case does not matter.
    pub fn parse(text: &[u8]) -> Result<TotpSeed, TotpSeedError> {
        let text = std::str::from_utf8(text).map_err(|_| TotpSeedError::Base32)?;
        let text = text.trim();
        if text.is_empty() {
            return Err(TotpSeedError::Empty);
        }
        let totp = if text.starts_with("otpauth:") {
            // Unchecked: the RFC's 128-bit minimum would refuse the 80-bit
            // seeds some issuers hand out; what would make code generation
            // panic (digits, period) is checked below.
            totp_rs::Totp::from_url_unchecked(text)
                .map_err(|e| TotpSeedError::Uri(e.to_string()))?
        } else {
            let cleaned: Zeroizing<String> = Zeroizing::new(
                text.chars()
                    .filter(|c| !c.is_whitespace() && *c != '=')
                    .map(|c| c.to_ascii_uppercase())
                    .collect(),
            );
            let secret = totp_rs::Secret::try_from_base32(cleaned.as_str())
                .map_err(|_| TotpSeedError::Base32)?;
            totp_rs::Builder::new()
                .with_secret(secret)
                .build_noncompliant()
        };
        if !(6..=8).contains(&totp.digits()) {
            return Err(TotpSeedError::Digits {
                digits: totp.digits(),
            });
        }
        if totp.step() == 0 {
            return Err(TotpSeedError::Period);
        }
        if totp.secret().as_bytes().is_empty() {
            return Err(TotpSeedError::Empty);
        }
        Ok(TotpSeed(totp))
    }

    /// Seconds one code lasts.
    pub fn period(&self) -> u64 {
        self.0.step()
    }

    /// The step (code number) at unix time `t`.
    pub fn step_at(&self, t: i64) -> u64 {
        u64::try_from(t).unwrap_or(0) / self.period()
    }

    /// The code of `step`.
    pub fn code(&self, step: u64) -> Zeroizing<String> {
        Zeroizing::new(self.0.generate(step * self.period()).to_string())
    }

    /// Whether `code` is the code at unix time `t` exactly, as the
    /// server's check (no leeway) has it.
    pub fn accepts(&self, code: &str, t: i64) -> bool {
        let step = self.step_at(t);
        self.0.check(code, step * self.period()) == Some(step)
    }
}

/// The `passbolt_mfa` value among Set-Cookie headers; `None` when absent
/// or when the header deletes it.
pub fn cookie(set_cookies: &[String]) -> Option<Zeroizing<String>> {
    set_cookies.iter().find_map(|c| {
        let (name, value) = c.split(';').next()?.trim().split_once('=')?;
        let value = value.trim();
        let expired = c.split(';').skip(1).any(|a| {
            a.split_once('=')
                .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("max-age") && v.trim() == "0")
        });
        (name.trim() == COOKIE && !value.is_empty() && value != "deleted" && !expired)
            .then(|| Zeroizing::new(value.to_string()))
    })
}

/// Whether a response is passbolt's "MFA required" redirect.
pub fn is_redirect(status: reqwest::StatusCode, location: Option<&str>) -> bool {
    status == reqwest::StatusCode::FOUND && location.is_some_and(|l| l.contains("/mfa/verify"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 seed, "12345678901234567890".
    const RFC_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn bare_seed_gives_the_rfc_codes() {
        let seed = TotpSeed::parse(RFC_SEED.as_bytes()).unwrap();
        // RFC 6238, T = 59: 94287082 with 8 digits, so 287082 with 6.
        assert_eq!(seed.code(seed.step_at(59)).as_str(), "287082");
        assert!(seed.accepts("287082", 59));
        assert!(!seed.accepts("287082", 60), "no leeway");
        let spaced = TotpSeed::parse(b" gezd gnbv gy3t qojq gezd gnbv gy3t qojq==\n").unwrap();
        assert_eq!(spaced.code(1).as_str(), "287082");
    }

    #[test]
    fn otpauth_uri_carries_algorithm_digits_and_period() {
        let uri = format!(
            "otpauth://totp/passbolt:bot@example.com?secret={RFC_SEED}&algorithm=SHA1&digits=8&period=60&issuer=passbolt"
        );
        let seed = TotpSeed::parse(uri.as_bytes()).unwrap();
        assert_eq!(seed.period(), 60);
        // T = 59 is step 0 with a 60 s period: RFC code of T = 0..29.
        assert_eq!(seed.code(seed.step_at(59)).len(), 8);
    }

    #[test]
    fn bad_seeds_are_refused_without_echoing_them() {
        let e = TotpSeed::parse(b"not base32!").unwrap_err();
        assert!(!e.to_string().contains("base32!"), "{e}");
        assert!(matches!(
            TotpSeed::parse(b"  \n"),
            Err(TotpSeedError::Empty)
        ));
        let uri = format!("otpauth://totp/x?secret={RFC_SEED}&digits=12");
        assert!(matches!(
            TotpSeed::parse(uri.as_bytes()),
            Err(TotpSeedError::Digits { digits: 12 })
        ));
        let seed = TotpSeed::parse(RFC_SEED.as_bytes()).unwrap();
        assert_eq!(format!("{seed:?}"), "TotpSeed([redacted])");
    }

    #[test]
    fn reads_the_mfa_cookie() {
        let headers = vec![
            "passbolt_session=deleted; Max-Age=0; path=/".to_string(),
            "passbolt_mfa=2b0c5c1e-0b0a-4c5e-9d5e-6b7f0a1c2d3e; expires=Mon, 28-Dec-2026 12:56:49 GMT; Max-Age=2592000; path=/; HttpOnly".to_string(),
        ];
        assert_eq!(
            cookie(&headers).as_deref().map(String::as_str),
            Some("2b0c5c1e-0b0a-4c5e-9d5e-6b7f0a1c2d3e")
        );
        assert!(cookie(&["passbolt_mfa=deleted; Max-Age=0; path=/".to_string()]).is_none());
        assert!(cookie(&headers[..1]).is_none());
    }
}
