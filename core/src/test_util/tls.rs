//! A throwaway TLS `redis-server`, with a certificate authority and certificates
//! generated for the test (nothing checked in).

use std::{
    env, fmt, io,
    net::TcpListener,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{Launch, RedisServer, TestServerError};

/// Whether the TLS server asks clients for a certificate.
///
/// ```
/// use stayfast_core::test_util::ClientAuth;
/// assert_ne!(ClientAuth::Required, ClientAuth::None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Any client that trusts the CA connects (`tls-auth-clients no`).
    None,
    /// A client must present a certificate signed by the CA (`tls-auth-clients yes`).
    Required,
}

/// A `redis-server` serving TLS on one free loopback port, with a plaintext port beside
/// it for the test's own administration ([`server`](Self::server)`.command(…)`), and the
/// CA, server and client certificates it generated, as PEM files in its own temporary
/// directory. Stopped by pid and its files removed when dropped.
///
/// The server's certificate names `localhost` and `127.0.0.1`, signed by a CA generated
/// for this server alone: a client that does not trust that CA, or expects another
/// server name, must refuse to connect.
///
/// # Examples
///
/// ```no_run
/// use stayfast_core::test_util::{ClientAuth, TlsRedisServer};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = TlsRedisServer::start(ClientAuth::None).await?;
/// println!("{} trusting {}", server.url(), server.ca_file().display()); // rediss://127.0.0.1:<port>
/// # Ok(()) }
/// ```
pub struct TlsRedisServer {
    server: RedisServer,
    tls_port: u16,
    files: CertFiles,
}

impl TlsRedisServer {
    /// The DNS name in the server's certificate (it also names the IP `127.0.0.1`).
    ///
    /// ```
    /// assert_eq!(stayfast_core::test_util::TlsRedisServer::SERVER_NAME, "localhost");
    /// ```
    pub const SERVER_NAME: &'static str = "localhost";

    /// Generates a CA, a server and a client certificate, and starts the server.
    ///
    /// # Errors
    ///
    /// As [`RedisServer::start`]; [`TestServerError::Io`] when the certificates cannot
    /// be generated or written.
    pub async fn start(client_auth: ClientAuth) -> Result<Self, TestServerError> {
        let files = CertFiles::generate()?;
        let tls_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let path = |p: &Path| p.display().to_string();
        let auth = match client_auth {
            ClientAuth::None => "no",
            ClientAuth::Required => "yes",
        };
        let args = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&files.server_cert),
            "--tls-key-file".into(),
            path(&files.server_key),
            "--tls-ca-cert-file".into(),
            path(&files.ca),
            "--tls-auth-clients".into(),
            auth.into(),
        ];
        let server = RedisServer::start_with(Launch {
            args,
            ..Launch::default()
        })
        .await?;
        Ok(Self {
            server,
            tls_port,
            files,
        })
    }

    /// `rediss://127.0.0.1:<tls port>`.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{ClientAuth, TlsRedisServer};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TlsRedisServer::start(ClientAuth::None).await?;
    /// assert!(server.url().starts_with("rediss://127.0.0.1:"));
    /// # Ok(()) }
    /// ```
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }

    /// The TLS port.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{ClientAuth, TlsRedisServer};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TlsRedisServer::start(ClientAuth::None).await?;
    /// assert_ne!(server.tls_port(), server.server().port()); // the plaintext admin port
    /// # Ok(()) }
    /// ```
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The server process, with its plaintext port for the test's own commands.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{ClientAuth, TlsRedisServer};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TlsRedisServer::start(ClientAuth::None).await?;
    /// server.server().command(&["SET", "k", "v"]).await?;
    /// # Ok(()) }
    /// ```
    pub fn server(&self) -> &RedisServer {
        &self.server
    }

    /// The server process, to kill, pause or restart it.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{ClientAuth, TlsRedisServer};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut server = TlsRedisServer::start(ClientAuth::None).await?;
    /// server.server_mut().kill()?;
    /// # Ok(()) }
    /// ```
    pub fn server_mut(&mut self) -> &mut RedisServer {
        &mut self.server
    }

    /// The CA certificate (PEM) a client must trust.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{ClientAuth, TlsRedisServer};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TlsRedisServer::start(ClientAuth::None).await?;
    /// assert!(std::fs::read_to_string(server.ca_file())?.contains("BEGIN CERTIFICATE"));
    /// # Ok(()) }
    /// ```
    pub fn ca_file(&self) -> &Path {
        &self.files.ca
    }

    /// A client certificate (PEM) signed by the CA, for [`ClientAuth::Required`].
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{ClientAuth, TlsRedisServer};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TlsRedisServer::start(ClientAuth::Required).await?;
    /// let (cert, key) = (server.client_cert_file(), server.client_key_file());
    /// # let _ = (cert, key);
    /// # Ok(()) }
    /// ```
    pub fn client_cert_file(&self) -> &Path {
        &self.files.client_cert
    }

    /// The client certificate's private key (PEM, PKCS#8).
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{ClientAuth, TlsRedisServer};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = TlsRedisServer::start(ClientAuth::Required).await?;
    /// assert!(std::fs::read_to_string(server.client_key_file())?.contains("PRIVATE KEY"));
    /// # Ok(()) }
    /// ```
    pub fn client_key_file(&self) -> &Path {
        &self.files.client_key
    }
}

impl fmt::Debug for TlsRedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsRedisServer")
            .field("tls_port", &self.tls_port)
            .field("server", &self.server)
            .field("ca", &self.files.ca)
            .finish()
    }
}

/// The PEM files of one test deployment, in a temporary directory removed on drop.
struct CertFiles {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl CertFiles {
    fn generate() -> io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = env::temp_dir().join(format!(
            "stayfast-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let files = Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            dir,
        };
        files.write().map_err(io::Error::other)?;
        Ok(files)
    }

    fn write(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "stayfast test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        std::fs::write(&self.ca, ca.self_signed(&ca_key)?.pem())?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cert: &Path, key: &Path| {
            let pair = KeyPair::generate()?;
            let mut params = CertificateParams::new(names)?;
            params
                .distinguished_name
                .push(DnType::CommonName, "stayfast test");
            params.extended_key_usages = vec![usage];
            std::fs::write(cert, params.signed_by(&pair, &issuer)?.pem())?;
            std::fs::write(key, pair.serialize_pem())?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        let server_names = vec![TlsRedisServer::SERVER_NAME.to_owned(), "127.0.0.1".to_owned()];
        leaf(
            server_names,
            ExtendedKeyUsagePurpose::ServerAuth,
            &self.server_cert,
            &self.server_key,
        )?;
        leaf(
            vec!["stayfast-client".to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
            &self.client_cert,
            &self.client_key,
        )?;
        Ok(())
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
