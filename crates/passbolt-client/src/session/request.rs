//! Sending a request and reading its answer: every call to the server goes
//! through `send`, which bounds the answer's size and turns a status into
//! the error it means; `send_authorized` adds the access token and renews
//! it once on a 401.

use super::*;

impl Session {
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{}", self.opts.base_url, path)
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Reply, ClientError> {
        let url = self.url(path);
        let mut req = self
            .http
            .request(method, &url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        if let Some(cookie) = self.mfa_cookie.lock().expect("not poisoned").as_ref() {
            let pair = Zeroizing::new(format!("{}={}", mfa::COOKIE, cookie.as_str()));
            if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&pair) {
                value.set_sensitive(true);
                req = req.header(reqwest::header::COOKIE, value);
            }
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut resp = req.send().await.map_err(|e| unreachable(&self.opts, &e))?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let set_cookies = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let limit = self.opts.max_response_bytes;
        let too_large = || ClientError::ResponseTooLarge {
            path: path.to_string(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| unreachable(&self.opts, &e))?
        {
            self.response_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        tracing::trace!(%path, status = status.as_u16(), bytes = body.len(), "response");
        Ok(Reply {
            status,
            location,
            retry_after,
            set_cookies,
            body,
        })
    }

    /// Decodes a success envelope, or turns the reply into the error its
    /// status means.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        path: &str,
        reply: &Reply,
    ) -> Result<T, ClientError> {
        self.decode_timed(path, reply).map(|(body, _)| body)
    }

    /// Like `decode`, with the answer's `header.servertime`.
    pub(crate) fn decode_timed<T: DeserializeOwned>(
        &self,
        path: &str,
        reply: &Reply,
    ) -> Result<(T, Option<i64>), ClientError> {
        if mfa::is_redirect(reply.status, reply.location.as_deref()) {
            return Err(ClientError::MfaRequired {
                providers: Vec::new(),
            });
        }
        // The header first, skipping the body: a listing parsed into a
        // generic tree before its typed form would hold both in memory.
        let header = serde_json::from_slice::<HeaderOnly>(&reply.body).map(|h| h.header);
        let servertime = header.as_ref().ok().and_then(|h| h.servertime);
        if let Some(t) = servertime {
            self.skew.store(t - now(), Ordering::Relaxed);
        }
        if !reply.status.is_success() {
            let message = header.map(|h| h.message).unwrap_or_default();
            return Err(status_error(path, reply, message));
        }
        let header = header.map_err(|e| ClientError::Malformed {
            path: path.to_string(),
            detail: format!("not a passbolt JSON envelope: {e}"),
        })?;
        if header.status != "success" {
            return Err(ClientError::Malformed {
                path: path.to_string(),
                detail: format!(
                    "header.status is {:?} with HTTP {}",
                    header.status, reply.status
                ),
            });
        }
        let envelope: Envelope<T> =
            serde_json::from_slice(&reply.body).map_err(|e| ClientError::Malformed {
                path: path.to_string(),
                detail: e.to_string(),
            })?;
        Ok((envelope.body, servertime))
    }

    /// A valid access token, renewed first when it is expired or within its
    /// margin (`REFRESH_MARGIN` for the server's 5-minute tokens) of expiry,
    /// by the server's clock.
    pub async fn access_token(&self) -> Result<Zeroizing<String>, ClientError> {
        self.access_token_at().await.map(|(token, _)| token)
    }

    /// `access_token`, with the `generation` it belongs to.
    pub(super) async fn access_token_at(&self) -> Result<(Zeroizing<String>, u64), ClientError> {
        let mut tokens = self.tokens.lock().await;
        let fresh = tokens
            .access
            .as_ref()
            .is_some_and(|a| a.exp - self.server_now() > a.margin);
        if !fresh {
            let _gate = self.gate.write().await;
            self.generation.fetch_add(1, Ordering::Relaxed);
            self.renew_locked(&mut tokens).await?;
        }
        Ok((current(&tokens), self.generation.load(Ordering::Relaxed)))
    }

    /// Sends an authenticated request, never while the tokens change.
    /// Returns the token it went with and its generation.
    pub(super) async fn send_authorized(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(Reply, Zeroizing<String>, u64), ClientError> {
        loop {
            let (token, generation) = self.access_token_at().await?;
            let _inflight = self.gate.read().await;
            if self.generation.load(Ordering::Relaxed) != generation {
                // Replaced between reading it and getting here.
                continue;
            }
            let reply = self.send(method.clone(), path, Some(&token), body).await?;
            return Ok((reply, token, generation));
        }
    }

    /// Renews after the server refused `rejected`, unless another task
    /// already replaced it.
    pub(super) async fn renew_after_401(
        &self,
        rejected: &str,
    ) -> Result<Zeroizing<String>, ClientError> {
        let (mut tokens, _gate) = self.exclusive().await;
        let same = tokens
            .access
            .as_ref()
            .is_some_and(|a| a.value.as_str() == rejected);
        if same || tokens.access.is_none() {
            tokens.access = None;
            self.renew_locked(&mut tokens).await?;
        }
        Ok(current(&tokens))
    }

    /// An authenticated GET. A 401 gets one renewal and one retry.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.get_timed(path).await.map(|(body, _)| body)
    }

    /// Like `get`, with the answer's `header.servertime`. A 302 to the
    /// MFA error page (the server dropped the MFA token) gets one new
    /// verification and one retry.
    pub async fn get_timed<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(T, Option<i64>), ClientError> {
        let mut renewals = 0;
        let mut reverified = false;
        loop {
            let (reply, token, generation) = self.send_authorized(Method::GET, path, None).await?;
            if mfa::is_redirect(reply.status, reply.location.as_deref()) && self.totp.is_some() {
                if reverified {
                    return Err(ClientError::MfaDropped { path: path.into() });
                }
                reverified = true;
                self.reverify(path, generation).await?;
                continue;
            }
            if reply.status != StatusCode::UNAUTHORIZED {
                return self.decode_timed(path, &reply);
            }
            match renewals {
                0 => {
                    tracing::debug!(%path, "401; renewing the access token and retrying once");
                    self.renew_after_401(&token).await?;
                }
                1 => {
                    // A refreshed token refused too: the refresh token may be
                    // bound to something the server no longer accepts. One
                    // full login, one last try; after that the pass fails and
                    // the daemon backs off.
                    tracing::debug!(%path, "401 after a renewal; logging in and retrying once");
                    let (mut tokens, _gate) = self.exclusive().await;
                    self.login_locked(&mut tokens).await?;
                }
                _ => return Err(ClientError::Unauthorized { path: path.into() }),
            }
            renewals += 1;
        }
    }
}

impl Session {
    /// An authenticated write (`PUT`, `POST`) with a JSON body. A 401 gets
    /// one renewal and one retry: the server refused it before acting. A
    /// refusal's error carries the server's validation details (which
    /// field, which rule), which never quote a submitted value.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        let mut renewed = false;
        loop {
            let (reply, token, _) = self
                .send_authorized(method.clone(), path, Some(body))
                .await?;
            if reply.status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                self.renew_after_401(&token).await?;
                continue;
            }
            return self.decode(path, &reply).map_err(|e| match e {
                ClientError::Http {
                    path,
                    status,
                    message,
                } => ClientError::Http {
                    path,
                    status,
                    message: with_details(message, &reply.body),
                },
                other => other,
            });
        }
    }
}

/// `message` followed by the rules a validation failure names
/// (`secrets.secrets_provided: The secrets should contain ...`). The
/// server's rule messages are fixed texts, never the value submitted.
fn with_details(message: String, body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return message;
    };
    let mut rules = Vec::new();
    collect_rules(&v["body"], String::new(), &mut rules);
    if rules.is_empty() {
        message
    } else {
        format!("{message} ({})", rules.join("; "))
    }
}

fn collect_rules(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                collect_rules(v, join(k), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_rules(v, join(&i.to_string()), out);
            }
        }
        serde_json::Value::String(s) if !at.is_empty() && out.len() < 8 => {
            out.push(format!("{at}: {s}"));
        }
        _ => {}
    }
}

pub(super) fn unreachable(opts: &SessionOptions, e: &reqwest::Error) -> ClientError {
    // reqwest's outer layers say "error sending request for url (...)";
    // the innermost cause says why: refused, DNS, TLS, timeout. For TLS,
    // `tls::explain` says which setting fixes it.
    let mut detail = crate::tls::explain(e, opts).unwrap_or_else(|| innermost(e));
    if e.is_timeout() && !detail.contains("timed out") {
        detail = format!("timed out ({detail})");
    }
    ClientError::Unreachable {
        url: opts.base_url.clone(),
        detail,
        connect: e.is_connect(),
    }
}

pub(super) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

pub(super) fn status_error(path: &str, reply: &Reply, message: String) -> ClientError {
    let path = path.to_string();
    let status = reply.status;
    let code = status.as_u16();
    if status == StatusCode::UNAUTHORIZED {
        ClientError::Unauthorized { path }
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && reply.retry_after.is_some())
    {
        ClientError::Busy {
            path,
            status: code,
            retry_after: reply.retry_after,
        }
    } else if status.is_server_error() {
        ClientError::ServerError {
            path,
            status: code,
            message,
        }
    } else {
        ClientError::Http {
            path,
            status: code,
            message,
        }
    }
}

/// `Retry-After` as delta-seconds or an HTTP date, in seconds from now.
pub(super) fn parse_retry_after(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(s);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .map_or(0, |d| d.as_secs()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_retry_after() {
        assert_eq!(parse_retry_after("7"), Some(7));
        assert_eq!(parse_retry_after("Thu, 01 Jan 1970 00:00:01 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
