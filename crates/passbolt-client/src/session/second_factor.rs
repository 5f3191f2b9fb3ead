//! The TOTP second factor: answered right after a login that the server
//! marks as needing MFA, and again when the server drops the MFA cookie.

use super::*;

impl Session {
    /// Answers the MFA challenge of the login whose tokens `tokens` holds.
    pub(super) async fn answer_mfa(
        &self,
        tokens: &mut Tokens,
        providers: &[String],
    ) -> Result<(), ClientError> {
        if !providers.iter().any(|p| p == "totp") {
            return Err(ClientError::MfaUnsupported {
                providers: providers.to_vec(),
            });
        }
        if self.totp.is_none() {
            return Err(ClientError::MfaRequired {
                providers: providers.to_vec(),
            });
        }
        tracing::info!(providers = %providers.join(","), "the account requires MFA; answering with TOTP");
        self.verify_totp(tokens).await
    }

    /// `POST /mfa/verify/totp.json` with the code of the current step by
    /// the server's clock, once; the `passbolt_mfa` cookie it sets is kept.
    /// A step a code was already sent for is never used again: this waits
    /// for the next one (at most one period) instead.
    pub(super) async fn verify_totp(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        let seed = self.totp.as_ref().expect("checked by the caller");
        let bearer = tokens
            .access
            .as_ref()
            .map(|a| a.value.clone())
            .expect("verification follows a login");
        let mut step = seed.step_at(self.server_now());
        if let Some(last) = tokens.last_step.filter(|l| step <= *l) {
            let next = (last + 1) * seed.period();
            let wait = (next as i64 - self.server_now()).max(0) as u64 + 1;
            tracing::info!(
                wait_s = wait,
                "a TOTP code was already sent for this step; waiting for the next step"
            );
            tokio::time::sleep(Duration::from_secs(wait)).await;
            step = seed.step_at(self.server_now()).max(last + 1);
        }
        tokens.last_step = Some(step);
        let code = seed.code(step);
        let path = mfa::TOTP_VERIFY_PATH;
        // `remember`: the token is then not bound to one access token, so
        // refreshes keep it, and the next login skips MFA for 30 days.
        let body = serde_json::json!({ "totp": code.as_str(), "remember": true });
        drop(code);
        self.mfa_verifications.fetch_add(1, Ordering::Relaxed);
        let reply = self
            .send(Method::POST, path, Some(&bearer), Some(&body))
            .await?;
        drop(body);
        match self.decode::<serde_json::Value>(path, &reply) {
            Ok(_) => {}
            Err(ClientError::Http {
                status: 400,
                message,
                ..
            }) => {
                if message.contains("not required") {
                    // A cookie we sent was still good after all.
                    return Ok(());
                }
                // One rejected code per login: the server counts them
                // since the last login, so the next attempt logs in anew.
                tokens.access = None;
                tokens.refresh = None;
                if message.contains("too many failed attempts") {
                    return Err(ClientError::MfaLockedOut { message });
                }
                return Err(ClientError::MfaRejected { message });
            }
            Err(e) => return Err(e),
        }
        let cookie = mfa::cookie(&reply.set_cookies).ok_or_else(|| ClientError::Malformed {
            path: path.into(),
            detail: "the TOTP code was accepted but no passbolt_mfa cookie came back".into(),
        })?;
        *self.mfa_cookie.lock().expect("not poisoned") = Some(cookie);
        tokens.mfa_generation = self.generation.load(Ordering::Relaxed);
        tracing::info!("MFA verified (TOTP)");
        Ok(())
    }

    /// After a 302 to `/mfa/verify/error.json` on a request sent at
    /// `generation`: the server dropped the MFA token. Verifies once more,
    /// unless another task did since.
    pub(super) async fn reverify(&self, path: &str, generation: u64) -> Result<(), ClientError> {
        let (mut tokens, _gate) = self.exclusive().await;
        if tokens.mfa_generation > generation {
            return Ok(());
        }
        tracing::warn!(%path, "the server dropped the MFA token (302 to {}); verifying once more", mfa::ERROR_PATH);
        *self.mfa_cookie.lock().expect("not poisoned") = None;
        let usable = tokens
            .access
            .as_ref()
            .is_some_and(|a| a.exp - self.server_now() > 5);
        if !usable {
            return self.login_locked(&mut tokens).await;
        }
        self.reverify_locked(&mut tokens).await
    }

    /// Asks the server which providers it wants (and its time), then
    /// verifies with the access token held.
    pub(super) async fn reverify_locked(&self, tokens: &mut Tokens) -> Result<(), ClientError> {
        let bearer = tokens
            .access
            .as_ref()
            .map(|a| a.value.clone())
            .ok_or(ClientError::NoRefreshToken)?;
        let reply = self
            .send(Method::GET, mfa::ERROR_PATH, Some(&bearer), None::<&()>)
            .await?;
        // A 403 whose body names the providers; its header the server time.
        let _ = self.decode::<serde_json::Value>(mfa::ERROR_PATH, &reply);
        let providers: Vec<String> = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| serde_json::from_value(v["body"]["mfa_providers"].clone()).ok())
            .unwrap_or_else(|| vec!["totp".to_string()]);
        self.answer_mfa(tokens, &providers).await
    }
}
