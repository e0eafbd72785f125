//! A throwaway `redis-server` for tests: yours, ours, and the examples'.
//!
//! [`RedisServer::start`] runs `redis-server` on a free port of 127.0.0.1 in its own
//! temporary directory (no persistence, `DEBUG` enabled for fault injection), and stops
//! it when dropped. It never touches port 6379 or a server it did not start. The server
//! can be killed (`SIGKILL`), paused (`SIGSTOP`, a black hole: connections open, nothing
//! answers), resumed, and restarted on the same port. [`RedisServer::command`] talks to
//! it over a raw connection, independent of fred, for `CONFIG SET`, `CLIENT PAUSE`,
//! `DEBUG SLEEP`, `INFO commandstats`…
//!
//! # Examples
//!
//! ```no_run
//! use stayfast_core::test_util::{RedisServer, Reply};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = RedisServer::start().await?;        // fails with the install command if missing
//! assert_eq!(server.command(&["PING"]).await?, Reply::Simple("PONG".into()));
//! println!("connect to {}", server.url());
//! server.pause()?;                                  // SIGSTOP: every call now hangs
//! server.resume()?;
//! # Ok(()) }
//! ```

mod cluster;
mod sentinel;
mod tls;

pub use self::{
    cluster::RedisCluster,
    sentinel::RedisSentinel,
    tls::{ClientAuth, TlsRedisServer},
};

use std::{
    env, fmt, io,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, sleep, timeout},
};

/// The command that installs redis-server, for error messages.
///
/// ```
/// assert!(stayfast_core::test_util::INSTALL_HINT.contains("apt-get install -y redis-server"));
/// ```
pub const INSTALL_HINT: &str = "install it with `sudo apt-get update && sudo apt-get install -y redis-server` \
     (Debian/Ubuntu) or `brew install redis` (macOS), or set STAYFAST_REDIS_SERVER to its path";

/// How long a starting server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a test server could not be started.
///
/// ```
/// let e = stayfast_core::test_util::TestServerError::NotInstalled { binary: "redis-server".into() };
/// assert!(e.to_string().contains("apt-get install -y redis-server"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestServerError {
    /// No `redis-server` binary was found.
    #[error("redis-server not found (looked for `{binary}`): {INSTALL_HINT}")]
    NotInstalled {
        /// What was looked for.
        binary: String,
    },
    /// The server did not answer PING in time (its log is attached).
    #[error("redis-server did not become ready on 127.0.0.1:{port} within {waited:?}; its log:\n{log}")]
    NotReady {
        /// The port it was started on.
        port: u16,
        /// How long it was given.
        waited: Duration,
        /// The end of its log file.
        log: String,
    },
    /// Starting or stopping the process failed.
    #[error("redis-server process: {0}")]
    Io(#[from] io::Error),
}

/// One reply of the RESP protocol.
///
/// ```
/// use stayfast_core::test_util::Reply;
/// assert_eq!(Reply::Integer(3).as_integer(), Some(3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:3`
    Integer(i64),
    /// `$…` (`None` is nil).
    Bulk(Option<Vec<u8>>),
    /// `*…` (`None` is a nil array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The integer, if this is one.
    ///
    /// ```
    /// use stayfast_core::test_util::Reply;
    /// assert_eq!(Reply::Integer(3).as_integer(), Some(3));
    /// assert_eq!(Reply::Simple("3".into()).as_integer(), None); // only `:` replies
    /// ```
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The text of a simple string, error or bulk string.
    ///
    /// ```
    /// use stayfast_core::test_util::Reply;
    /// assert_eq!(Reply::Bulk(Some(b"v".to_vec())).as_text().as_deref(), Some("v"));
    /// ```
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) | Reply::Error(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// A `redis-server` process this test owns. See the [module docs](self).
///
/// ```no_run
/// # use stayfast_core::test_util::RedisServer;
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut server = RedisServer::start().await?;
/// server.kill()?; // Redis crashes…
/// server.restart().await?; // …and comes back, empty, on the same port
/// # Ok(()) } // dropped: the process is stopped and its directory removed
/// ```
pub struct RedisServer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    launch: Launch,
    /// The user and password [`command`](Self::command) authenticates as, if any.
    credentials: Option<(String, String)>,
}

/// How a server is started beyond the defaults: the role-specific parts that a cluster
/// node, a replica, a sentinel or a TLS server add.
#[derive(Clone, Debug, Default)]
pub(crate) struct Launch {
    /// Extra command-line arguments, after the defaults (a later one wins).
    pub(crate) args: Vec<String>,
    /// A config file's contents, written into the server's directory and passed first
    /// (a sentinel needs one it can rewrite).
    pub(crate) config: Option<String>,
    /// Run as a sentinel (`--sentinel`).
    pub(crate) sentinel: bool,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING.
    ///
    /// # Errors
    ///
    /// [`TestServerError::NotInstalled`] (with the install command) when there is no
    /// `redis-server`; [`TestServerError::NotReady`] when it does not start.
    ///
    /// ```
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = RedisServer::start().await?; // a free port, its own temporary directory
    /// assert_eq!(server.command(&["SET", "k", "v"]).await?, Reply::Simple("OK".into()));
    /// assert_eq!(server.command(&["GET", "k"]).await?, Reply::Bulk(Some(b"v".to_vec())));
    /// # Ok(()) }
    /// ```
    pub async fn start() -> Result<Self, TestServerError> {
        Self::start_with(Launch::default()).await
    }

    /// Starts a server as [`start`](Self::start) does, with `args` added after the
    /// defaults (a later one wins): e.g. persistence, so that data survives
    /// [`kill`](Self::kill) and [`restart`](Self::restart) (the defaults keep none).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start); a server that refuses an argument is
    /// [`TestServerError::NotReady`], with its log.
    ///
    /// ```
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut server = RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]).await?;
    /// server.command(&["SET", "k", "v"]).await?;
    /// server.restart().await?; // killed, started again: the AOF brings the data back
    /// assert_eq!(server.command(&["GET", "k"]).await?, Reply::Bulk(Some(b"v".to_vec())));
    /// # Ok(()) }
    /// ```
    pub async fn start_with_args(args: &[&str]) -> Result<Self, TestServerError> {
        Self::start_with(Launch {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Launch::default()
        })
        .await
    }

    /// Starts a server with the role-specific arguments of `launch`.
    pub(crate) async fn start_with(launch: Launch) -> Result<Self, TestServerError> {
        let binary = find_binary()?;
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = env::temp_dir().join(format!(
            "stayfast-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self {
            binary,
            dir,
            port,
            child: None,
            launch,
            credentials: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> Result<(), TestServerError> {
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.launch.config {
            let path = self.dir.join("redis.conf");
            std::fs::write(&path, config)?;
            command.arg(path);
        }
        if self.launch.sentinel {
            command.arg("--sentinel");
        }
        let child = command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
            ])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.launch.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait()?.is_some()
            {
                break; // exited: report its log
            }
            if let Ok(Ok(Reply::Simple(pong))) =
                timeout(Duration::from_millis(500), self.command(&["PING"])).await
                && pong == "PONG"
            {
                return Ok(());
            }
            sleep(Duration::from_millis(20)).await;
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        self.stop();
        Err(TestServerError::NotReady {
            port: self.port,
            waited: READY_TIMEOUT,
            log: tail,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The port it listens on (127.0.0.1).
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = RedisServer::start().await?;
    /// let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    /// let stream = tokio::net::TcpStream::connect(addr).await?; // e.g. behind a faulty proxy
    /// # Ok(()) }
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = RedisServer::start().await?;
    /// let mut config = stayfast_core::redis::RedisConfig::default();
    /// config.url = server.url(); // redis://127.0.0.1:<port>
    /// let redis = stayfast_core::redis::Redis::connect(&config).await?;
    /// # Ok(()) }
    /// ```
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id, while it runs.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut server = RedisServer::start().await?;
    /// assert!(server.pid().is_some());
    /// server.kill()?;
    /// assert_eq!(server.pid(), None); // no longer running
    /// # Ok(()) }
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: the server dies at once; clients see their connections reset.
    ///
    /// # Errors
    ///
    /// Only when the process cannot be signalled or reaped.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut server = RedisServer::start().await?;
    /// server.kill()?; // connections reset: calls fail at once
    /// assert!(server.command(&["PING"]).await.is_err());
    /// # Ok(()) }
    /// ```
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// `SIGSTOP`: the server freezes; connections stay open and nothing answers.
    ///
    /// # Errors
    ///
    /// When the server is not running or `kill` fails.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = RedisServer::start().await?;
    /// server.pause()?; // a black hole: connections open, nothing answers
    /// let err = server.command(&["PING"]).await.unwrap_err(); // after `command`'s 5 s bound
    /// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    /// # server.resume()?;
    /// # Ok(()) }
    /// ```
    pub fn pause(&self) -> io::Result<()> {
        self.signal("-STOP")
    }

    /// `SIGCONT`: a paused server carries on.
    ///
    /// # Errors
    ///
    /// When the server is not running or `kill` fails.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = RedisServer::start().await?;
    /// server.pause()?;
    /// server.resume()?; // commands sent meanwhile are answered now
    /// assert_eq!(server.command(&["PING"]).await?, Reply::Simple("PONG".into()));
    /// # Ok(()) }
    /// ```
    pub fn resume(&self) -> io::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        // The shell's builtin `kill`: `sh` is on every Unix system, `/usr/bin/kill` is not.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill {signal} {pid}"))
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill {signal} {pid} failed: {status}")))
        }
    }

    /// Kills the server if it runs, and starts a fresh one (empty) on the same port.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut server = RedisServer::start().await?;
    /// server.command(&["SET", "k", "v"]).await?;
    /// server.restart().await?; // same port, no data
    /// assert_eq!(server.command(&["GET", "k"]).await?, Reply::Bulk(None));
    /// # Ok(()) }
    /// ```
    pub async fn restart(&mut self) -> Result<(), TestServerError> {
        self.kill()?;
        self.spawn().await
    }

    /// Sends one command over a fresh connection and reads its reply (5 s bound).
    ///
    /// # Errors
    ///
    /// A connection error, a timeout (`TimedOut`, e.g. while paused), or a malformed reply.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = RedisServer::start().await?;
    /// assert_eq!(server.command(&["INCR", "n"]).await?.as_integer(), Some(1));
    /// // Fault injection, independent of fred: the server stops answering clients for 2 s.
    /// server.command(&["CLIENT", "PAUSE", "2000"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn command(&self, args: &[&str]) -> io::Result<Reply> {
        let exchange = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
            let mut request = Vec::new();
            // AUTH goes first, in the same write: its reply is read (and must be OK)
            // before the command's.
            let mut replies_before = 0;
            if let Some((user, password)) = &self.credentials {
                encode(&mut request, &["AUTH", user, password]);
                replies_before = 1;
            }
            encode(&mut request, args);
            stream.write_all(&request).await?;
            let mut buf = Vec::new();
            loop {
                if let Some((reply, used)) = parse(&buf)? {
                    if replies_before == 0 {
                        return Ok(reply);
                    }
                    if let Reply::Error(e) = reply {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!("AUTH refused: {e}"),
                        ));
                    }
                    replies_before -= 1;
                    buf.drain(..used);
                    continue;
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        timeout(Duration::from_secs(5), exchange)
            .await
            .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)))
    }

    /// Makes [`command`](Self::command) authenticate as `user` first (`AUTH user
    /// password` on each connection), for a server whose default user is off; `None`
    /// goes back to the default user.
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut server = RedisServer::start().await?;
    /// server.command(&["ACL", "SETUSER", "admin", "on", ">pw", "~*", "&*", "+@all"]).await?;
    /// server.command(&["ACL", "SETUSER", "default", "off"]).await?;
    /// server.authenticate_as(Some(("admin", "pw")));
    /// assert_eq!(server.command(&["PING"]).await?, Reply::Simple("PONG".into()));
    /// # Ok(()) }
    /// ```
    pub fn authenticate_as(&mut self, credentials: Option<(&str, &str)>) {
        self.credentials = credentials.map(|(user, password)| (user.to_owned(), password.to_owned()));
    }

    /// How many times the server executed `command` (lower case, e.g. `"set"`), from
    /// `INFO commandstats`' `calls=`. Commands the server refused before running them
    /// (an `OOM` reply) are counted apart, as `rejected_calls`, and not included.
    ///
    /// # Errors
    ///
    /// As [`command`](Self::command).
    ///
    /// ```no_run
    /// # use stayfast_core::test_util::{RedisServer, Reply};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = RedisServer::start().await?;
    /// server.command(&["SET", "k", "v"]).await?;
    /// assert_eq!(server.executions("set").await?, 1); // ran once: no duplicate from a retry
    /// # Ok(()) }
    /// ```
    pub async fn executions(&self, command: &str) -> io::Result<u64> {
        let info = self
            .command(&["INFO", "commandstats"])
            .await?
            .as_text()
            .unwrap_or_default();
        let prefix = format!("cmdstat_{command}:calls=");
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    fn stop(&mut self) {
        let _ = self.resume(); // a stopped process does not die of SIGKILL until resumed on some systems
        let _ = self.kill();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir)
            .finish()
    }
}

fn find_binary() -> Result<PathBuf, TestServerError> {
    if let Some(path) = env::var_os("STAYFAST_REDIS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(TestServerError::NotInstalled {
                binary: path.display().to_string(),
            })
        };
    }
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|p| is_executable(p))
        .ok_or_else(|| TestServerError::NotInstalled {
            binary: "redis-server".into(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Parses one RESP reply from the front of `buf`: `None` when more bytes are needed.
/// Appends `args` to `request` as one RESP command (an array of bulk strings).
fn encode(request: &mut Vec<u8>, args: &[&str]) {
    request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
}

fn parse(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line =
        std::str::from_utf8(&buf[1..end]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let after = end + 2;
    let number = || {
        line.parse::<i64>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    };
    match buf.first() {
        Some(b'+') => Ok(Some((Reply::Simple(line.to_owned()), after))),
        Some(b'-') => Ok(Some((Reply::Error(line.to_owned()), after))),
        Some(b':') => Ok(Some((Reply::Integer(number()?), after))),
        Some(b'$') => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let len = len as usize;
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            Ok(Some((
                Reply::Bulk(Some(buf[after..after + len].to_vec())),
                after + len + 2,
            )))
        }
        Some(b'*') => {
            let count = number()?;
            if count < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..count {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "not a RESP reply")),
    }
}
