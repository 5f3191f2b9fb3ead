//! The JWT login: the server is authenticated first (`verify_server`),
//! then the challenge is signed for it and its answer checked; and the
//! logout that revokes the refresh token.

use super::*;

const LOGIN_PATH: &str = "/auth/jwt/login.json";

/// The check before a first login, on what `/settings.json` announced:
/// `announced` its `app.url`, `offset` its `header.servertime` minus this
/// host's clock. Compared as the server compares the challenge's domain
/// (exactly, trailing slashes forgiven); the clock only where the login
/// cannot correct for it (see `Session::precheck`). `None` is not checked.
pub fn check_announced(
    base_url: &str,
    announced: Option<&str>,
    offset: Option<i64>,
) -> Result<(), ClientError> {
    if let Some(announced) = announced
        && announced.trim_end_matches('/') != base_url.trim_end_matches('/')
    {
        return Err(ClientError::BaseUrlMismatch {
            configured: base_url.to_string(),
            announced: announced.trim_end_matches('/').to_string(),
        });
    }
    // A minute short of the tolerance: the offset is measured to the
    // second, across a round trip.
    let tolerance = crate::pgp::CLOCK_SKEW_TOLERANCE.as_secs() as i64 - 60;
    if let Some(offset) = offset
        && offset > tolerance
    {
        return Err(ClientError::ClockSkew {
            offset_secs: offset,
        });
    }
    Ok(())
}

impl Session {
    /// `GET /auth/verify.json`: the server's key, checked against the pin,
    /// against its own announced fingerprint, and against the key this
    /// process saw before.
    pub async fn verify_server(&self) -> Result<PublicKey, ClientError> {
        let path = "/auth/verify.json";
        let reply = self.send(Method::GET, path, None, None::<&()>).await?;
        let body: VerifyBody = self.decode(path, &reply)?;
        let key =
            PublicKey::from_armor(body.keydata.as_bytes()).map_err(|e| ClientError::Malformed {
                path: path.into(),
                detail: format!("keydata: {e}"),
            })?;
        let announced = crate::pgp::normalize_fingerprint(&body.fingerprint);
        if key.fingerprint() != announced {
            return Err(ClientError::ServerKeyInconsistent {
                announced,
                actual: key.fingerprint(),
            });
        }
        if let Some(pin) = &self.opts.fingerprint
            && *pin != key.fingerprint()
        {
            return Err(ClientError::PinMismatch {
                expected: pin.clone(),
                actual: key.fingerprint(),
            });
        }
        let mut known = self.server_key.lock().expect("not poisoned");
        if self.opts.fingerprint.is_none()
            && let Some(previous) = known.as_ref()
            && previous.fingerprint() != key.fingerprint()
        {
            return Err(ClientError::ServerKeyChanged {
                previous: previous.fingerprint(),
                current: key.fingerprint(),
            });
        }
        *known = Some(key.clone());
        Ok(key)
    }

    /// Once per process, before the first challenge: the two causes of a
    /// refused login that can be known without sending one. `GET
    /// /settings.json` (unauthenticated) carries `app.url`, the string the
    /// server compares the challenge's `domain` with (trailing slashes
    /// forgiven), and `header.servertime`. The challenge's expiry is taken
    /// from the server's clock, so an offset matters only where it cannot
    /// be corrected: the server signs its answer by its own clock, and a
    /// signature dated beyond OpenPGP's tolerance in our future is refused.
    /// A server that announces no base URL (older versions, a proxy that
    /// filters the settings) leaves that cause unchecked, as before.
    async fn precheck(&self) -> Result<(), ClientError> {
        if self.prechecked.lock().expect("not poisoned").is_some() {
            return Ok(());
        }
        let path = "/settings.json";
        let reply = self.send(Method::GET, path, None, None::<&()>).await?;
        let (announced, servertime) = match self.decode_timed::<SettingsBody>(path, &reply) {
            Ok((body, servertime)) => (body.app.and_then(|a| a.url), servertime),
            Err(e) => {
                tracing::debug!(error = %e, "no settings to check the base URL against");
                (None, None)
            }
        };
        if announced.is_none() {
            tracing::debug!("the server announces no base URL (app.url); server.url not checked");
        }
        check_announced(
            &self.opts.base_url,
            announced.as_deref(),
            servertime.map(|t| t - now()),
        )?;
        *self.prechecked.lock().expect("not poisoned") = Some(Prechecked {
            base_url: announced.is_some(),
            clock: servertime.is_some(),
        });
        Ok(())
    }

    /// The two requests of a first login that need no key, at once: the
    /// server's key (`/auth/verify.json`, checked as always) and the check
    /// before the first login (`/settings.json`). The next login uses that
    /// server key instead of asking again. Made while the account's key is
    /// being unlocked, they cost a command no time of their own. On an
    /// error nothing is kept, and the login asks (and fails) again.
    pub async fn prepare_login(&self) -> Result<(), ClientError> {
        let (key, ()) = tokio::try_join!(self.verify_server(), self.precheck())?;
        *self.prepared_server_key.lock().expect("not poisoned") = Some(key);
        Ok(())
    }

    /// A full login; replaces whatever tokens the session had.
    pub async fn login(&self) -> Result<(), ClientError> {
        let (mut tokens, _gate) = self.exclusive().await;
        self.login_locked(&mut tokens).await
    }

    /// The token state, with no request in flight until the guards drop.
    pub(super) async fn exclusive(&self) -> (MutexGuard<'_, Tokens>, RwLockWriteGuard<'_, ()>) {
        let tokens = self.tokens.lock().await;
        let gate = self.gate.write().await;
        self.generation.fetch_add(1, Ordering::Relaxed);
        (tokens, gate)
    }

    pub(super) async fn login_locked(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        // Forget the old tokens first: whatever happens next, they are not
        // to be used again by this process.
        tokens.access = None;
        tokens.refresh = None;
        let prepared = self
            .prepared_server_key
            .lock()
            .expect("not poisoned")
            .take();
        let server_key = match prepared {
            Some(key) => key,
            None => self.verify_server().await?,
        };
        self.precheck().await?;
        let (challenge, verify_token) = self.sign_challenge(&server_key).await?;
        let body = self.post_challenge(challenge).await?;
        let response = self.check_answer(&server_key, body, &verify_token).await?;
        let path = LOGIN_PATH;
        tokens.access = Some(AccessToken::parse(
            response.access_token,
            path,
            self.server_now(),
        )?);
        let lifetime = self.refresh_lifetime.load(Ordering::Relaxed);
        tokens.refresh = Some(RefreshToken {
            value: Zeroizing::new(response.refresh_token),
            expires: (lifetime > 0).then(|| self.server_now() + lifetime),
        });
        if let Some(providers) = response.providers.filter(|p| !p.is_empty()) {
            // Whatever cookie went with the login, the server did not take it.
            *self.mfa_cookie.lock().expect("not poisoned") = None;
            if let Err(e) = self.answer_mfa(tokens, &providers).await {
                // Tokens of an unverified login open nothing but the MFA
                // endpoints (and the server would not let them be revoked).
                tokens.access = None;
                tokens.refresh = None;
                return Err(e);
            }
        }
        self.logins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(user_id = %self.opts.user_id, server = %self.opts.base_url, "logged in");
        Ok(())
    }

    /// The challenge for `server_key`: our base URL, a fresh verify token
    /// and its expiry, encrypted to the server and signed with our key.
    /// Returns the armored challenge and the verify token.
    async fn sign_challenge(
        &self,
        server_key: &PublicKey,
    ) -> Result<(String, String), ClientError> {
        let verify_token = uuid::Uuid::new_v4().to_string();
        let request = ChallengeRequest {
            version: PROTOCOL_VERSION.into(),
            domain: self.opts.base_url.clone(),
            verify_token: verify_token.clone(),
            verify_token_expiry: (self.server_now() + VERIFY_TOKEN_LIFETIME).into(),
        };
        let plaintext = serde_json::to_vec(&request).expect("serializable");
        let key = self.user_key().clone();
        let sk = server_key.clone();
        let challenge = tokio::task::spawn_blocking(move || key.encrypt_and_sign(&sk, &plaintext))
            .await
            .expect("encryption task")
            .map_err(|source| ClientError::Crypto {
                what: "the login challenge".into(),
                source,
            })?;
        Ok((challenge, verify_token))
    }

    /// Sends the challenge; a refusal becomes the error that names its
    /// likely causes.
    async fn post_challenge(&self, challenge: String) -> Result<ChallengeBody, ClientError> {
        let body = serde_json::json!({ "user_id": self.opts.user_id, "challenge": challenge });
        let reply = self
            .send(Method::POST, LOGIN_PATH, None, Some(&body))
            .await?;
        match self.decode(LOGIN_PATH, &reply) {
            Ok(b) => Ok(b),
            Err(ClientError::Http {
                status: 400,
                message,
                ..
            }) => Err(ClientError::LoginRefused {
                user_id: self.opts.user_id.clone(),
                message,
                key: self.remaining_causes(),
            }),
            Err(ClientError::Http { status: 404, .. }) => Err(ClientError::UserNotFound {
                user_id: self.opts.user_id.clone(),
            }),
            Err(e) => Err(e),
        }
    }

    /// The key to name in a refusal when the base URL and the clock were
    /// both checked and only the user id and the key remain as causes.
    fn remaining_causes(&self) -> Option<KeyIdentity> {
        let checked = (*self.prechecked.lock().expect("not poisoned"))?;
        (checked.base_url && checked.clock).then(|| {
            let public = self.user_key().public();
            KeyIdentity {
                fingerprint: public.fingerprint(),
                user_ids: public.user_ids(),
            }
        })
    }

    /// Authenticates the server by its answer: it must decrypt with our key,
    /// be signed by `server_key`, echo our verify token and name our
    /// protocol version and base URL.
    async fn check_answer(
        &self,
        server_key: &PublicKey,
        body: ChallengeBody,
        verify_token: &str,
    ) -> Result<ChallengeResponse, ClientError> {
        let key = self.user_key().clone();
        let sk = server_key.clone();
        let plaintext = tokio::task::spawn_blocking(move || {
            key.decrypt_verify(&sk, body.challenge.as_bytes())
        })
        .await
        .expect("decryption task")
        .map_err(|e| {
            ClientError::ServerNotAuthenticated(format!(
                "the login response does not decrypt and verify with the server key {}: {e}",
                server_key.fingerprint()
            ))
        })?;
        let response: ChallengeResponse =
            serde_json::from_slice(&plaintext).map_err(|e| ClientError::Malformed {
                path: LOGIN_PATH.into(),
                detail: format!("decrypted login response: {e}"),
            })?;
        if response.verify_token != verify_token {
            return Err(ClientError::ServerNotAuthenticated(
                "the login response does not echo our verify_token".into(),
            ));
        }
        if response.version != PROTOCOL_VERSION {
            return Err(ClientError::ServerNotAuthenticated(format!(
                "the login response has protocol version {:?}, expected {PROTOCOL_VERSION:?}",
                response.version
            )));
        }
        if response.domain.trim_end_matches('/') != self.opts.base_url.trim_end_matches('/') {
            return Err(ClientError::ServerNotAuthenticated(format!(
                "the login response is for domain {:?}, not {:?}",
                response.domain, self.opts.base_url
            )));
        }
        Ok(response)
    }

    /// Revokes this process's refresh token, and only it: an empty body
    /// would log out every session of the account on every machine.
    pub async fn logout(&self) -> Result<(), ClientError> {
        let (mut tokens, _gate) = self.exclusive().await;
        if tokens.refresh.is_none() {
            return Ok(());
        }
        // Logout needs a valid bearer token. An expired one is renewed with
        // the refresh token (its one use), and the successor is revoked.
        let usable = tokens
            .access
            .as_ref()
            .is_some_and(|a| a.exp - self.server_now() > 2);
        if !usable && let Err(e) = self.refresh_locked(&mut tokens).await {
            // The token was spent on this attempt or was already dead.
            tracing::debug!(error = %e, "no refresh token left to revoke");
            return Ok(());
        }
        let (Some(RefreshToken { value: refresh, .. }), Some(access)) =
            (tokens.refresh.take(), tokens.access.take())
        else {
            return Ok(());
        };
        let path = "/auth/jwt/logout.json";
        let body = serde_json::json!({ "refresh_token": refresh.as_str() });
        let reply = self
            .send(Method::POST, path, Some(&access.value), Some(&body))
            .await?;
        let _: serde_json::Value = self.decode(path, &reply)?;
        tracing::info!("logged out (own refresh token revoked)");
        Ok(())
    }
}
