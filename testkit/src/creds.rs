//! NATS decentralised authentication for tests: an operator, an account
//! with JetStream, and user credentials files (JWT plus nkey seed), made
//! with the `nkeys` crate and hand-encoded JWT claims (header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, claims signed by the issuer's
//! nkey, both base64url without padding, as `nsc` writes them).
//!
//! [`Operator::server_config`] is the nats-server config that trusts the
//! operator and preloads the account (memory resolver), so a test server
//! accepts the users' `.creds` files. Nothing here talks to a server.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// An operator with one JetStream-enabled account (and the system account
/// a server in operator mode needs for JetStream).
pub struct Operator {
    operator: KeyPair,
    account: KeyPair,
    system: KeyPair,
    operator_jwt: String,
    account_jwt: String,
    system_jwt: String,
}

impl Operator {
    /// A new operator `name`, its account `<name>-account` with unlimited
    /// JetStream, and its system account `<name>-system`.
    pub fn new(name: &str) -> Operator {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let system = KeyPair::new_account();
        let operator_jwt = encode(
            &operator,
            &operator.public_key(),
            name,
            json!({ "system_account": system.public_key(), "type": "operator", "version": 2 }),
        );
        let system_jwt = encode(
            &operator,
            &system.public_key(),
            &format!("{name}-system"),
            json!({ "type": "account", "version": 2 }),
        );
        let account_jwt = encode(
            &operator,
            &account.public_key(),
            &format!("{name}-account"),
            json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
                },
                "default_permissions": { "pub": {}, "sub": {} },
                "type": "account",
                "version": 2
            }),
        );
        Operator {
            operator,
            account,
            system,
            operator_jwt,
            account_jwt,
            system_jwt,
        }
    }

    /// The operator's public key (`O…`).
    pub fn public_key(&self) -> String {
        self.operator.public_key()
    }

    /// The nats-server config lines that trust this operator and know its
    /// accounts.
    pub fn server_config(&self) -> String {
        format!(
            "operator: {:?}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {:?}\n  {}: {:?}\n}}\n",
            self.operator_jwt,
            self.system.public_key(),
            self.account.public_key(),
            self.account_jwt,
            self.system.public_key(),
            self.system_jwt,
        )
    }

    /// A credentials file for a new user `name` of the account, written to
    /// `dir/<name>.creds`; its path.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn user_creds(&self, dir: &Path, name: &str) -> PathBuf {
        let user = KeyPair::new_user();
        let jwt = encode(
            &self.account,
            &user.public_key(),
            name,
            json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2
            }),
        );
        let seed = user
            .seed()
            .unwrap_or_else(|error| panic!("user seed: {error}"));
        let text = format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        );
        let path = dir.join(format!("{name}.creds"));
        std::fs::write(&path, text)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        path
    }
}

/// A JWT about `subject`, issued and signed by `issuer`.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let claims = json!({
        // A unique id; the server does not check how it was derived.
        "jti": format!("{subject}{issued_at}"),
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer
        .sign(signing_input.as_bytes())
        .unwrap_or_else(|error| panic!("cannot sign a JWT: {error}"));
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_is_signed_by_its_issuer() {
        let operator = KeyPair::new_operator();
        let jwt = encode(
            &operator,
            &operator.public_key(),
            "o",
            json!({ "type": "operator", "version": 2 }),
        );
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url");
        operator
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("a valid signature");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
                .expect("json");
        assert_eq!(claims["iss"], operator.public_key());
    }
}
