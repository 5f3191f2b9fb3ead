//! Authentication as the real server's JWT plugin does it: the server's
//! key, the OpenPGP challenge, access and refresh tokens (single-use,
//! rotated, a replay reported as an attack), and logout.

#![allow(clippy::result_large_err)]

use super::*;

pub(super) fn verify(state: &State, path: &str) -> Response {
    let key = if state.data().faults.announce_other_key {
        state.other_key.public()
    } else {
        state.server_key.public()
    };
    success(
        state,
        path,
        json!({"fingerprint": key.fingerprint(), "keydata": key.armored()}),
    )
}

/// The bearer token's user, or the 401 (or MFA 302) the real server gives.
pub(super) fn authenticate(
    state: &State,
    path: &str,
    headers: &HeaderMap,
) -> Result<String, Response> {
    let (user, token) = bearer_user(state, path, headers)?;
    mfa_gate(state, path, headers, &user, Some(&token))?;
    Ok(user)
}

/// The bearer token's user and the token, or the 401; no MFA check.
pub(super) fn bearer_user(
    state: &State,
    path: &str,
    headers: &HeaderMap,
) -> Result<(String, String), Response> {
    let unauthorized = || error(state, StatusCode::UNAUTHORIZED, path, AUTH_REQUIRED);
    {
        let mut data = state.data();
        if data.faults.unauthorized_next > 0 {
            data.faults.unauthorized_next -= 1;
            return Err(unauthorized());
        }
    }
    let token = bearer(headers).ok_or_else(unauthorized)?;
    let claims: Claims = state.jwt.verify(token).ok_or_else(unauthorized)?;
    if claims.exp <= state.clock.now() || state.account(&claims.sub).is_none() {
        return Err(unauthorized());
    }
    Ok((claims.sub, token.to_string()))
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

pub(super) fn issue_access_token(state: &State, user_id: &str) -> String {
    let token = state.jwt.issue(&Claims {
        iss: format!("{}/", state.base_url),
        sub: user_id.to_string(),
        exp: state.clock.now() + state.opts.access_token_ttl.as_secs() as i64,
    });
    state.data().issued.push(token.clone());
    token
}

pub(super) fn new_refresh_token(state: &State, user_id: &str) -> String {
    let token = uuid::Uuid::new_v4().to_string();
    state.data().issued.push(token.clone());
    state.data().refresh_tokens.insert(
        token.clone(),
        RefreshRow {
            user_id: user_id.to_string(),
            active: true,
            created: state.clock.now(),
        },
    );
    token
}

/// `POST /auth/jwt/login.json`: the challenge checked as
/// `GpgJwtAuthenticator` does, then answered.
pub(super) async fn login(
    state: Arc<State>,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    match check_challenge(&state, path, &body).await {
        Ok((account, challenge)) => {
            answer_challenge(state, path, headers, account, challenge).await
        }
        Err(refused) => refused,
    }
}

/// The login's checks, in the real server's order: the user, then the
/// challenge's decryption and signature, then its fields. Each refusal is
/// logged as the server logs it, and answered as it answers it.
async fn check_challenge(
    state: &Arc<State>,
    path: &str,
    body: &Bytes,
) -> Result<(Account, ChallengeRequest), Response> {
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Err(error(
                state,
                StatusCode::BAD_REQUEST,
                path,
                "This is not a valid Ajax/Json request.",
            ));
        }
    };
    let user_id = request
        .get("user_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let reject = |reason: &str| {
        state.data().events.push(Event::LoginRejected {
            user_id: user_id.clone(),
            reason: reason.to_string(),
        });
        error(state, StatusCode::BAD_REQUEST, path, INVALID_CREDENTIALS)
    };
    if !is_uuid(&user_id) {
        return Err(reject("The user id is missing or invalid."));
    }
    let Some(account) = state.account(&user_id) else {
        state.data().events.push(Event::LoginRejected {
            user_id: user_id.clone(),
            reason: "The user does not exist or has been deleted.".into(),
        });
        return Err(error(
            state,
            StatusCode::NOT_FOUND,
            path,
            "The user does not exist or is not active or has been deleted.",
        ));
    };
    let Some(challenge) = request
        .get("challenge")
        .and_then(Value::as_str)
        .filter(|c| c.contains("-----BEGIN PGP MESSAGE-----"))
    else {
        return Err(reject("The user challenge is missing or invalid."));
    };
    let st = state.clone();
    let user_key = account.key.clone();
    let challenge = challenge.to_string();
    let decrypted = tokio::task::spawn_blocking(move || {
        st.server_key
            .decrypt_verify(&user_key, challenge.as_bytes())
    })
    .await
    .expect("decryption task");
    let plaintext = match decrypted {
        Ok(p) => p,
        Err(e) => return Err(reject(&format!("Decryption failed. {e}"))),
    };
    // The server decodes with a depth limit of 2: a flat object only.
    let flat: serde_json::Map<String, Value> = match serde_json::from_slice(&plaintext) {
        Ok(Value::Object(m)) if m.values().all(|v| !v.is_object() && !v.is_array()) => m,
        _ => return Err(reject("The challenge is invalid. Deserialization failed.")),
    };
    let challenge: ChallengeRequest = match serde_json::from_value(Value::Object(flat)) {
        Ok(c) => c,
        Err(_) => return Err(reject("The challenge is invalid. Validation Failed.")),
    };
    let attack = |kind| state.data().events.push(Event::Attack { kind });
    let domain = state.domain();
    if challenge.domain.trim_end_matches('/') != domain.trim_end_matches('/') {
        attack(AttackKind::WrongDomain);
        return Err(reject(&format!(
            "The domain is invalid. Expected: {domain} and got {}",
            challenge.domain
        )));
    }
    if challenge.version != "1.0.0" {
        return Err(reject("The version is invalid."));
    }
    let expiry = match &challenge.verify_token_expiry {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    };
    let Some(expiry) = expiry else {
        return Err(reject("Invalid verify token expiry."));
    };
    if expiry > state.clock.now() + 3600 {
        return Err(reject("Invalid verify token expiry."));
    }
    if expiry < state.clock.now() {
        attack(AttackKind::ExpiredVerifyToken);
        return Err(reject("Attempt to access an expired verify token."));
    }
    if !is_uuid(&challenge.verify_token) {
        return Err(reject("Invalid verify token format."));
    }
    if !state
        .data()
        .verify_tokens
        .insert((challenge.verify_token.clone(), user_id.clone()))
    {
        attack(AttackKind::ReusedVerifyToken);
        return Err(reject("Verify token has been already used in the past."));
    }

    Ok((account, challenge))
}

/// A checked challenge answered: tokens issued, the answer encrypted to the
/// user and signed by the server, and an MFA provider list when the account
/// must pass MFA.
async fn answer_challenge(
    state: Arc<State>,
    path: &str,
    headers: &HeaderMap,
    account: Account,
    challenge: ChallengeRequest,
) -> Response {
    let user_id = account.id.clone();
    let faults = state.data().faults.clone();
    let access_token = issue_access_token(&state, &user_id);
    let refresh_token = new_refresh_token(&state, &user_id);
    let mut response = json!({
        "version": "1.0.0",
        "domain": faults.wrong_domain.clone().unwrap_or_else(|| state.domain()),
        "access_token": access_token,
        "refresh_token": refresh_token,
        "verify_token": if faults.wrong_verify_token { uuid::Uuid::new_v4().to_string() } else { challenge.verify_token.clone() },
    });
    state.data().mfa_failures.remove(&user_id);
    // A remembered, valid MFA cookie skips MFA; any other cookie sent at
    // login is deactivated and cleared.
    let cookie = mfa_cookie(headers);
    let remembered = cookie.as_deref().is_some_and(|c| {
        let is_remembered = state.data().mfa_tokens.get(c).is_some_and(|t| t.remember);
        is_remembered && mfa_token_valid(&state, c, &user_id, None)
    });
    let clear_cookie = cookie.is_some() && !remembered;
    if clear_cookie
        && let Some(t) = state
            .data()
            .mfa_tokens
            .get_mut(cookie.as_deref().unwrap_or(""))
    {
        t.active = false;
    }
    if !account.mfa.is_empty() && !remembered {
        response["providers"] = json!(account.mfa);
    }
    let st = state.clone();
    let encrypted = tokio::task::spawn_blocking(move || {
        let signer = if faults.sign_with_other_key {
            &st.other_key
        } else {
            &st.server_key
        };
        // Signed by the server's clock, as gnupg signs by the system's.
        signer.encrypt_and_sign_at(
            &account.key,
            response.to_string().as_bytes(),
            st.clock.system_time(),
        )
    })
    .await
    .expect("encryption task");
    match encrypted {
        Ok(armored) => {
            state.data().events.push(Event::Login { user_id });
            let mut resp = envelope(
                &state,
                StatusCode::OK,
                path,
                "The authentication was a success.",
                json!({"challenge": armored}),
            );
            if clear_cookie {
                resp.headers_mut()
                    .append(header::SET_COOKIE, mfa_set_cookie(&state, None, false));
            }
            resp
        }
        Err(_) => error(
            &state,
            StatusCode::INTERNAL_SERVER_ERROR,
            path,
            "An internal error occurred.",
        ),
    }
}

/// Checks a refresh token as `JwtRefreshTokenAuthenticator` does and
/// deactivates it. Returns the refused response on failure.
pub(super) fn consume_refresh_token(
    state: &State,
    path: &str,
    user_id: Option<&str>,
    token: &str,
) -> Result<(), Response> {
    let bad = |message: &str| error(state, StatusCode::BAD_REQUEST, path, message);
    let mut data = state.data();
    let row = data
        .refresh_tokens
        .get_mut(token)
        .filter(|r| user_id.is_none_or(|u| r.user_id == u));
    match row {
        None => {
            data.events.push(Event::RefreshRejected {
                token: token.to_string(),
                reason: "not found".into(),
            });
            data.events.push(Event::Attack {
                kind: AttackKind::UnknownRefreshToken,
            });
            Err(bad(
                "No active refresh token matching the request could be found.",
            ))
        }
        Some(row) if !row.active => {
            data.events.push(Event::RefreshReuse {
                token: token.to_string(),
            });
            data.events.push(Event::Attack {
                kind: AttackKind::SpentRefreshToken,
            });
            Err(bad("The refresh token provided was already used."))
        }
        Some(row)
            if row.created + state.opts.refresh_token_ttl.as_secs() as i64 <= state.clock.now() =>
        {
            row.active = false;
            data.events.push(Event::Attack {
                kind: AttackKind::ExpiredRefreshToken,
            });
            Err(bad("Expired refresh token provided."))
        }
        Some(row) => {
            row.active = false;
            Ok(())
        }
    }
}

pub(super) fn refresh(state: &State, path: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let has_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| c.split(';').any(|p| p.trim().starts_with("refresh_token=")));
    if has_cookie {
        return error(
            state,
            StatusCode::FORBIDDEN,
            path,
            "Missing or incorrect CSRF cookie type.",
        );
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let token = request
        .get("refresh_token")
        .and_then(Value::as_str)
        .unwrap_or("");
    let user_id = request.get("user_id").and_then(Value::as_str).unwrap_or("");
    if !is_uuid(token) {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "The refresh token should be a valid UUID.",
        );
    }
    if !is_uuid(user_id) {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "The user ID should be a valid UUID.",
        );
    }
    // The MFA check runs before the token is consumed.
    if let Err(resp) = mfa_gate(state, path, headers, user_id, bearer(headers)) {
        return resp;
    }
    if let Err(resp) = consume_refresh_token(state, path, Some(user_id), token) {
        return resp;
    }
    let access_token = issue_access_token(state, user_id);
    // `UpdateMfaTokenSessionIdOnRefreshTokenCreated`: the MFA token follows
    // the new access token, and its cookie is sent again.
    let mfa_again = mfa_cookie(headers).and_then(|c| {
        let mut data = state.data();
        let t = data.mfa_tokens.get_mut(&c).filter(|t| t.active)?;
        t.session = access_token.clone();
        Some((c, t.remember))
    });
    let next = new_refresh_token(state, user_id);
    state.data().events.push(Event::Refresh {
        user_id: user_id.to_string(),
        token: token.to_string(),
    });
    let mut resp = success(state, path, json!({"access_token": access_token}));
    if !state.data().faults.omit_refresh_cookie {
        let expires =
            httpdate::fmt_http_date(state.clock.system_time() + state.opts.refresh_token_ttl);
        let cookie = format!(
            "refresh_token={next}; expires={expires}; Max-Age={}; path=/; secure; HttpOnly",
            state.opts.refresh_token_ttl.as_secs()
        );
        resp.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).expect("ASCII cookie"),
        );
    }
    if let Some((cookie, remember)) = mfa_again {
        resp.headers_mut().append(
            header::SET_COOKIE,
            mfa_set_cookie(state, Some(&cookie), remember),
        );
    }
    resp
}

pub(super) fn logout(state: &State, path: &str, user_id: &str, body: &Bytes) -> Response {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match request.get("refresh_token").and_then(Value::as_str) {
        Some(token) => {
            if let Err(resp) = consume_refresh_token(state, path, Some(user_id), token) {
                return resp;
            }
            state.data().events.push(Event::Logout {
                user_id: user_id.to_string(),
                token: Some(token.to_string()),
            });
        }
        None => {
            // An empty body logs out every session of the account.
            let mut data = state.data();
            for row in data.refresh_tokens.values_mut() {
                if row.user_id == user_id {
                    row.active = false;
                }
            }
            data.events.push(Event::Logout {
                user_id: user_id.to_string(),
                token: None,
            });
        }
    }
    success(state, path, Value::String(String::new()))
}
