//! Account kits for the dev server's accounts. The server holds public
//! keys only, so the caller hands in the account's private key, as the
//! browser extension (which holds it) would.

use super::{DevServer, DevServerError};
use passbolt_client::account_kit::AccountKit;
use passbolt_client::pgp::PrivateKey;

impl DevServer {
    /// The kit file's content for `user_id`: `private_armored` is the
    /// account's (locked) private key as exported, `key` the same key
    /// unlocked, which signs the kit.
    pub fn account_kit(
        &self,
        user_id: &str,
        private_armored: &str,
        key: &PrivateKey,
    ) -> Result<String, DevServerError> {
        let account = self
            .state
            .account(user_id)
            .ok_or_else(|| DevServerError::NoAccount(user_id.to_string()))?;
        let (first_name, last_name) = account
            .username
            .split('@')
            .next()
            .map(|n| (n.to_string(), "Dev".to_string()))
            .unwrap_or_default();
        let kit = AccountKit {
            domain: self.url(),
            user_id: account.id.clone(),
            username: account.username.clone(),
            first_name,
            last_name,
            user_private_armored_key: zeroize::Zeroizing::new(private_armored.to_string()),
            user_public_armored_key: account.key.armored(),
            server_public_armored_key: self.server_public_key().armored(),
            security_token: serde_json::json!({"code": "DEV", "color": "#2a9ceb", "textcolor": "#ffffff"}),
        };
        kit.seal(key)
            .map_err(|e| DevServerError::Crypto(e.to_string()))
    }
}
