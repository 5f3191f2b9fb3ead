//! Renewing the access token with the single-use refresh token, which
//! rotates through `Set-Cookie`, and falling back to a login when that
//! fails.

use super::*;

impl Session {
    /// Uses the refresh token, which is gone from the state whatever the
    /// outcome. Returns an error when no new access token came back.
    pub(super) async fn refresh_locked(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        let Some(RefreshToken {
            value: old,
            expires,
        }) = tokens.refresh.take()
        else {
            return Err(ClientError::NoRefreshToken);
        };
        let lifetime = self.refresh_lifetime.load(Ordering::Relaxed);
        if !refresh_usable(expires, self.server_now(), lifetime) {
            // The host slept or the daemon was paused past the token's
            // lifetime: the server would log presenting it as an attack.
            tracing::info!("the refresh token has expired or is about to; logging in instead");
            return Err(ClientError::NoRefreshToken);
        }
        let path = "/auth/jwt/refresh.json";
        let body =
            serde_json::json!({ "user_id": self.opts.user_id, "refresh_token": old.as_str() });
        let reply = match self.send(Method::POST, path, None, Some(&body)).await {
            // The connection was never made, so the token never left this
            // process: keeping it is not a replay.
            Err(e @ ClientError::Unreachable { connect: true, .. }) => {
                tokens.refresh = Some(RefreshToken {
                    value: old,
                    expires,
                });
                return Err(e);
            }
            other => other?,
        };
        if mfa::is_redirect(reply.status, reply.location.as_deref()) {
            // The MFA check runs before the token is consumed: keeping it
            // is not a replay.
            tokens.refresh = Some(RefreshToken {
                value: old,
                expires,
            });
            return Err(if self.totp.is_some() {
                ClientError::MfaDropped { path: path.into() }
            } else {
                ClientError::MfaRequired {
                    providers: Vec::new(),
                }
            });
        }
        drop(old);
        let decoded: AccessTokenBody = self.decode(path, &reply)?;
        tokens.access = Some(AccessToken::parse(
            decoded.access_token,
            path,
            self.server_now(),
        )?);
        match refresh_cookie(&reply.set_cookies) {
            Some(next) => {
                let max_age = refresh_cookie_max_age(&reply.set_cookies, self.server_now());
                if let Some(age) = max_age {
                    self.refresh_lifetime.store(age, Ordering::Relaxed);
                }
                tokens.refresh = Some(RefreshToken {
                    value: next,
                    expires: max_age.map(|a| self.server_now() + a),
                })
            }
            // The old token is spent; the next renewal will be a login.
            None => tracing::warn!("the refresh response carried no refresh_token cookie"),
        }
        // The server rebinds the MFA token to the new access token and
        // sends its cookie again.
        if let Some(cookie) = mfa::cookie(&reply.set_cookies) {
            *self.mfa_cookie.lock().expect("not poisoned") = Some(cookie);
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("access token refreshed");
        Ok(())
    }

    /// Renews the access token: refresh if we hold a refresh token, login
    /// when that fails or when we hold none.
    pub(super) async fn renew_locked(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        if tokens.refresh.is_some() {
            match self.refresh_locked(tokens).await {
                Ok(()) => return Ok(()),
                // Expired before it was sent: nothing failed on the server.
                Err(ClientError::NoRefreshToken) => {}
                // The access token still opens the MFA endpoints: verify
                // with it, then the unspent refresh token is good. Past
                // its expiry, the login below verifies instead.
                Err(ClientError::MfaDropped { .. })
                    if tokens
                        .access
                        .as_ref()
                        .is_some_and(|a| a.exp - self.server_now() > 5) =>
                {
                    tracing::warn!(
                        "the server dropped the MFA token (302 on refresh); verifying once more"
                    );
                    *self.mfa_cookie.lock().expect("not poisoned") = None;
                    self.reverify_locked(tokens).await?;
                    return self.refresh_locked(tokens).await;
                }
                Err(e) if e.is_outage() => {
                    // The token may or may not have been spent; it is gone
                    // either way, and a login now would hit the same outage.
                    self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    self.refresh_outages.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
                Err(e) => {
                    self.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "token refresh failed; logging in again");
                }
            }
        }
        self.login_locked(tokens).await
    }

    /// Whether a refresh token is held (for tests and status).
    pub async fn has_refresh_token(&self) -> bool {
        self.tokens.lock().await.refresh.is_some()
    }
}

/// The access token a successful renewal left in `tokens`.
pub(super) fn current(tokens: &Tokens) -> Zeroizing<String> {
    tokens
        .access
        .as_ref()
        .map(|a| a.value.clone())
        .expect("renewal sets an access token")
}

/// The `exp` claim of a JWT, read without checking the signature: the
/// server checks it; we only need to know when to renew.
pub fn token_exp(jwt: &str) -> Option<i64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Claims>(&bytes).ok().map(|c| c.exp)
}

/// Whether a refresh token expiring at `expires` may still be presented at
/// `now`: more than a minute left, or a quarter of its lifetime for
/// lifetimes under four minutes.
pub(super) fn refresh_usable(expires: Option<i64>, now: i64, lifetime: i64) -> bool {
    let margin = REFRESH_MARGIN.min(lifetime / 4).max(0);
    expires.is_none_or(|exp| exp - now > margin)
}

/// Seconds the `refresh_token` cookie lives, from `Max-Age` (which wins,
/// as in RFC 6265) or `expires` read against `server_now`.
pub fn refresh_cookie_max_age(set_cookies: &[String], server_now: i64) -> Option<i64> {
    let cookie = set_cookies.iter().find(|c| {
        c.split(';')
            .next()
            .and_then(|f| f.split_once('='))
            .is_some_and(|(n, _)| n.trim() == "refresh_token")
    })?;
    let attr = |name: &str| {
        cookie.split(';').skip(1).find_map(|a| {
            let (k, v) = a.split_once('=')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if let Some(age) = attr("max-age").and_then(|v| v.parse::<i64>().ok()) {
        return Some(age);
    }
    let expires = httpdate::parse_http_date(&attr("expires")?.replace('-', " ")).ok()?;
    let at = expires.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(at - server_now)
}

/// The value of `refresh_token=` among Set-Cookie headers. Parsed by hand:
/// the server marks it `secure` even over plain HTTP, which a cookie jar
/// would drop, and we must never send it back as a cookie anyway.
pub fn refresh_cookie(set_cookies: &[String]) -> Option<Zeroizing<String>> {
    set_cookies.iter().find_map(|c| {
        let first = c.split(';').next()?.trim();
        let (name, value) = first.split_once('=')?;
        (name.trim() == "refresh_token" && !value.is_empty() && value != "deleted")
            .then(|| Zeroizing::new(value.trim().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_refresh_cookie_from_captured_header() {
        let headers = vec![
            "passbolt_session=abc; path=/; HttpOnly".to_string(),
            "refresh_token=4d7f1f6c-1c0e-4f5e-8c63-2f4a0f1d7b11; expires=Mon, 28-Dec-2026 12:56:49 GMT; Max-Age=2592000; path=/; secure; HttpOnly".to_string(),
        ];
        assert_eq!(
            refresh_cookie(&headers).as_deref().map(String::as_str),
            Some("4d7f1f6c-1c0e-4f5e-8c63-2f4a0f1d7b11")
        );
        assert!(refresh_cookie(&headers[..1]).is_none());
    }

    #[test]
    fn reads_refresh_cookie_lifetime_from_max_age_or_expires() {
        let both = vec!["refresh_token=x; expires=Mon, 28-Dec-2026 12:56:49 GMT; Max-Age=2592000; path=/; secure; HttpOnly".to_string()];
        assert_eq!(refresh_cookie_max_age(&both, 0), Some(2592000));
        let expires =
            vec!["refresh_token=x; expires=Mon, 28-Dec-2026 12:56:49 GMT; path=/".to_string()];
        // 2026-12-28T12:56:49Z is 1798462609.
        assert_eq!(refresh_cookie_max_age(&expires, 1798462600), Some(9));
        assert_eq!(
            refresh_cookie_max_age(&["passbolt_session=a; Max-Age=5".to_string()], 0),
            None
        );
    }

    #[test]
    fn an_expired_or_nearly_expired_refresh_token_is_not_usable() {
        assert!(refresh_usable(None, 100, 0));
        assert!(refresh_usable(Some(1000), 900, 2592000));
        assert!(!refresh_usable(Some(1000), 950, 2592000), "within a minute");
        assert!(
            refresh_usable(Some(1000), 997, 8),
            "a quarter of a short lifetime"
        );
        assert!(!refresh_usable(Some(1000), 999, 8));
    }

    #[test]
    fn reads_exp_from_jwt() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"http://x/","sub":"u","exp":1795870902}"#);
        assert_eq!(token_exp(&format!("e30.{claims}.sig")), Some(1795870902));
        assert_eq!(token_exp("garbage"), None);
    }
}
