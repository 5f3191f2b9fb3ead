//! RS256 access tokens for the dev server, signed with an RSA key through
//! sequoia's backend (RSASSA-PKCS1-v1_5 over SHA-256 is exactly what an
//! OpenPGP RSA signature computes).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sequoia_openpgp as openpgp;

use openpgp::crypto::{KeyPair, Signer, mpi};
use openpgp::packet::key::{Key4, PrimaryRole, SecretParts};
use openpgp::types::HashAlgorithm;

use passbolt_client::model::Claims;

pub struct JwtKey {
    pair: KeyPair,
    modulus_len: usize,
}

impl JwtKey {
    pub fn generate() -> openpgp::Result<JwtKey> {
        let key: Key4<SecretParts, PrimaryRole> = Key4::generate_rsa(2048)?;
        let key: openpgp::packet::Key<SecretParts, PrimaryRole> = key.into();
        let modulus_len = match key.mpis() {
            mpi::PublicKey::RSA { n, .. } => n.value().len(),
            _ => unreachable!("generated an RSA key"),
        };
        Ok(JwtKey {
            pair: key.role_into_unspecified().into_keypair()?,
            modulus_len,
        })
    }

    /// `n` and `e` for the JWKS endpoint.
    pub fn jwk(&self) -> serde_json::Value {
        match self.pair.public().mpis() {
            mpi::PublicKey::RSA { e, n } => serde_json::json!({
                "kty": "RSA", "alg": "RS256", "use": "sig",
                "e": URL_SAFE_NO_PAD.encode(e.value()),
                "n": URL_SAFE_NO_PAD.encode(n.value()),
            }),
            _ => unreachable!("an RSA key"),
        }
    }

    fn signature(&self, signing_input: &str) -> openpgp::Result<Vec<u8>> {
        let mut ctx = HashAlgorithm::SHA256.context()?.for_digest();
        ctx.update(signing_input.as_bytes());
        let digest = ctx.into_digest()?;
        let mut pair = self.pair.clone();
        match pair.sign(HashAlgorithm::SHA256, &digest)? {
            mpi::Signature::RSA { s } => {
                // MPIs drop leading zeros; JWS wants the full modulus length.
                let v = s.value();
                let mut out = vec![0u8; self.modulus_len.saturating_sub(v.len())];
                out.extend_from_slice(v);
                Ok(out)
            }
            _ => unreachable!("an RSA key signs with RSA"),
        }
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("serializable"));
        let input = format!("{header}.{payload}");
        let sig = self.signature(&input).expect("RSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// The claims of a token this key signed, or `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let (input, sig) = token.rsplit_once('.')?;
        let (header, payload) = input.split_once('.')?;
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg")?.as_str()? != "RS256" {
            return None;
        }
        let given = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut ctx = HashAlgorithm::SHA256.context().ok()?.for_digest();
        ctx.update(input.as_bytes());
        let digest = ctx.into_digest().ok()?;
        let signature = mpi::Signature::RSA {
            s: mpi::MPI::new(&given),
        };
        self.pair
            .public()
            .verify(&signature, HashAlgorithm::SHA256, &digest)
            .ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let key = JwtKey::generate().unwrap();
        let claims = Claims {
            iss: "http://127.0.0.1:1/".into(),
            sub: "u".into(),
            exp: 42,
        };
        let token = key.issue(&claims);
        assert_eq!(key.verify(&token).unwrap().exp, 42);
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(key.verify(&tampered).is_none());
        assert!(key.verify("garbage").is_none());
        let other = JwtKey::generate().unwrap();
        assert!(other.verify(&token).is_none());
    }
}
