//! The MFA flow of an account under an MFA policy: the 302 while MFA is
//! pending, the TOTP verification, and the `passbolt_mfa` cookie.

#![allow(clippy::result_large_err)]

use super::*;

/// The `passbolt_mfa` cookie a request carries.
pub(super) fn mfa_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|c| c.split(';'))
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            (k == passbolt_client::mfa::COOKIE).then(|| v.to_string())
        })
}

/// Checks an MFA token as `MfaVerifiedToken::check` does: active, this
/// user's, at most 30 days old, and remembered or bound to `session`. A
/// token that fails is deactivated.
pub(super) fn mfa_token_valid(
    state: &State,
    cookie: &str,
    user_id: &str,
    session: Option<&str>,
) -> bool {
    let now = state.clock.now();
    let mut data = state.data();
    let Some(t) = data.mfa_tokens.get_mut(cookie) else {
        return false;
    };
    let valid = t.active
        && t.user_id == user_id
        && t.created + MFA_TOKEN_LIFETIME > now
        && (t.remember || session == Some(t.session.as_str()));
    if !valid {
        t.active = false;
    }
    valid
}

/// `MfaRequiredCheckMiddleware`: for an account with MFA, a request goes
/// through only with a valid `passbolt_mfa` cookie; otherwise the 302.
pub(super) fn mfa_gate(
    state: &State,
    path: &str,
    headers: &HeaderMap,
    user_id: &str,
    session: Option<&str>,
) -> Result<(), Response> {
    if state.account(user_id).is_none_or(|a| a.mfa.is_empty()) {
        return Ok(());
    }
    let cookie = mfa_cookie(headers);
    let valid = cookie
        .as_deref()
        .is_some_and(|c| mfa_token_valid(state, c, user_id, session));
    if cookie.is_some() {
        state.data().events.push(Event::MfaCookie {
            path: path.to_string(),
            valid,
        });
    }
    if valid {
        Ok(())
    } else {
        Err(mfa_required(state))
    }
}

/// A `Set-Cookie` for the MFA token `value`, or one that deletes it.
pub(super) fn mfa_set_cookie(state: &State, value: Option<&str>, remember: bool) -> HeaderValue {
    let secure = if state.base_url.starts_with("https:") {
        "; secure"
    } else {
        ""
    };
    let cookie = match value {
        Some(v) if remember => format!(
            "passbolt_mfa={v}; expires={}; Max-Age={MFA_TOKEN_LIFETIME}; path=/{secure}; HttpOnly",
            httpdate::fmt_http_date(
                state.clock.system_time()
                    + std::time::Duration::from_secs(MFA_TOKEN_LIFETIME as u64)
            )
        ),
        Some(v) => format!("passbolt_mfa={v}; path=/{secure}; HttpOnly"),
        None => format!(
            "passbolt_mfa=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; path=/{secure}; HttpOnly"
        ),
    };
    HeaderValue::from_str(&cookie).expect("ASCII cookie")
}

/// `GET /mfa/verify/error.json`: the 403 naming the providers; it clears
/// the cookie.
pub(super) fn mfa_error(state: &State, path: &str, user_id: &str) -> Response {
    let providers = state.account(user_id).map(|a| a.mfa).unwrap_or_default();
    let urls: serde_json::Map<String, Value> = providers
        .iter()
        .map(|p| {
            (
                p.clone(),
                json!(format!("{}/mfa/verify/{p}.json", state.base_url)),
            )
        })
        .collect();
    let mut resp = envelope(
        state,
        StatusCode::FORBIDDEN,
        path,
        "MFA authentication is required.",
        json!({"mfa_providers": providers, "providers": urls}),
    );
    resp.headers_mut()
        .append(header::SET_COOKIE, mfa_set_cookie(state, None, false));
    resp
}

/// `POST /mfa/verify/totp.json` (`TotpVerifyPostController`, `TotpVerifyForm`):
/// the code must be the one of the current step by the server's clock,
/// with no leeway. Too many rejected codes since the last login log the
/// account out of every session.
pub(super) fn totp_verify(
    state: &State,
    path: &str,
    headers: &HeaderMap,
    user_id: &str,
    token: &str,
    body: &Bytes,
) -> Response {
    let bad =
        |message: &str, body: Value| envelope(state, StatusCode::BAD_REQUEST, path, message, body);
    if mfa_cookie(headers).is_some_and(|c| mfa_token_valid(state, &c, user_id, Some(token))) {
        return bad(
            "The multi-factor authentication is not required.",
            json!(""),
        );
    }
    let seed = {
        let data = state.data();
        let enabled = data
            .accounts
            .iter()
            .any(|a| a.id == user_id && a.mfa.iter().any(|p| p == "totp"));
        data.totp_seeds.get(user_id).filter(|_| enabled).cloned()
    };
    let Some(seed) = seed else {
        return bad(
            "No valid multi-factor authentication settings found for this provider.",
            json!(""),
        );
    };
    let step = seed.step_at(state.clock.now());
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = request.get("totp").and_then(Value::as_str).unwrap_or("");
    let rule = if code.is_empty() {
        Some(("notEmptyString", "The OTP should not be empty."))
    } else if !code.bytes().all(|b| b.is_ascii_digit()) {
        Some(("numeric", "The OTP should be composed of numbers only."))
    } else if code.len() < 6 {
        Some(("minLength", "The OTP should be at least 6 characters long."))
    } else if !seed.accepts(code, state.clock.now()) {
        Some(("isValidOtp", "This OTP is not valid."))
    } else {
        None
    };
    match rule {
        Some((rule, message)) => code_refused(state, path, user_id, step, rule, message),
        None => code_accepted(state, path, &request, user_id, token, step),
    }
}

/// A rejected code: counted, and past `MFA_MAX_ATTEMPTS` since the last
/// login, every session of the account is logged out.
fn code_refused(
    state: &State,
    path: &str,
    user_id: &str,
    step: u64,
    rule: &str,
    message: &str,
) -> Response {
    let bad =
        |message: &str, body: Value| envelope(state, StatusCode::BAD_REQUEST, path, message, body);
    let mut data = state.data();
    data.events.push(Event::MfaVerify {
        user_id: user_id.to_string(),
        accepted: false,
        step,
    });
    let failures = data.mfa_failures.entry(user_id.to_string()).or_default();
    *failures += 1;
    if *failures > MFA_MAX_ATTEMPTS {
        for row in data.refresh_tokens.values_mut() {
            if row.user_id == user_id {
                row.active = false;
            }
        }
        data.events.push(Event::MfaLoggedOut {
            user_id: user_id.to_string(),
        });
        drop(data);
        return bad(
            "You have been logged out due to too many failed attempts.",
            json!(""),
        );
    }
    drop(data);
    bad(
        "Something went wrong when validating the one-time password.",
        json!({"totp": {rule: message}}),
    )
}

/// An accepted code: a new MFA token, bound to the access token `token`
/// unless the request asked to be remembered, set as the cookie.
fn code_accepted(
    state: &State,
    path: &str,
    request: &Value,
    user_id: &str,
    token: &str,
    step: u64,
) -> Response {
    // PHP casts `remember` to a bool: absent, false, 0, "" and "0" are false.
    let remember = match request.get("remember") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !(s.is_empty() || s == "0"),
        Some(_) => true,
    };
    let cookie = uuid::Uuid::new_v4().to_string();
    {
        let mut data = state.data();
        data.mfa_tokens.insert(
            cookie.clone(),
            MfaToken {
                user_id: user_id.to_string(),
                remember,
                session: token.to_string(),
                active: true,
                created: state.clock.now(),
            },
        );
        data.issued.push(cookie.clone());
        data.events.push(Event::MfaVerify {
            user_id: user_id.to_string(),
            accepted: true,
            step,
        });
    }
    let mut resp = envelope(
        state,
        StatusCode::OK,
        path,
        "The multi-factor authentication was a success.",
        json!(""),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        mfa_set_cookie(state, Some(&cookie), remember),
    );
    resp
}

/// The redirect the real server gives every non-whitelisted request while
/// MFA is pending.
pub(super) fn mfa_required(state: &State) -> Response {
    let mut resp = (StatusCode::FOUND, "").into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("{}/mfa/verify/error.json", state.base_url)).expect("ASCII"),
    );
    resp
}
