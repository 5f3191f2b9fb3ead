//! The secrets a config names but does not hold: the private key, its
//! passphrase, the TOTP seed and the client certificate, read from their
//! files (with `${CREDENTIALS_DIRECTORY}` expanded) or from the variables
//! captured at start-up.

use std::path::{Path, PathBuf};

use super::*;
use crate::runtime::captured;

impl Server {
    /// The client certificate and key for mTLS, read now, when both are
    /// configured (the config loader refuses one without the other).
    pub fn read_client_identity(
        &self,
    ) -> Result<Option<passbolt_client::ClientIdentity>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.client_cert_file, &self.client_key_file) else {
            return Ok(None);
        };
        let read = |what: &'static str, file: &Path| {
            let path = expand(file)?;
            std::fs::read(&path)
                .map(zeroize::Zeroizing::new)
                .map_err(|source| ConfigError::ReadCredential { what, path, source })
        };
        let cert = read("the client certificate file", cert)?;
        let key = read("the client key file", key)?;
        Ok(Some(passbolt_client::ClientIdentity::from_pem(&cert, &key)))
    }
}

impl Auth {
    /// Reads the private key file (armored).
    pub fn read_private_key(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, ConfigError> {
        let path = expand(&self.private_key_file)?;
        std::fs::read(&path)
            .map(zeroize::Zeroizing::new)
            .map_err(|source| ConfigError::ReadCredential {
                what: "the private key file",
                path,
                source,
            })
    }

    /// The passphrase, from its file (one trailing newline dropped) or
    /// its environment variable (as captured at start-up, see
    /// [`captured`]); `None` for an unprotected key.
    pub fn read_passphrase(&self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, ConfigError> {
        if let Some(file) = &self.passphrase_file {
            let path = expand(file)?;
            let mut data = std::fs::read(&path).map_err(|source| ConfigError::ReadCredential {
                what: "the passphrase file",
                path,
                source,
            })?;
            strip_line_end(&mut data);
            return Ok(Some(zeroize::Zeroizing::new(data)));
        }
        if let Some(name) = &self.passphrase_env {
            if let Some(value) = captured::value(name) {
                return Ok(Some(value));
            }
            // Named only by a reload: it stays in the environment, which
            // cannot be changed soundly now that threads run; children are
            // still kept from it.
            captured::note(name);
            return match std::env::var_os(name) {
                Some(v) => Ok(Some(zeroize::Zeroizing::new(v.into_encoded_bytes()))),
                None => Err(ConfigError::PassphraseEnvMissing { name: name.clone() }),
            };
        }
        Ok(None)
    }
}

impl Auth {
    /// The TOTP seed, from its file or its environment variable (as
    /// captured at start-up); `None` for an account without MFA.
    pub fn read_totp_secret(&self) -> Result<Option<passbolt_client::TotpSeed>, ConfigError> {
        let (what, data) = if let Some(file) = &self.totp_secret_file {
            let path = expand(file)?;
            let data = std::fs::read(&path)
                .map(zeroize::Zeroizing::new)
                .map_err(|source| ConfigError::ReadCredential {
                    what: "the TOTP secret file",
                    path: path.clone(),
                    source,
                })?;
            (format!("auth.totp_secret_file {}", path.display()), data)
        } else if let Some(name) = &self.totp_secret_env {
            let data = match captured::value(name) {
                Some(v) => v,
                None => {
                    // Named only by a reload: see `read_passphrase`.
                    captured::note(name);
                    std::env::var_os(name)
                        .map(|v| zeroize::Zeroizing::new(v.into_encoded_bytes()))
                        .ok_or_else(|| ConfigError::TotpEnvMissing { name: name.clone() })?
                }
            };
            (format!("auth.totp_secret_env {name}"), data)
        } else {
            return Ok(None);
        };
        passbolt_client::TotpSeed::parse(&data)
            .map(Some)
            .map_err(|source| ConfigError::TotpSeed { what, source })
    }
}

/// Drops one trailing newline (`\n` or `\r\n`): editors and `echo` add
/// it to a passphrase file, and it is never part of the passphrase.
pub fn strip_line_end(data: &mut Vec<u8>) {
    if data.last() == Some(&b'\n') {
        data.pop();
        if data.last() == Some(&b'\r') {
            data.pop();
        }
    }
}

/// Expands `${CREDENTIALS_DIRECTORY}`, which systemd sets for units with
/// `LoadCredential=`. Other `$` sequences are left alone: they may be part
/// of a real file name.
pub fn expand(path: &Path) -> Result<PathBuf, ConfigError> {
    const VAR: &str = "${CREDENTIALS_DIRECTORY}";
    let s = path.to_string_lossy();
    if !s.contains(VAR) {
        return Ok(path.to_path_buf());
    }
    let dir = std::env::var("CREDENTIALS_DIRECTORY").map_err(|_| {
        ConfigError::NoCredentialsDirectory {
            path: s.to_string(),
        }
    })?;
    Ok(PathBuf::from(s.replace(VAR, &dir)))
}
