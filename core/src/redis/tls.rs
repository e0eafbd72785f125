//! [`RedisTls`]: the `tls` table of a [`RedisConfig`](super::RedisConfig) — which CA to
//! trust, the client certificate, the name to verify — and the rustls client
//! configuration built from it for fred (feature `tls`).
//!
//! The rustls used is the one fred re-exports (`fred::rustls`, the version fred's own
//! connector takes), with the ring provider the `tls` feature selects: no second rustls
//! to keep in step.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// How to connect to Redis over TLS: the `tls` table of a
/// [`RedisConfig`](super::RedisConfig).
///
/// Present, it turns TLS on even for a `redis://` URL: asking for TLS never falls back to
/// plain text. A `rediss://` URL without it trusts the system's CA certificates.
///
/// Certificates and keys are read from PEM files when the handle connects; a file that
/// cannot be read or parsed is a [`ConfigError`] naming the field and the path, never
/// the file's contents. Without the `tls` feature any `tls` table is refused.
///
/// # Examples
///
/// ```
/// let config: stayfast_core::redis::RedisConfig = toml::from_str(r#"
///     url = "rediss://redis.internal:6380"
///     username = "app"
///     [tls]
///     ca_file = "/etc/redis/ca.pem"
///     client_cert = "/etc/redis/client.pem"
///     client_key = "/etc/redis/client.key"
///     server_name = "redis.internal.example"
/// "#).unwrap();
/// let tls = config.tls.as_ref().unwrap();
/// assert_eq!(tls.server_name.as_deref(), Some("redis.internal.example"));
/// assert!(!tls.insecure_skip_verify);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisTls {
    /// The CA certificate(s) to trust (PEM). None: the system's CA certificates.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM) for servers that require one
    /// (`tls-auth-clients yes`); needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); needs
    /// `client_cert`.
    pub client_key: Option<PathBuf>,
    /// The name the server's certificate must carry, when it differs from the host
    /// connected to (an IP address, a cluster node's announced address, a tunnel). It
    /// is also the name the handshake sends (SNI), to every configured node and every
    /// cluster node discovered by address, for proxies and managed Redis that route by
    /// it; a sentinel deployment's primary gets the address the sentinels name.
    pub server_name: Option<String>,
    /// Accept any server certificate. Encrypts but authenticates nothing: anyone on the
    /// path can impersonate Redis. Off by default; when on, the handle warns once at
    /// connect.
    pub insecure_skip_verify: bool,
}

impl RedisTls {
    /// Checks the fields without reading any file.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field (unprefixed: `client_key`…): a client
    /// certificate without its key or the other way round, an empty path, or a
    /// `server_name` that is not a DNS name or an IP address.
    ///
    /// ```
    /// let mut tls = stayfast_core::redis::RedisTls::default();
    /// tls.client_cert = Some("/etc/redis/client.pem".into());
    /// assert_eq!(tls.validate().unwrap_err().field(), "client_key");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "client_key",
                    "is missing: `client_cert` needs its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "client_cert",
                    "is missing: `client_key` needs its certificate",
                ));
            }
            _ => {}
        }
        for (field, path) in [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError::new(field, "is empty; leave it out instead"));
            }
        }
        if let Some(name) = &self.server_name {
            valid_server_name(name)?;
        }
        Ok(())
    }
}

/// A DNS name or an IP address (what rustls can verify a certificate against).
fn valid_server_name(name: &str) -> Result<(), ConfigError> {
    let ip = name.parse::<std::net::IpAddr>().is_ok();
    let dns = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ip || dns {
        Ok(())
    } else {
        Err(ConfigError::new(
            "server_name",
            format!("`{name}` is not a DNS name or an IP address"),
        ))
    }
}

#[cfg(feature = "tls")]
mod build {
    use std::{fmt, path::Path, sync::Arc};

    use fred::rustls::{
        self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
        client::{
            WebPkiServerVerifier,
            danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        },
        crypto::{CryptoProvider, ring},
        pki_types::{
            CertificateDer, PrivateKeyDer, ServerName, UnixTime,
            pem::{self, PemObject},
        },
    };

    use super::RedisTls;
    use crate::config::ConfigError;

    impl RedisTls {
        /// The rustls client configuration for these settings (ring provider, TLS 1.2
        /// and 1.3): the CA file's certificates (else the system's) as roots, the
        /// client certificate if set, verification against `server_name` if set, or none
        /// at all with `insecure_skip_verify`. [`Redis::connect`](super::super::Redis::connect)
        /// calls it; call it yourself to check the files at startup.
        ///
        /// # Errors
        ///
        /// A [`ConfigError`] naming the field (`tls.ca_file`…) and the path of a file that
        /// cannot be read, holds no PEM item of the right kind, or that rustls refuses
        /// (a key that does not match the certificate…). Never the file's contents.
        ///
        /// ```no_run
        /// let mut tls = stayfast_core::redis::RedisTls::default();
        /// tls.ca_file = Some("/etc/redis/ca.pem".into());
        /// match tls.client_config() {
        ///     Ok(_) => println!("certificates readable"),
        ///     Err(e) => eprintln!("{e}"), // invalid config `tls.ca_file`: cannot read /etc/redis/ca.pem (…)
        /// }
        /// ```
        pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
            self.validate().map_err(|e| e.prefixed("tls"))?;
            let provider = Arc::new(ring::default_provider());
            let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| ConfigError::new("tls", format!("rustls refused its defaults ({e})")))?;
            let verifier: Arc<dyn ServerCertVerifier> = if self.insecure_skip_verify {
                Arc::new(AcceptAnyCertificate(provider))
            } else {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| ConfigError::new("tls.ca_file", format!("unusable ({e})")))?;
                match &self.server_name {
                    None => webpki,
                    Some(name) => {
                        let name = ServerName::try_from(name.clone()).map_err(|_| {
                            ConfigError::new("tls.server_name", "is not a DNS name or an IP address")
                        })?;
                        Arc::new(ExpectName { inner: webpki, name })
                    }
                }
            };
            let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
            match (&self.client_cert, &self.client_key) {
                (Some(cert), Some(key_file)) => {
                    let chain = certificates("tls.client_cert", cert)?;
                    let key = private_key(key_file)?;
                    builder.with_client_auth_cert(chain, key).map_err(|e| {
                        ConfigError::new(
                            "tls.client_key",
                            format!(
                                "{} cannot be used with the certificate of tls.client_cert {} ({e})",
                                key_file.display(),
                                cert.display(),
                            ),
                        )
                    })
                }
                _ => Ok(builder.with_no_client_auth()),
            }
        }

        /// The CA file's certificates, or the system's.
        fn roots(&self) -> Result<RootCertStore, ConfigError> {
            let mut roots = RootCertStore::empty();
            match &self.ca_file {
                Some(path) => {
                    for cert in certificates("tls.ca_file", path)? {
                        roots.add(cert).map_err(|e| {
                            ConfigError::new(
                                "tls.ca_file",
                                format!(
                                    "{} holds a certificate rustls cannot use ({})",
                                    path.display(),
                                    rustls_reason(&e)
                                ),
                            )
                        })?;
                    }
                }
                None => {
                    let found = fred::rustls_native_certs::load_native_certs();
                    let (added, _) = roots.add_parsable_certificates(found.certs);
                    if added == 0 {
                        return Err(ConfigError::new(
                            "tls.ca_file",
                            "is not set and no system CA certificate could be loaded; set it to your CA's PEM file",
                        ));
                    }
                }
            }
            Ok(roots)
        }
    }

    /// rustls's own description of what is wrong (it never quotes key material).
    fn rustls_reason(e: &rustls::Error) -> String {
        e.to_string()
    }

    /// The file's bytes, or an error naming the field and the path.
    fn read(field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(path)
            .map_err(|e| ConfigError::new(field, format!("cannot read {} ({})", path.display(), e.kind())))
    }

    /// Why a PEM file could not be parsed, without quoting it.
    fn pem_problem(e: &pem::Error) -> &'static str {
        match e {
            pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line",
            pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
            pem::Error::Base64Decode(_) => "a PEM section is not valid base64",
            pem::Error::NoItemsFound => "no PEM item found",
            _ => "not valid PEM",
        }
    }

    /// Every certificate in a PEM file (at least one).
    fn certificates(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let bytes = read(field, path)?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::new(field, format!("{}: {}", path.display(), pem_problem(&e))))?;
        if certs.is_empty() {
            return Err(ConfigError::new(
                field,
                format!("{} holds no PEM certificate (BEGIN CERTIFICATE)", path.display()),
            ));
        }
        Ok(certs)
    }

    /// The private key of a PEM file.
    fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
        let field = "tls.client_key";
        let bytes = read(field, path)?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
            let why = match e {
                pem::Error::NoItemsFound => "no PEM private key found (PKCS#8, PKCS#1 or SEC1)",
                e => pem_problem(&e),
            };
            ConfigError::new(field, format!("{}: {why}", path.display()))
        })
    }

    /// The standard verification, against the configured name instead of the host.
    #[derive(Debug)]
    struct ExpectName {
        inner: Arc<WebPkiServerVerifier>,
        name: ServerName<'static>,
    }

    impl ServerCertVerifier for ExpectName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _host: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.inner
                .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }

    /// `insecure_skip_verify`: any certificate is accepted; the handshake's signatures
    /// are still checked (the session is encrypted to whoever holds the key).
    struct AcceptAnyCertificate(Arc<CryptoProvider>);

    impl fmt::Debug for AcceptAnyCertificate {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("AcceptAnyCertificate")
        }
    }

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _host: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
