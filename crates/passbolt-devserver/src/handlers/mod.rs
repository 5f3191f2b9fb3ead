//! Request handling of the dev server. One dispatcher matches method and
//! path, like the real server's routes, and every answer goes through the
//! same envelope as passbolt's `AppController::success()` and error renderer.

// Handlers return a ready `Response` as their error: it is the answer.
#![allow(clippy::result_large_err)]

mod auth;
mod mfa;
mod resources;
mod revisions;
mod write;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::query::{Query, is_uuid};
use crate::{
    Account, AttackKind, Event, MFA_MAX_ATTEMPTS, MFA_TOKEN_LIFETIME, MfaToken, RefreshRow, State,
    StoredResource,
};
use auth::*;
use mfa::*;
use passbolt_client::model::{ChallengeRequest, Claims};
use resources::*;
pub(crate) use write::{default_metadata_types_settings, default_password_policy};

pub(super) fn router(state: Arc<State>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

pub(super) const OK: &str = "The operation was successful.";

pub(super) const AUTH_REQUIRED: &str = "Authentication is required to continue";

pub(super) const INVALID_CREDENTIALS: &str = "The credentials are invalid.";

pub(super) fn envelope(
    state: &State,
    status: StatusCode,
    path: &str,
    message: &str,
    body: Value,
) -> Response {
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

/// 400 for a resource id that is not a UUID, worded as passbolt words it.
pub(super) fn invalid_resource_id(state: &State, path: &str) -> Response {
    error(
        state,
        StatusCode::BAD_REQUEST,
        path,
        "The resource identifier should be a valid UUID.",
    )
}

/// 404 for a resource this user cannot see (or that is gone): passbolt
/// tells the two apart for no one.
pub(super) fn no_such_resource(state: &State, path: &str) -> Response {
    error(
        state,
        StatusCode::NOT_FOUND,
        path,
        "The resource does not exist.",
    )
}

pub(super) fn error(state: &State, status: StatusCode, path: &str, message: &str) -> Response {
    envelope(state, status, path, message, Value::String(String::new()))
}

pub(super) fn success(state: &State, path: &str, body: Value) -> Response {
    envelope(state, StatusCode::OK, path, OK, body)
}

pub(super) async fn dispatch(
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
    let started = std::time::Instant::now();
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
        query: uri.query().unwrap_or_default().to_string(),
        status: resp.status().as_u16(),
        micros: started.elapsed().as_micros() as u64,
    });
    resp
}

pub(super) fn canned_response(c: &crate::Canned) -> Response {
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

pub(super) async fn route(
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
        (Method::GET, "/settings.json") => {
            // What a guest sees of the real server's settings
            // (`settingsVisibility.whiteListPublic`).
            let mut app = json!({});
            if !state.data().faults.hide_app_url {
                app["url"] = json!(state.domain());
            }
            success(
                state,
                path,
                json!({"app": app,
                       "passbolt": {"plugins": {"jwtAuthentication": {"enabled": true}}}}),
            )
        }
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
        (Method::PUT, _) | (Method::POST, _) if path.ends_with(".json") => {
            match authenticate(state, path, headers) {
                Ok(user) => write::write(state, method, path, &user, body),
                Err(r) => r,
            }
        }
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
