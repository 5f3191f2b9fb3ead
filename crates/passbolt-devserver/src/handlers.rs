//! Request handling of the dev server. One dispatcher matches method and
//! path, like the real server's routes, and every answer goes through the
//! same envelope as passbolt's `AppController::success()` and error renderer.

// Handlers return a ready `Response` as their error: it is the answer.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::query::{Query, is_uuid};
use super::{
    AttackKind, Event, MFA_MAX_ATTEMPTS, MFA_TOKEN_LIFETIME, MfaToken, RefreshRow, State,
    StoredResource,
};
use crate::passbolt::model::{ChallengeRequest, Claims};

pub(super) fn router(state: Arc<State>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

const OK: &str = "The operation was successful.";
const AUTH_REQUIRED: &str = "Authentication is required to continue";
const INVALID_CREDENTIALS: &str = "The credentials are invalid.";

fn envelope(state: &State, status: StatusCode, path: &str, message: &str, body: Value) -> Response {
    let ok = status.is_success();
    let mut header = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "status": if ok { "success" } else { "error" },
        "servertime": state.clock.now(),
        "action": uuid::Uuid::new_v4().to_string(),
        "message": message,
        "url": path,
        "code": status.as_u16(),
    });
    // Only the paginated index endpoints carry pagination.
    if let Value::Array(items) = &body
        && matches!(path, "/resources.json" | "/folders.json")
    {
        header["pagination"] = json!({"limit": null, "page": 1, "count": items.len()});
    }
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"header": header, "body": body}).to_string(),
    )
        .into_response();
    // The real server expires its session cookies on JWT requests.
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "passbolt_session=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; path=/",
        ),
    );
    resp
}

fn error(state: &State, status: StatusCode, path: &str, message: &str) -> Response {
    envelope(state, status, path, message, Value::String(String::new()))
}

fn success(state: &State, path: &str, body: Value) -> Response {
    envelope(state, StatusCode::OK, path, OK, body)
}

async fn dispatch(
    AxState(state): AxState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let faults = state.data().faults.clone();
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
    }
    let path = uri.path().to_string();
    let malformed = faults
        .malformed_path
        .as_deref()
        .is_some_and(|p| path.starts_with(p));
    let canned = faults
        .respond
        .as_ref()
        .filter(|c| path.starts_with(&c.path_prefix));
    let resp = match faults.status_for_all {
        _ if canned.is_some() => canned_response(canned.expect("checked")),
        _ if malformed => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Welcome to nginx!</body></html>",
        )
            .into_response(),
        Some(code) => error(
            &state,
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &path,
            "An internal error occurred.",
        ),
        None => route(&state, &method, &uri, &headers, &body).await,
    };
    state.data().events.push(Event::Request {
        method: method.to_string(),
        path,
        status: resp.status().as_u16(),
    });
    resp
}

fn canned_response(c: &super::Canned) -> Response {
    let mut resp = (
        StatusCode::from_u16(c.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        c.body.clone(),
    )
        .into_response();
    for (k, v) in &c.headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

async fn route(
    state: &Arc<State>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let path = uri.path();
    let query = Query::parse(uri.query());
    match (method.clone(), path) {
        (Method::GET, "/auth/verify.json") => verify(state, path),
        (Method::GET, "/healthcheck/status.json") => {
            envelope(state, StatusCode::OK, path, "OK", json!("OK"))
        }
        (Method::GET, "/settings.json") => success(
            state,
            path,
            json!({"app": {"url": format!("{}/", state.base_url)},
                   "passbolt": {"plugins": {"jwtAuthentication": {"enabled": true}}}}),
        ),
        (Method::GET, "/auth/jwt/jwks.json") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"keys": [state.jwt.jwk()]}).to_string(),
        )
            .into_response(),
        (Method::POST, "/auth/jwt/login.json") | (Method::POST, "/auth/jwt/login") => {
            login(state.clone(), path, headers, body.clone()).await
        }
        // The MFA whitelist: a bearer token is needed, a verified second
        // factor is not.
        (Method::GET, "/mfa/verify/error.json") => match bearer_user(state, path, headers) {
            Ok((user, _)) => mfa_error(state, path, &user),
            Err(r) => r,
        },
        (Method::POST, "/mfa/verify/totp.json") => match bearer_user(state, path, headers) {
            Ok((user, token)) => totp_verify(state, path, headers, &user, &token, body),
            Err(r) => r,
        },
        (Method::POST, p) if p.starts_with("/mfa/verify/duo") => error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "This functionality is not available using AJAX/JSON.",
        ),
        (Method::POST, "/auth/jwt/refresh.json") => refresh(state, path, headers, body),
        (Method::POST, "/auth/jwt/logout.json") => match authenticate(state, path, headers) {
            Ok(user) => logout(state, path, &user, body),
            Err(r) => r,
        },
        (Method::GET, _) if path.ends_with(".json") => match authenticate(state, path, headers) {
            Ok(user) => read(state, path, &query, &user),
            Err(r) => r,
        },
        (_, _) if !path.ends_with(".json") => error(
            state,
            StatusCode::NOT_FOUND,
            path,
            "Please use .json extension in URL or accept application/json.",
        ),
        _ => error(
            state,
            StatusCode::NOT_FOUND,
            path,
            "The requested address was not found.",
        ),
    }
}

fn verify(state: &State, path: &str) -> Response {
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
fn authenticate(state: &State, path: &str, headers: &HeaderMap) -> Result<String, Response> {
    let (user, token) = bearer_user(state, path, headers)?;
    mfa_gate(state, path, headers, &user, Some(&token))?;
    Ok(user)
}

/// The bearer token's user and the token, or the 401; no MFA check.
fn bearer_user(
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The `passbolt_mfa` cookie a request carries.
fn mfa_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|c| c.split(';'))
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            (k == crate::passbolt::mfa::COOKIE).then(|| v.to_string())
        })
}

/// Checks an MFA token as `MfaVerifiedToken::check` does: active, this
/// user's, at most 30 days old, and remembered or bound to `session`. A
/// token that fails is deactivated.
fn mfa_token_valid(state: &State, cookie: &str, user_id: &str, session: Option<&str>) -> bool {
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
fn mfa_gate(
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
fn mfa_set_cookie(state: &State, value: Option<&str>, remember: bool) -> HeaderValue {
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
fn mfa_error(state: &State, path: &str, user_id: &str) -> Response {
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
fn totp_verify(
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
    if let Some((rule, message)) = rule {
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
        return bad(
            "Something went wrong when validating the one-time password.",
            json!({"totp": {rule: message}}),
        );
    }
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
fn mfa_required(state: &State) -> Response {
    let mut resp = (StatusCode::FOUND, "").into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("{}/mfa/verify/error.json", state.base_url)).expect("ASCII"),
    );
    resp
}

fn issue_access_token(state: &State, user_id: &str) -> String {
    let token = state.jwt.issue(&Claims {
        iss: format!("{}/", state.base_url),
        sub: user_id.to_string(),
        exp: state.clock.now() + state.opts.access_token_ttl.as_secs() as i64,
    });
    state.data().issued.push(token.clone());
    token
}

fn new_refresh_token(state: &State, user_id: &str) -> String {
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

async fn login(state: Arc<State>, path: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                &state,
                StatusCode::BAD_REQUEST,
                path,
                "This is not a valid Ajax/Json request.",
            );
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
        error(&state, StatusCode::BAD_REQUEST, path, INVALID_CREDENTIALS)
    };
    if !is_uuid(&user_id) {
        return reject("The user id is missing or invalid.");
    }
    let Some(account) = state.account(&user_id) else {
        state.data().events.push(Event::LoginRejected {
            user_id: user_id.clone(),
            reason: "The user does not exist or has been deleted.".into(),
        });
        return error(
            &state,
            StatusCode::NOT_FOUND,
            path,
            "The user does not exist or is not active or has been deleted.",
        );
    };
    let Some(challenge) = request
        .get("challenge")
        .and_then(Value::as_str)
        .filter(|c| c.contains("-----BEGIN PGP MESSAGE-----"))
    else {
        return reject("The user challenge is missing or invalid.");
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
        Err(e) => return reject(&format!("Decryption failed. {e}")),
    };
    // The server decodes with a depth limit of 2: a flat object only.
    let flat: serde_json::Map<String, Value> = match serde_json::from_slice(&plaintext) {
        Ok(Value::Object(m)) if m.values().all(|v| !v.is_object() && !v.is_array()) => m,
        _ => return reject("The challenge is invalid. Deserialization failed."),
    };
    let challenge: ChallengeRequest = match serde_json::from_value(Value::Object(flat)) {
        Ok(c) => c,
        Err(_) => return reject("The challenge is invalid. Validation Failed."),
    };
    let attack = |kind| state.data().events.push(Event::Attack { kind });
    if challenge.domain.trim_end_matches('/') != state.base_url.trim_end_matches('/') {
        attack(AttackKind::WrongDomain);
        return reject(&format!(
            "The domain is invalid. Expected: {}/ and got {}",
            state.base_url, challenge.domain
        ));
    }
    if challenge.version != "1.0.0" {
        return reject("The version is invalid.");
    }
    let expiry = match &challenge.verify_token_expiry {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    };
    let Some(expiry) = expiry else {
        return reject("Invalid verify token expiry.");
    };
    if expiry > state.clock.now() + 3600 {
        return reject("Invalid verify token expiry.");
    }
    if expiry < state.clock.now() {
        attack(AttackKind::ExpiredVerifyToken);
        return reject("Attempt to access an expired verify token.");
    }
    if !is_uuid(&challenge.verify_token) {
        return reject("Invalid verify token format.");
    }
    if !state
        .data()
        .verify_tokens
        .insert((challenge.verify_token.clone(), user_id.clone()))
    {
        attack(AttackKind::ReusedVerifyToken);
        return reject("Verify token has been already used in the past.");
    }

    let faults = state.data().faults.clone();
    let access_token = issue_access_token(&state, &user_id);
    let refresh_token = new_refresh_token(&state, &user_id);
    let mut response = json!({
        "version": "1.0.0",
        "domain": faults.wrong_domain.clone().unwrap_or_else(|| format!("{}/", state.base_url)),
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
        signer.encrypt_and_sign(&account.key, response.to_string().as_bytes())
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
fn consume_refresh_token(
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

fn refresh(state: &State, path: &str, headers: &HeaderMap, body: &Bytes) -> Response {
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

fn logout(state: &State, path: &str, user_id: &str, body: &Bytes) -> Response {
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

fn read(state: &State, path: &str, query: &Query, user_id: &str) -> Response {
    let pre_v5 = state.data().faults.pre_v5;
    if pre_v5 && path.starts_with("/metadata/") {
        return error(
            state,
            StatusCode::NOT_FOUND,
            path,
            "The requested address was not found.",
        );
    }
    match path {
        "/users/me.json" => me(state, path, query, user_id),
        "/resource-types.json" => success(state, path,
            Value::Array(
                super::seed::RESOURCE_TYPES
                    .iter()
                    .filter(|(_, slug, _)| !(pre_v5 && slug.starts_with("v5-")))
                    .map(|(id, slug, name)| json!({"id": id, "slug": slug, "name": name, "definition": {"resource": {}, "secret": {}}, "deleted": null}))
                    .collect(),
            ),
        ),
        "/resources.json" => resources_index(state, path, query, user_id),
        "/folders.json" => {
            let data = state.data();
            let items: Vec<Value> = data
                .folders
                .values()
                .filter(|f| !(pre_v5 && f.metadata.is_some()))
                .map(|f| {
                    let mut v = json!({
                        "id": f.seed.id, "folder_parent_id": f.seed.parent, "personal": false,
                        "created": f.created, "modified": f.modified,
                    });
                    match &f.metadata {
                        Some(m) => {
                            v["metadata"] = json!(m.armored);
                            v["metadata_key_id"] = json!(m.key_id);
                            v["metadata_key_type"] = json!(m.key_type);
                        }
                        None => v["name"] = json!(f.seed.name),
                    }
                    v
                })
                .collect();
            drop(data);
            success(state, path, Value::Array(items))
        }
        "/metadata/keys.json" => {
            let with_private = query.contains("metadata_private_keys");
            let data = state.data();
            let items: Vec<Value> = data
                .metadata_keys
                .iter()
                .map(|k| {
                    // Only the caller's own copy, if they have one.
                    let privates: Vec<Value> = k
                        .private_keys
                        .get(user_id)
                        .filter(|_| with_private)
                        .map(|p| json!({
                            "id": p.id, "metadata_key_id": k.id, "user_id": user_id, "data": p.data,
                            "created": p.created, "modified": p.created,
                        }))
                        .into_iter()
                        .collect();
                    json!({
                        "id": k.id,
                        "fingerprint": k.public.fingerprint(),
                        "armored_key": k.public.armored(),
                        "created": k.created, "modified": k.modified,
                        "expired": k.expired, "deleted": null,
                        "metadata_private_keys": privates,
                    })
                })
                .collect();
            drop(data);
            success(state, path, Value::Array(items))
        }
        "/metadata/session-keys.json" => success(state, path, json!([])),
        _ => {
            if let Some(id) = path.strip_prefix("/secrets/resource/").and_then(|p| p.strip_suffix(".json")) {
                return secret_view(state, path, id, user_id);
            }
            if let Some(id) = path.strip_prefix("/resources/").and_then(|p| p.strip_suffix(".json")) {
                return resource_view(state, path, query, id, user_id);
            }
            error(state, StatusCode::NOT_FOUND, path, "The requested address was not found.")
        }
    }
}

fn me(state: &State, path: &str, query: &Query, user_id: &str) -> Response {
    let account = state.account(user_id).expect("authenticated user exists");
    let mut body = json!({
        "id": account.id, "username": account.username, "active": true, "deleted": false,
        "is_mfa_enabled": !account.mfa.is_empty(),
        "gpgkey": {
            "id": super::seed::gpgkey_id(&account.id), "user_id": account.id,
            "armored_key": account.key.armored(), "fingerprint": account.key.fingerprint(),
        },
    });
    if query.contains("missing_metadata_key_ids") {
        let missing: Vec<String> = state
            .data()
            .metadata_keys
            .iter()
            .filter(|k| !k.private_keys.contains_key(user_id))
            .map(|k| k.id.clone())
            .collect();
        body["missing_metadata_key_ids"] = json!(missing);
    }
    success(state, path, body)
}

/// `/resources.json`: what the caller can read, restricted by
/// `filter[has-id]`, with their secrets under `contain[secret]` (each one
/// handed out is logged, as the real server's secret access log does).
fn resources_index(state: &State, path: &str, query: &Query, user_id: &str) -> Response {
    let ids = match query.has_id() {
        Ok(ids) => ids,
        Err(message) => return error(state, StatusCode::BAD_REQUEST, path, &message),
    };
    let with_secret = query.contains("secret");
    let mut data = state.data();
    let mut read = Vec::new();
    let items: Vec<Value> = match &ids {
        None => data.resources.values().collect::<Vec<_>>(),
        // In listing order, once each, whatever the order of the ids.
        Some(ids) => {
            let mut at: Vec<usize> = ids
                .iter()
                .filter_map(|id| data.resources.get_index_of(id))
                .collect();
            at.sort_unstable();
            at.dedup();
            at.into_iter().map(|i| &data.resources[i]).collect()
        }
    }
    .into_iter()
    .filter(|r| r.seed.readers.iter().any(|u| u == user_id))
    .map(|r| resource_json(r, user_id, with_secret, &mut read))
    .collect();
    let items = listing_faults(items, &data.faults);
    log_secret_reads(&mut data, user_id, read);
    drop(data);
    success(state, path, Value::Array(items))
}

/// `Faults::duplicate_ids` and `Faults::unknown_type_for` on a listing.
fn listing_faults(mut items: Vec<Value>, faults: &super::Faults) -> Vec<Value> {
    if let Some(id) = &faults.unknown_type_for {
        for item in items.iter_mut().filter(|i| i["id"] == json!(id)) {
            item["resource_type_id"] = json!("0badc0de-0000-4000-8000-000000000000");
        }
    }
    if faults.pre_v5 {
        items.retain(|i| i.get("metadata").is_none_or(Value::is_null));
    }
    if faults.duplicate_ids {
        items = items.into_iter().flat_map(|i| [i.clone(), i]).collect();
    }
    items
}

fn resource_view(state: &State, path: &str, query: &Query, id: &str, user_id: &str) -> Response {
    if !is_uuid(id) {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "The resource identifier should be a valid UUID.",
        );
    }
    let mut data = state.data();
    let mut read = Vec::new();
    let item = data
        .resources
        .get(&id.to_ascii_lowercase())
        .filter(|r| r.seed.readers.iter().any(|u| u == user_id))
        .map(|r| resource_json(r, user_id, query.contains("secret"), &mut read));
    log_secret_reads(&mut data, user_id, read);
    drop(data);
    match item {
        Some(v) => success(state, path, v),
        None => error(
            state,
            StatusCode::NOT_FOUND,
            path,
            "The resource does not exist.",
        ),
    }
}

fn secret_view(state: &State, path: &str, id: &str, user_id: &str) -> Response {
    if !is_uuid(id) {
        return error(
            state,
            StatusCode::BAD_REQUEST,
            path,
            "The resource identifier should be a valid UUID.",
        );
    }
    let id = id.to_ascii_lowercase();
    let mut data = state.data();
    let secret = data
        .resources
        .get(&id)
        .and_then(|r| r.secrets.get(user_id))
        .map(|s| secret_json(s, &id, user_id));
    if secret.is_some() {
        log_secret_reads(&mut data, user_id, vec![id]);
    }
    drop(data);
    match secret {
        Some(s) => success(state, path, s),
        None => error(
            state,
            StatusCode::NOT_FOUND,
            path,
            "The secret does not exist.",
        ),
    }
}

fn log_secret_reads(data: &mut super::Data, user_id: &str, resource_ids: Vec<String>) {
    data.events.extend(
        resource_ids
            .into_iter()
            .map(|resource_id| Event::SecretRead {
                user_id: user_id.to_string(),
                resource_id,
            }),
    );
}

fn secret_json(s: &super::StoredSecret, resource_id: &str, user_id: &str) -> Value {
    json!({
        "id": s.id, "user_id": user_id, "resource_id": resource_id, "data": s.data,
        "created": s.created, "modified": s.modified,
    })
}

/// One resource as the caller sees it; with `with_secret`, their secret,
/// whose resource id goes into `read`.
fn resource_json(
    r: &StoredResource,
    user_id: &str,
    with_secret: bool,
    read: &mut Vec<String>,
) -> Value {
    let s = &r.seed;
    let mut v = json!({
        "id": s.id,
        "resource_type_id": super::seed::type_id(&s.slug),
        "folder_parent_id": s.folder_id,
        "personal": s.readers.len() == 1,
        "deleted": false,
        "expired": null,
        "created": r.created,
        "modified": r.modified,
    });
    match &r.metadata {
        Some(m) => {
            v["metadata"] = json!(m.armored);
            v["metadata_key_id"] = json!(m.key_id);
            v["metadata_key_type"] = json!(m.key_type);
        }
        None => {
            v["name"] = json!(s.name);
            v["username"] = json!(s.username);
            v["uri"] = json!(s.uris.first());
            v["description"] = json!(s.description);
        }
    }
    if with_secret {
        let secrets: Vec<Value> = r
            .secrets
            .get(user_id)
            .map(|secret| secret_json(secret, &s.id, user_id))
            .into_iter()
            .collect();
        if !secrets.is_empty() {
            read.push(s.id.clone());
        }
        v["secrets"] = json!(secrets);
    }
    v
}
