//! Everything OpenPGP, through sequoia; no other module touches it.
//!
//! The passbolt server runs GnuPG, so what we send stays RFC 4880: v4 keys,
//! SEIPD v1, no AEAD. What we read is decrypted with the user's (or the
//! metadata) key and, where the protocol makes the sender accountable, must
//! carry a good signature from exactly the cert we expect.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::crypto::{KeyPair, Password, SessionKey};
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
    VerifierBuilder,
};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Signer};
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, Fingerprint, KeyHandle};
use zeroize::Zeroizing;

static POLICY: StandardPolicy<'static> = StandardPolicy::new();

type SecretKey =
    openpgp::packet::Key<openpgp::packet::key::SecretParts, openpgp::packet::key::UnspecifiedRole>;

#[derive(Debug, thiserror::Error)]
pub enum PgpError {
    #[error("cannot read the OpenPGP key: {0}")]
    BadKey(String),
    #[error("the OpenPGP key has no secret key material (is this the public key?)")]
    NotSecret,
    #[error("wrong passphrase for the OpenPGP key {fingerprint}")]
    WrongPassphrase { fingerprint: String },
    #[error("the OpenPGP key {fingerprint} has no usable {purpose} key")]
    NoUsableKey {
        fingerprint: String,
        purpose: &'static str,
    },
    #[error("the OpenPGP key {fingerprint} is protected by a passphrase, and none was given")]
    PassphraseNeeded { fingerprint: String },
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    #[error("cannot decrypt the message: {0}")]
    Decrypt(String),
    #[error("the message is not signed by the expected key {expected}")]
    BadSignature { expected: String },
    #[error("the message is not encrypted")]
    NotEncrypted,
}

/// A public certificate, for encrypting to and verifying.
#[derive(Clone)]
pub struct PublicKey {
    cert: Cert,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.cert.fingerprint())
    }
}

impl PublicKey {
    pub fn from_armor(armored: &[u8]) -> Result<Self, PgpError> {
        let cert = Cert::from_bytes(armored).map_err(|e| PgpError::BadKey(e.to_string()))?;
        Ok(PublicKey {
            cert: cert.strip_secret_key_material(),
        })
    }

    /// Upper-case hex, 40 characters for v4 keys: the form passbolt uses.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    pub fn armored(&self) -> String {
        String::from_utf8(self.cert.armored().to_vec().expect("serializing to memory"))
            .expect("armor is ASCII")
    }

    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// The key's user ids (`Name <email>`), as the server's Profile > Keys
    /// page lists them.
    pub fn user_ids(&self) -> Vec<String> {
        self.cert
            .userids()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .collect()
    }

    /// When the certificate expires, if it does.
    pub fn expires(&self) -> Option<std::time::SystemTime> {
        let vc = self.cert.with_policy(&POLICY, None).ok()?;
        vc.primary_key().key_expiration_time()
    }

    /// The key ids a message encrypted to this key names as recipient:
    /// its encryption subkeys', or the primary's when it has none.
    pub fn encryption_key_ids(&self) -> Vec<String> {
        let subkeys: Vec<String> = self
            .cert
            .keys()
            .subkeys()
            .map(|k| k.key().keyid().to_hex())
            .collect();
        if subkeys.is_empty() {
            vec![self.cert.keyid().to_hex()]
        } else {
            subkeys
        }
    }
}

/// The key ids an armored message is encrypted to (`None` for a wildcard
/// recipient), read from its PKESK packets without decrypting anything:
/// what a server that never decrypts can check.
pub fn message_recipients(message: &[u8]) -> Result<Vec<Option<String>>, PgpError> {
    std::panic::catch_unwind(|| {
        let pile = openpgp::PacketPile::from_bytes(message)
            .map_err(|e| PgpError::Decrypt(e.to_string()))?;
        Ok(pile
            .descendants()
            .filter_map(|p| match p {
                openpgp::Packet::PKESK(pkesk) => {
                    Some(pkesk.recipient().map(|h| openpgp::KeyID::from(h).to_hex()))
                }
                _ => None,
            })
            .collect())
    })
    .unwrap_or_else(|_| Err(PgpError::Decrypt("malformed message".into())))
}

/// How far in the future a signature may be dated and still verify: an
/// answer signed by a server whose clock is further ahead of ours is
/// refused.
pub const CLOCK_SKEW_TOLERANCE: std::time::Duration =
    openpgp::packet::signature::subpacket::CLOCK_SKEW_TOLERANCE;

/// An unlocked private key. Unlocking (the passphrase KDF, over every
/// locked subkey) costs up to several hundred milliseconds with GnuPG's
/// strongest settings, so it happens once; the keypairs are then shared by every
/// decryption, including those running in parallel on the blocking pool.
pub struct PrivateKey {
    cert: Cert,
    decryptors: Vec<KeyPair>,
    /// OpenSSL's CRT form of each RSA key in `decryptors`, in its order.
    #[cfg(feature = "crypto-openssl")]
    rsa_crt: Vec<Option<rsa_crt::CrtKey>>,
    /// OpenSSL's X25519 key of each Curve25519 ECDH key in `decryptors`.
    #[cfg(feature = "crypto-openssl")]
    x25519: Vec<Option<x25519::X25519Key>>,
    signer: Option<KeyPair>,
    /// Private-key operations (session-key decryptions, signatures) run
    /// with this key, shared with the keys counted together with it.
    operations: Arc<AtomicU64>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({}, [unlocked])", self.cert.fingerprint())
    }
}

impl PrivateKey {
    /// Loads an armored (or binary) private key and unlocks it.
    ///
    /// Expired or revoked subkeys are kept for decryption: old messages may
    /// have been encrypted to them.
    pub fn load(data: &[u8], passphrase: Option<&[u8]>) -> Result<Self, PgpError> {
        let cert = Cert::from_bytes(data).map_err(|e| PgpError::BadKey(e.to_string()))?;
        if !cert.is_tsk() {
            return Err(PgpError::NotSecret);
        }
        let fingerprint = cert.fingerprint().to_hex();
        let password = passphrase.map(Password::from);
        let unlock = |key: SecretKey| -> Result<KeyPair, PgpError> {
            let key = if key.secret().is_encrypted() {
                let Some(pw) = &password else {
                    return Err(PgpError::PassphraseNeeded {
                        fingerprint: fingerprint.clone(),
                    });
                };
                key.decrypt_secret(pw)
                    .map_err(|_| PgpError::WrongPassphrase {
                        fingerprint: fingerprint.clone(),
                    })?
            } else {
                key
            };
            key.into_keypair()
                .map_err(|e| PgpError::BadKey(e.to_string()))
        };

        let mut wanted: Vec<SecretKey> = cert
            .keys()
            .with_policy(&POLICY, None)
            .secret()
            .for_transport_encryption()
            .for_storage_encryption()
            .map(|ka| ka.key().clone().role_into_unspecified())
            .collect();
        if wanted.is_empty() {
            // A policy-rejected or expired subkey can still decrypt old messages.
            for ka in cert.keys().secret() {
                let flags = ka.self_signatures().next().and_then(|s| s.key_flags());
                if flags.is_some_and(|f| f.for_transport_encryption() || f.for_storage_encryption())
                {
                    wanted.push(ka.key().clone().role_into_unspecified());
                }
            }
        }
        if wanted.is_empty() {
            return Err(PgpError::NoUsableKey {
                fingerprint,
                purpose: "decryption",
            });
        }
        let decryptor_count = wanted.len();

        // passbolt compares the signature's issuer with the primary key's
        // fingerprint, so we sign with the primary key when it can sign.
        let primary_signs = cert
            .with_policy(&POLICY, None)
            .ok()
            .and_then(|vc| vc.primary_key().key_flags())
            .is_some_and(|f| f.for_signing());
        let signing_key = if primary_signs {
            Some(
                cert.primary_key()
                    .key()
                    .clone()
                    .parts_into_secret()
                    .map_err(|_| PgpError::NotSecret)?
                    .role_into_unspecified(),
            )
        } else {
            cert.keys()
                .with_policy(&POLICY, None)
                .secret()
                .for_signing()
                .next()
                .map(|ka| ka.key().clone().role_into_unspecified())
        };
        wanted.extend(signing_key);

        // Each locked key runs the passphrase KDF over its own salt, which
        // takes up to half a second with GnuPG's strongest settings: unlock
        // them side by side.
        let unlocked: Vec<Result<KeyPair, PgpError>> = std::thread::scope(|s| {
            let unlock = &unlock;
            let handles: Vec<_> = wanted
                .into_iter()
                .map(|k| s.spawn(move || unlock(k)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("unlock thread"))
                .collect()
        });
        let mut pairs = unlocked
            .into_iter()
            .collect::<Result<Vec<KeyPair>, PgpError>>()?;
        let signer = (pairs.len() > decryptor_count).then(|| pairs.pop().expect("signer"));
        let decryptors = pairs;
        #[cfg(feature = "crypto-openssl")]
        let rsa_crt = decryptors
            .iter()
            .map(rsa_crt::CrtKey::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PgpError::BadKey(e.to_string()))?;
        #[cfg(feature = "crypto-openssl")]
        let x25519 = decryptors.iter().map(x25519::X25519Key::new).collect();

        Ok(PrivateKey {
            cert,
            decryptors,
            #[cfg(feature = "crypto-openssl")]
            rsa_crt,
            #[cfg(feature = "crypto-openssl")]
            x25519,
            signer,
            operations: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Counts this key's operations into `other`'s counter from now on:
    /// the metadata keys of an account count with the account's key, so
    /// one number says what a pass cost.
    pub fn count_with(mut self, other: &PrivateKey) -> PrivateKey {
        self.operations = other.operations.clone();
        self
    }

    /// Private-key operations run so far with this key and those counted
    /// with it. Unlocking is not one: it runs the passphrase KDF only.
    pub fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            cert: self.cert.clone().strip_secret_key_material(),
        }
    }

    /// Encrypts `plaintext` to `recipient` and signs it with this key, as one
    /// armored message (what `gpg --encrypt --sign --armor` makes).
    pub fn encrypt_and_sign(
        &self,
        recipient: &PublicKey,
        plaintext: &[u8],
    ) -> Result<String, PgpError> {
        self.encrypt_and_sign_dated(recipient, plaintext, None)
    }

    /// `encrypt_and_sign` with the signature dated `at` rather than now:
    /// the dev server signs by its own (movable) clock, as a real server
    /// signs by its system clock.
    pub fn encrypt_and_sign_at(
        &self,
        recipient: &PublicKey,
        plaintext: &[u8],
        at: std::time::SystemTime,
    ) -> Result<String, PgpError> {
        self.encrypt_and_sign_dated(recipient, plaintext, Some(at))
    }

    /// The signature dated `at`, or now.
    fn encrypt_and_sign_dated(
        &self,
        recipient: &PublicKey,
        plaintext: &[u8],
        at: Option<std::time::SystemTime>,
    ) -> Result<String, PgpError> {
        let signer = self.signer.clone().ok_or_else(|| PgpError::NoUsableKey {
            fingerprint: self.fingerprint(),
            purpose: "signing",
        })?;
        self.operations.fetch_add(1, Ordering::Relaxed);
        encrypt_inner(recipient, Some((signer, at)), plaintext)
    }

    /// Signs `text` as a cleartext-signed message (`gpg --clearsign`), the
    /// way the browser extension signs an account kit.
    pub fn sign_cleartext(&self, text: &[u8]) -> Result<String, PgpError> {
        let signer = self.signer.clone().ok_or_else(|| PgpError::NoUsableKey {
            fingerprint: self.fingerprint(),
            purpose: "signing",
        })?;
        self.operations.fetch_add(1, Ordering::Relaxed);
        let enc = |e: anyhow::Error| PgpError::Encrypt(e.to_string());
        let mut sink = Vec::new();
        {
            let message = Message::new(&mut sink);
            let mut w = Signer::new(message, signer)
                .map_err(enc)?
                .cleartext()
                .build()
                .map_err(enc)?;
            w.write_all(text)
                .map_err(|e| PgpError::Encrypt(e.to_string()))?;
            w.finalize().map_err(enc)?;
        }
        Ok(String::from_utf8(sink).expect("cleartext framework is ASCII armor around UTF-8"))
    }

    /// Decrypts a message and requires a good signature by `signer`.
    pub fn decrypt_verify(
        &self,
        signer: &PublicKey,
        message: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, PgpError> {
        self.decrypt_inner(message, Some(signer))
    }

    /// Decrypts a message whatever its signatures. Only for what the
    /// protocol does not sign or signs by a party we cannot know (the
    /// metadata key envelope is signed by whichever admin shared it).
    pub fn decrypt(&self, message: &[u8]) -> Result<Zeroizing<Vec<u8>>, PgpError> {
        self.decrypt_inner(message, None)
    }

    /// The private-key operation of a decryption alone, with the first
    /// decryption key, exactly as messages are decrypted: what the crypto
    /// bench compares between backends. Not counted.
    #[doc(hidden)]
    pub fn decrypt_session_key(&self, pkesk: &PKESK) -> Option<SessionKey> {
        if self.decryptors.is_empty() {
            return None;
        }
        self.session_key(0, pkesk, None).map(|(_, sk)| sk)
    }

    /// The private-key operation of a decryption, with `decryptors[i]`.
    fn session_key(
        &self,
        i: usize,
        pkesk: &PKESK,
        sym_algo: Option<SymmetricAlgorithm>,
    ) -> Option<(Option<SymmetricAlgorithm>, SessionKey)> {
        let pair = &self.decryptors[i];
        #[cfg(feature = "crypto-openssl")]
        if let Some(key) = &self.rsa_crt[i] {
            return pkesk.decrypt(&mut key.decryptor(pair), sym_algo);
        }
        #[cfg(feature = "crypto-openssl")]
        if let Some(key) = &self.x25519[i] {
            return pkesk.decrypt(&mut key.decryptor(pair), sym_algo);
        }
        pkesk.decrypt(&mut pair.clone(), sym_algo)
    }

    fn decrypt_inner(
        &self,
        message: &[u8],
        signer: Option<&PublicKey>,
    ) -> Result<Zeroizing<Vec<u8>>, PgpError> {
        // sequoia-openpgp 2.4 panics on some malformed armor (an unwrap in
        // its parser, found by tests/it/props.rs); a message from the
        // server must be an error, never a crash of the daemon.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.decrypt_unguarded(message, signer)
        }))
        .unwrap_or_else(|_| {
            Err(PgpError::Decrypt(
                "the OpenPGP parser failed on this malformed message".into(),
            ))
        })
    }

    fn decrypt_unguarded(
        &self,
        message: &[u8],
        signer: Option<&PublicKey>,
    ) -> Result<Zeroizing<Vec<u8>>, PgpError> {
        let helper = Helper { key: self, signer };
        let mut decryptor = DecryptorBuilder::from_bytes(message)
            .map_err(|e| PgpError::Decrypt(e.to_string()))?
            .with_policy(&POLICY, None, helper)
            .map_err(classify)?;
        // Plaintext read before an error is thrown away with the buffer.
        let mut out = Zeroizing::new(Vec::new());
        decryptor.read_to_end(&mut out).map_err(read_error)?;
        if !decryptor.message_processed() {
            return Err(PgpError::Decrypt("the message was truncated".into()));
        }
        Ok(out)
    }
}

/// Why a recipient's key cannot be given a secret now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyUnusable {
    #[error("the key is revoked")]
    Revoked,
    #[error("the key has expired")]
    Expired,
    #[error("the key is not valid under the OpenPGP policy: {0}")]
    Invalid(String),
    #[error("the key has no valid, unexpired, unrevoked encryption subkey")]
    NoEncryptionKey,
}

/// Checks that `key` can be encrypted to now: the certificate is valid
/// under the standard policy, not revoked, not expired, and has an alive
/// encryption subkey. `encrypt` would skip a dead subkey silently; this
/// says why a whole key is unusable before anything is sent.
pub fn check_encryption_key(key: &PublicKey) -> Result<(), KeyUnusable> {
    let vc = key
        .cert
        .with_policy(&POLICY, None)
        .map_err(|e| KeyUnusable::Invalid(e.to_string()))?;
    if matches!(
        vc.revocation_status(),
        openpgp::types::RevocationStatus::Revoked(_)
    ) {
        return Err(KeyUnusable::Revoked);
    }
    if vc.alive().is_err() {
        return Err(KeyUnusable::Expired);
    }
    let usable = vc
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .next()
        .is_some();
    if usable {
        Ok(())
    } else {
        Err(KeyUnusable::NoEncryptionKey)
    }
}

/// Encrypts without signing: used by the dev server to seed secrets and by
/// tests. `signer` adds a signature when given.
pub fn encrypt(
    recipient: &PublicKey,
    signer: Option<KeyPair>,
    plaintext: &[u8],
) -> Result<String, PgpError> {
    encrypt_inner(recipient, signer.map(|kp| (kp, None)), plaintext)
}

fn encrypt_inner(
    recipient: &PublicKey,
    signer: Option<(KeyPair, Option<std::time::SystemTime>)>,
    plaintext: &[u8],
) -> Result<String, PgpError> {
    let enc = |e: anyhow::Error| PgpError::Encrypt(e.to_string());
    let recipients: Vec<_> = recipient
        .cert
        .keys()
        .with_policy(&POLICY, None)
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .for_storage_encryption()
        .collect();
    if recipients.is_empty() {
        return Err(PgpError::NoUsableKey {
            fingerprint: recipient.fingerprint(),
            purpose: "encryption",
        });
    }
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let message = Armorer::new(message).build().map_err(enc)?;
        let message = Encryptor::for_recipients(message, recipients)
            .symmetric_algo(SymmetricAlgorithm::AES256)
            .build()
            .map_err(enc)?;
        let message = match signer {
            Some((kp, at)) => {
                let mut signer = Signer::new(message, kp).map_err(enc)?;
                if let Some(at) = at {
                    signer = signer.creation_time(at);
                }
                signer.build().map_err(enc)?
            }
            None => message,
        };
        let mut w = LiteralWriter::new(message).build().map_err(enc)?;
        w.write_all(plaintext)
            .map_err(|e| PgpError::Encrypt(e.to_string()))?;
        w.finalize().map_err(enc)?;
    }
    Ok(String::from_utf8(sink).expect("armor is ASCII"))
}

/// The text of a cleartext-signed (or inline-signed) message, with a good
/// signature by `signer` required.
pub fn verify_signed(signer: &PublicKey, message: &[u8]) -> Result<Vec<u8>, PgpError> {
    read_signed(message, Some(signer))
}

/// The text of a signed message without checking who signed it: only to
/// learn which key should have, before [`verify_signed`] checks it.
pub fn signed_text_unverified(message: &[u8]) -> Result<Vec<u8>, PgpError> {
    read_signed(message, None)
}

fn read_signed(message: &[u8], signer: Option<&PublicKey>) -> Result<Vec<u8>, PgpError> {
    let helper = SignedHelper { signer };
    let mut verifier = VerifierBuilder::from_bytes(message)
        .map_err(|e| PgpError::Decrypt(e.to_string()))?
        .with_policy(&POLICY, None, helper)
        .map_err(classify)?;
    let mut out = Vec::new();
    verifier.read_to_end(&mut out).map_err(read_error)?;
    if !verifier.message_processed() {
        return Err(PgpError::Decrypt("the message was truncated".into()));
    }
    Ok(out)
}

/// Signature policy of [`read_signed`]: a good signature by exactly the
/// expected cert, or nothing checked when none is expected.
struct SignedHelper<'a> {
    signer: Option<&'a PublicKey>,
}

impl VerificationHelper for SignedHelper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self
            .signer
            .map(|s| vec![s.cert.clone()])
            .unwrap_or_default())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let Some(expected) = self.signer else {
            return Ok(());
        };
        let want: Fingerprint = expected.cert.fingerprint();
        let good = structure.into_iter().any(|layer| match layer {
            MessageLayer::SignatureGroup { results } => results
                .iter()
                .any(|r| r.as_ref().is_ok_and(|g| g.ka.cert().fingerprint() == want)),
            _ => false,
        });
        if good {
            Ok(())
        } else {
            Err(HelperError::BadSignature(expected.fingerprint()).into())
        }
    }
}

/// The fingerprint of a private key, read without unlocking it; an error
/// when the data holds no secret key material.
pub fn secret_key_fingerprint(data: &[u8]) -> Result<String, PgpError> {
    let cert = Cert::from_bytes(data).map_err(|e| PgpError::BadKey(e.to_string()))?;
    if !cert.is_tsk() {
        return Err(PgpError::NotSecret);
    }
    Ok(cert.fingerprint().to_hex())
}

/// Errors the helper raises, kept typed so they survive sequoia's
/// `anyhow` wrapping.
#[derive(Debug, Clone, thiserror::Error)]
enum HelperError {
    #[error("no signature by {0}")]
    BadSignature(String),
    #[error("not encrypted")]
    NotEncrypted,
    #[error("no key to decrypt")]
    NoKey,
}

impl From<HelperError> for PgpError {
    fn from(e: HelperError) -> Self {
        match e {
            HelperError::BadSignature(expected) => PgpError::BadSignature { expected },
            HelperError::NotEncrypted => PgpError::NotEncrypted,
            HelperError::NoKey => {
                PgpError::Decrypt("the message is not encrypted to this key".into())
            }
        }
    }
}

/// A reading error of sequoia's streaming parser, with the helper's own
/// typed errors recovered from inside it.
fn read_error(e: std::io::Error) -> PgpError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<HelperError>())
    {
        Some(h) => h.clone().into(),
        None => PgpError::Decrypt(e.to_string()),
    }
}

fn classify(e: anyhow::Error) -> PgpError {
    match e.downcast_ref::<HelperError>() {
        Some(h) => h.clone().into(),
        None => PgpError::Decrypt(e.to_string()),
    }
}

struct Helper<'a> {
    key: &'a PrivateKey,
    signer: Option<&'a PublicKey>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self
            .signer
            .map(|s| vec![s.cert.clone()])
            .unwrap_or_default())
    }

    // This is the whole signature policy: sequoia accepts anything this
    // accepts, unsigned messages included.
    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let mut encrypted = false;
        let mut good_signature = false;
        for layer in structure.into_iter() {
            match layer {
                MessageLayer::Encryption { .. } => encrypted = true,
                MessageLayer::Compression { .. } => {}
                MessageLayer::SignatureGroup { results } => {
                    if let Some(expected) = self.signer {
                        let want: Fingerprint = expected.cert.fingerprint();
                        good_signature |= results
                            .iter()
                            .any(|r| r.as_ref().is_ok_and(|g| g.ka.cert().fingerprint() == want));
                    }
                }
            }
        }
        if !encrypted {
            return Err(HelperError::NotEncrypted.into());
        }
        if let Some(expected) = self.signer
            && !good_signature
        {
            return Err(HelperError::BadSignature(expected.fingerprint()).into());
        }
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        // Exact recipients first, then wildcard ones.
        for pass in 0..2 {
            for pkesk in pkesks {
                let recipient = pkesk.recipient();
                for (i, pair) in self.key.decryptors.iter().enumerate() {
                    let matches = match (&recipient, pass) {
                        (Some(handle), 0) => {
                            handle.aliases(KeyHandle::from(pair.public().fingerprint()))
                        }
                        (None, 1) => true,
                        _ => false,
                    };
                    if !matches {
                        continue;
                    }
                    self.key.operations.fetch_add(1, Ordering::Relaxed);
                    if let Some((algo, sk)) = self.key.session_key(i, pkesk, sym_algo)
                        && decrypt(algo, &sk)
                    {
                        return Ok(Some(self.key.cert.clone()));
                    }
                }
            }
        }
        Err(HelperError::NoKey.into())
    }
}

/// RSA session-key decryption in OpenSSL's CRT form.
///
/// sequoia 2.4's OpenSSL backend hands OpenSSL an RSA key as n, e and d
/// only, for every operation: OpenSSL then exponentiates modulo n with the
/// whole private exponent, four times the time of the CRT form (two
/// exponentiations modulo p and q) that GnuPG, nettle and `openssl speed`
/// use, and twice nettle's time. The secret key material has p, q and u, so
/// the CRT key is built once when the key is unlocked, and each decryption
/// runs on it with OpenSSL's constant-time exponentiation, its blinding and
/// its check of the CRT result against the public key. Built once, not per
/// operation: setting up a key (blinding needs a modular inverse) adds about
/// 40 % to a decryption. Other algorithms, and signing, go to sequoia
/// unchanged.
#[cfg(feature = "crypto-openssl")]
mod rsa_crt {
    use super::openpgp;
    use openpgp::crypto::{Decryptor, KeyPair, SessionKey, mpi};
    use openpgp::packet::Key;
    use openpgp::packet::key::{PublicParts, UnspecifiedRole};
    use openssl::bn::{BigNum, BigNumContext, BigNumRef};
    use openssl::pkey::Private;
    use openssl::rsa::{Padding, Rsa};
    use zeroize::Zeroizing;

    /// The CRT form of an unlocked RSA key. OpenSSL clears its secret
    /// numbers when it is dropped.
    pub(super) struct CrtKey(Rsa<Private>);

    impl CrtKey {
        /// `None` for a key that is not RSA.
        pub(super) fn new(pair: &KeyPair) -> openpgp::Result<Option<CrtKey>> {
            let mpi::PublicKey::RSA { e, n } = pair.public().mpis() else {
                return Ok(None);
            };
            pair.secret().map(|secret| match secret {
                mpi::SecretKeyMaterial::RSA { d, p, q, u } => crt_key(
                    n.value(),
                    e.value(),
                    [d.value(), p.value(), q.value(), u.value()],
                )
                .map(|rsa| Some(CrtKey(rsa))),
                _ => Err(anyhow::anyhow!(
                    "RSA public key with non-RSA secret key material"
                )),
            })
        }

        /// A decryptor for sequoia's `PKESK::decrypt` with `pair`'s public
        /// key.
        pub(super) fn decryptor<'a>(&'a self, pair: &'a KeyPair) -> Crt<'a> {
            Crt {
                public: pair.public(),
                rsa: &self.0,
            }
        }
    }

    pub(super) struct Crt<'a> {
        public: &'a Key<PublicParts, UnspecifiedRole>,
        rsa: &'a Rsa<Private>,
    }

    impl Decryptor for Crt<'_> {
        fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
            self.public
        }

        fn decrypt(
            &mut self,
            ciphertext: &mpi::Ciphertext,
            _plaintext_len: Option<usize>,
        ) -> openpgp::Result<SessionKey> {
            let mpi::Ciphertext::RSA { c } = ciphertext else {
                return Err(anyhow::anyhow!("not an RSA ciphertext"));
            };
            let c = c.value();
            let size = self.rsa.size() as usize;
            if c.len() > size {
                return Err(anyhow::anyhow!("RSA ciphertext longer than the modulus"));
            }
            // MPIs drop leading zeros; the padded length is the modulus's.
            let mut input = vec![0; size];
            input[size - c.len()..].copy_from_slice(c);
            let mut out = Zeroizing::new(vec![0; size]);
            let len = self.rsa.private_decrypt(&input, &mut out, Padding::PKCS1)?;
            Ok(SessionKey::from(&out[..len]))
        }
    }

    fn crt_key(n: &[u8], e: &[u8], [d, p, q, u]: [&[u8]; 4]) -> openpgp::Result<Rsa<Private>> {
        // Temporaries of the divisions below come from the secure pool,
        // which clears them when freed.
        let mut ctx = BigNumContext::new_secure()?;
        let mut d = BigNum::from_slice(d)?;
        d.set_const_time();
        // OpenPGP's u is p⁻¹ mod q; OpenSSL's CRT coefficient is q⁻¹ mod p
        // of its own p and q: with the factors swapped, that is u.
        let (p, q) = (BigNum::from_slice(q)?, BigNum::from_slice(p)?);
        let dmp1 = exponent_mod(&d, &p, &mut ctx)?;
        let dmq1 = exponent_mod(&d, &q, &mut ctx)?;
        Ok(Rsa::from_private_components(
            BigNum::from_slice(n)?,
            BigNum::from_slice(e)?,
            d,
            p,
            q,
            dmp1,
            dmq1,
            BigNum::from_slice(u)?,
        )?)
    }

    /// `d mod (f - 1)`, a CRT exponent.
    fn exponent_mod(
        d: &BigNumRef,
        f: &BigNumRef,
        ctx: &mut BigNumContext,
    ) -> openpgp::Result<BigNum> {
        let mut f1 = f.to_owned()?;
        f1.sub_word(1)?;
        let mut r = BigNum::new_secure()?;
        r.set_const_time();
        let done = r.nnmod(d, &f1, ctx);
        f1.clear();
        done?;
        Ok(r)
    }
}

/// X25519 (ECDH on Curve25519) session-key decryption with an OpenSSL key
/// built once.
///
/// sequoia 2.4's OpenSSL backend imports the X25519 private key without
/// its public key for every decryption, and OpenSSL 3 then computes the
/// public key from it, a second scalar multiplication beside the one of
/// the key agreement: 20 % slower than nettle. Imported once when the key
/// is unlocked, the public key is computed once; each decryption is then
/// the key agreement alone (OpenSSL's constant-time X25519) with the
/// message's ephemeral key, and the shared secret goes to sequoia's
/// `decrypt_unwrap`, which keeps the KDF and AES key unwrap of RFC 6637.
/// Any key OpenSSL refuses, and any failed key agreement, goes to
/// sequoia's own path.
#[cfg(feature = "crypto-openssl")]
mod x25519 {
    use super::openpgp;
    use openpgp::crypto::mem::Protected;
    use openpgp::crypto::{Decryptor, KeyPair, SessionKey, mpi};
    use openpgp::packet::Key;
    use openpgp::packet::key::{PublicParts, UnspecifiedRole};
    use openpgp::types::Curve;
    use openssl::derive::Deriver;
    use openssl::pkey::{Id, PKey, Private};

    /// OpenSSL's form of an unlocked X25519 key, public key included.
    /// OpenSSL clears the private key when it is dropped.
    pub(super) struct X25519Key(PKey<Private>);

    impl X25519Key {
        /// `None` for a key that is not Curve25519 ECDH, or that OpenSSL
        /// refuses (sequoia's path then decrypts with it).
        pub(super) fn new(pair: &KeyPair) -> Option<X25519Key> {
            let mpi::PublicKey::ECDH {
                curve: Curve::Cv25519,
                ..
            } = pair.public().mpis()
            else {
                return None;
            };
            pair.secret()
                .map(|secret| match secret {
                    mpi::SecretKeyMaterial::ECDH { scalar } => {
                        // OpenPGP stores the scalar big-endian with leading
                        // zeros stripped; X25519 takes 32 bytes
                        // little-endian. Padding is unconditional: no
                        // secret-dependent branch.
                        let mut raw = scalar.value_padded(32);
                        raw.reverse();
                        PKey::private_key_from_raw_bytes(&raw, Id::X25519).ok()
                    }
                    _ => None,
                })
                .map(X25519Key)
        }

        /// A decryptor for sequoia's `PKESK::decrypt` with `pair`'s keys.
        pub(super) fn decryptor<'a>(&'a self, pair: &'a KeyPair) -> Agreement<'a> {
            Agreement { pair, key: &self.0 }
        }
    }

    pub(super) struct Agreement<'a> {
        pair: &'a KeyPair,
        key: &'a PKey<Private>,
    }

    impl Agreement<'_> {
        /// The shared secret with the sender's ephemeral key `e`.
        pub(super) fn shared(&self, e: &mpi::MPI) -> openpgp::Result<Protected> {
            let (point, _) = e.decode_point(&Curve::Cv25519)?;
            let ephemeral = PKey::public_key_from_raw_bytes(point, Id::X25519)?;
            let mut deriver = Deriver::new(self.key)?;
            deriver.set_peer(&ephemeral)?;
            let mut shared: Protected = vec![0; 32].into();
            let len = deriver.derive(&mut shared)?;
            if len != shared.len() {
                return Err(anyhow::anyhow!("X25519 shared secret of {len} bytes"));
            }
            Ok(shared)
        }
    }

    impl Decryptor for Agreement<'_> {
        fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
            self.pair.public()
        }

        fn decrypt(
            &mut self,
            ciphertext: &mpi::Ciphertext,
            plaintext_len: Option<usize>,
        ) -> openpgp::Result<SessionKey> {
            let shared = match ciphertext {
                mpi::Ciphertext::ECDH { e, .. } => self.shared(e).ok(),
                _ => None,
            };
            match shared {
                Some(shared) => openpgp::crypto::ecdh::decrypt_unwrap(
                    self.pair.public(),
                    &shared,
                    ciphertext,
                    plaintext_len,
                ),
                None => self.pair.clone().decrypt(ciphertext, plaintext_len),
            }
        }
    }
}

/// A fresh v4 key pair advertising SEIPD v1 only, so GnuPG 2.2 can read
/// what is encrypted to it. Used by the dev server and the demo.
pub fn generate_key(
    userid: &str,
    cipher: CipherSuite,
    passphrase: Option<&str>,
) -> Result<(PrivateKey, String), PgpError> {
    generate_key_created(userid, cipher, passphrase, None)
}

/// `generate_key` with the key dated `created` (default: now): the dev
/// server's key predates its movable clock, as a real server's key
/// predates its signatures.
pub fn generate_key_created(
    userid: &str,
    cipher: CipherSuite,
    passphrase: Option<&str>,
    created: Option<std::time::SystemTime>,
) -> Result<(PrivateKey, String), PgpError> {
    let mut builder = CertBuilder::general_purpose(Some(userid))
        .set_profile(openpgp::Profile::RFC4880)
        .and_then(|b| b.set_features(openpgp::types::Features::empty().set_seipdv1()))
        .map_err(|e| PgpError::BadKey(e.to_string()))?;
    if let Some(created) = created {
        builder = builder.set_creation_time(created);
    }
    let (cert, _) = builder
        .set_cipher_suite(cipher)
        .set_password(passphrase.map(Password::from))
        .generate()
        .map_err(|e| PgpError::BadKey(e.to_string()))?;
    let armored = String::from_utf8(
        cert.as_tsk()
            .armored()
            .to_vec()
            .map_err(|e| PgpError::BadKey(e.to_string()))?,
    )
    .expect("armor is ASCII");
    let key = PrivateKey::load(armored.as_bytes(), passphrase.map(str::as_bytes))?;
    Ok((key, armored))
}

/// A key pair like `generate_key`'s, created at `created` and expiring
/// `validity` later: for tests of expired recipient keys.
pub fn generate_key_expiring(
    userid: &str,
    created: std::time::SystemTime,
    validity: std::time::Duration,
) -> Result<(PrivateKey, String), PgpError> {
    let (cert, _) = CertBuilder::general_purpose(Some(userid))
        .set_profile(openpgp::Profile::RFC4880)
        .and_then(|b| b.set_features(openpgp::types::Features::empty().set_seipdv1()))
        .map_err(|e| PgpError::BadKey(e.to_string()))?
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_creation_time(created)
        .set_validity_period(validity)
        .generate()
        .map_err(|e| PgpError::BadKey(e.to_string()))?;
    let armored = String::from_utf8(
        cert.as_tsk()
            .armored()
            .to_vec()
            .map_err(|e| PgpError::BadKey(e.to_string()))?,
    )
    .expect("armor is ASCII");
    let key = PrivateKey::load(armored.as_bytes(), None)?;
    Ok((key, armored))
}

pub use openpgp::cert::CipherSuite;

/// Shared, unlocked key handed to blocking tasks.
pub type SharedKey = Arc<PrivateKey>;

/// Normalizes a user-given fingerprint (spaces, lower case) for comparison.
pub fn normalize_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// The OpenSSL paths (RSA in CRT form, X25519 with the key imported
    /// once) recover exactly the session key sequoia's own KeyPair
    /// recovers, and fail where it fails: a damaged ciphertext is refused,
    /// never turned into another session key.
    #[cfg(feature = "crypto-openssl")]
    #[test]
    fn the_openssl_paths_agree_with_sequoias_keypair() {
        use openpgp::crypto::mpi;
        use openpgp::packet::pkesk::PKESK3;

        for cipher in [CipherSuite::RSA3k, CipherSuite::Cv25519] {
            let (key, _) = generate_key("f <f@x.invalid>", cipher, None).unwrap();
            let pair = &key.decryptors[0];
            let rsa = matches!(cipher, CipherSuite::RSA3k);
            // Each key has its OpenSSL form, so session_key below takes it.
            assert_eq!(key.rsa_crt[0].is_some(), rsa, "{cipher:?}");
            assert_eq!(key.x25519[0].is_some(), !rsa, "{cipher:?}");
            for algo in [SymmetricAlgorithm::AES256, SymmetricAlgorithm::AES128] {
                let sk = SessionKey::new(algo.key_size().unwrap()).unwrap();
                let pkesk3 = PKESK3::for_recipient(algo, &sk, pair.public()).unwrap();
                let pkesk = PKESK::from(pkesk3.clone());
                let sequoias = pkesk.decrypt(&mut pair.clone(), None);
                assert_eq!(sequoias, Some((Some(algo), sk.clone())), "{cipher:?}");
                assert_eq!(key.session_key(0, &pkesk, None), sequoias, "{cipher:?}");
                assert_eq!(
                    key.session_key(0, &pkesk, Some(algo)),
                    pkesk.decrypt(&mut pair.clone(), Some(algo)),
                    "{cipher:?}"
                );

                let damaged = match pkesk3.esk() {
                    mpi::Ciphertext::RSA { c } => {
                        let mut c = c.value().to_vec();
                        let middle = c.len() / 2;
                        c[middle] ^= 1;
                        vec![mpi::Ciphertext::RSA {
                            c: mpi::MPI::new(&c),
                        }]
                    }
                    mpi::Ciphertext::ECDH { e, key: wrapped } => {
                        // X25519's shared secret is computed by OpenSSL
                        // here, not by sequoia's fallback.
                        let x = key.x25519[0].as_ref().unwrap().decryptor(pair);
                        assert!(x.shared(e).is_ok());
                        let mut flipped = wrapped.to_vec();
                        flipped[3] ^= 1;
                        // Not a point (no 0x40 prefix): OpenSSL's path
                        // refuses it and sequoia's is asked.
                        let mut not_a_point = e.value().to_vec();
                        not_a_point[0] = 0x04;
                        vec![
                            mpi::Ciphertext::ECDH {
                                e: e.clone(),
                                key: flipped.into(),
                            },
                            mpi::Ciphertext::ECDH {
                                e: mpi::MPI::new(&not_a_point),
                                key: wrapped.clone(),
                            },
                        ]
                    }
                    other => panic!("{cipher:?}: {other:?}"),
                };
                for esk in damaged {
                    let bad = PKESK::from(
                        PKESK3::new(pkesk3.recipient().cloned(), pkesk3.pk_algo(), esk).unwrap(),
                    );
                    assert_eq!(bad.decrypt(&mut pair.clone(), None), None, "{cipher:?}");
                    assert_eq!(key.session_key(0, &bad, None), None, "{cipher:?}");
                }
            }
            let message = encrypt(&key.public(), None, b"as downloaded").unwrap();
            assert_eq!(
                &key.decrypt(message.as_bytes()).unwrap()[..],
                b"as downloaded"
            );
        }
    }

    /// Why a server clock far ahead fails the login: its answer's
    /// signature is dated in our future beyond the tolerance.
    #[test]
    fn a_signature_dated_past_the_tolerance_in_the_future_does_not_verify() {
        let created = SystemTime::now() - Duration::from_secs(3600);
        let (server, _) =
            generate_key_created("s <s@x.invalid>", CipherSuite::Cv25519, None, Some(created))
                .unwrap();
        let (user, _) =
            generate_key_created("u <u@x.invalid>", CipherSuite::Cv25519, None, Some(created))
                .unwrap();
        let within = SystemTime::now() + CLOCK_SKEW_TOLERANCE - Duration::from_secs(120);
        let msg = server
            .encrypt_and_sign_at(&user.public(), b"{}", within)
            .unwrap();
        assert_eq!(
            &user
                .decrypt_verify(&server.public(), msg.as_bytes())
                .unwrap()[..],
            b"{}"
        );
        let beyond = SystemTime::now() + CLOCK_SKEW_TOLERANCE + Duration::from_secs(120);
        let msg = server
            .encrypt_and_sign_at(&user.public(), b"{}", beyond)
            .unwrap();
        assert!(
            user.decrypt_verify(&server.public(), msg.as_bytes())
                .is_err()
        );
    }
}
