//! Throwaway certificates for TLS tests: a certificate authority, a server
//! certificate for `127.0.0.1` and `localhost`, and a client certificate,
//! written as PEM files to a temporary directory that is removed on drop.
//!
//! Each [`TestPki`] has its own CA, so a second one gives the "unknown
//! issuer" and "client certificate from another CA" cases. Nothing here talks
//! to a server; [`TestPki::server_tls_block`] is the `tls {}` block a
//! nats-server config needs to use it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate authority with one server and one client certificate.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Generates a new CA, a server certificate (for `127.0.0.1` and
    /// `localhost`) and a client certificate (`CN=loom-client`), signed by it.
    ///
    /// # Panics
    /// When a key or certificate cannot be made or written.
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("loom-pki-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for certificates: {error}"));

        let ca_key = KeyPair::generate().unwrap_or_else(|error| panic!("CA key: {error}"));
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("Loom test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .unwrap_or_else(|error| panic!("CA certificate: {error}"));
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |common_name: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap_or_else(|error| panic!("key: {error}"));
            let mut params = CertificateParams::new(names)
                .unwrap_or_else(|error| panic!("certificate parameters: {error}"));
            params.distinguished_name = name(common_name);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            let cert = params
                .signed_by(&key, &issuer)
                .unwrap_or_else(|error| panic!("certificate {common_name}: {error}"));
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            "loom-nats",
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            "loom-client",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        let pki = TestPki { dir };
        for (path, text) in [
            (pki.ca(), ca_cert.pem()),
            (pki.server_cert(), server_cert),
            (pki.server_key(), server_key),
            (pki.client_cert(), client_cert),
            (pki.client_key(), client_key),
        ] {
            std::fs::write(&path, text)
                .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        }
        pki
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (`ca.pem`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (`server.pem`).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (`server-key.pem`).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// The client certificate (`client.pem`).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client's private key (`client-key.pem`).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client-key.pem")
    }

    /// A nats-server `tls {}` block serving the server certificate and, with
    /// `verify`, requiring a client certificate signed by this CA.
    pub fn server_tls_block(&self, verify: bool) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n  timeout: 5\n}}\n",
            self.server_cert().display().to_string(),
            self.server_key().display().to_string(),
            self.ca().display().to_string(),
        )
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_and_two_authorities_differ() {
        let a = TestPki::generate();
        let b = TestPki::generate();
        for path in [
            a.ca(),
            a.server_cert(),
            a.server_key(),
            a.client_cert(),
            a.client_key(),
        ] {
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
        }
        assert_ne!(
            std::fs::read_to_string(a.ca()).expect("read"),
            std::fs::read_to_string(b.ca()).expect("read")
        );
        assert!(a.server_tls_block(true).contains("verify: true"));
    }
}
