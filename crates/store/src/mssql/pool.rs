//! The connection pool (deadpool's managed pool over tiberius): a few connections opened on demand and reused,
//! the most recently used first, checked with `SELECT 1` after idling, and a refused login retried once with a
//! re-read secret (a rotated password). A connection that saw an error is detached, not reused.

use deadpool::managed;

use super::*;

/// A connection idle this long is checked before use.
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(5);
/// How long the check may take before the connection counts as dead.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// SQL Server's "Login failed for user" and "password has expired".
const LOGIN_REFUSED: [u32; 2] = [18456, 18487];

pub(crate) type Pool = managed::Pool<TdsManager>;

/// A connection taken from the pool. `give_back` returns it; dropped without that (it saw an error), it is
/// detached from the pool and closed.
pub(crate) struct Lease<'a> {
    pub(crate) store: &'a MssqlStore,
    conn: Option<managed::Object<TdsManager>>,
}

impl Lease<'_> {
    pub(crate) fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        self.conn.as_deref_mut().ok_or_else(|| StoreError::Corrupt("connection already returned".into()))
    }

    pub(crate) async fn give_back(mut self) {
        // Dropping the object returns it to the pool.
        drop(self.conn.take());
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(managed::Object::take(conn));
        }
    }
}

/// Opens connections with the connection string in use (re-read from its secret after a refused login) and
/// checks one that idled before it is handed out again.
pub(crate) struct TdsManager {
    config: std::sync::RwLock<Config>,
    /// Where the connection string came from, to read it again when a login is refused.
    rotation: Option<(Arc<dyn SecretSource>, String)>,
}

impl TdsManager {
    pub(crate) fn new(config: Config, rotation: Option<(Arc<dyn SecretSource>, String)>) -> Self {
        Self { config: std::sync::RwLock::new(config), rotation }
    }

    fn config(&self) -> Result<Config, StoreError> {
        self.config.read().map(|c| c.clone()).map_err(|_| StoreError::Corrupt("connection settings poisoned".into()))
    }
}

impl managed::Manager for TdsManager {
    type Type = Conn;
    type Error = StoreError;

    async fn create(&self) -> Result<Conn, StoreError> {
        let login = TdsLogin { current: self.config()?, rotation: self.rotation.as_ref() };
        let (conn, fresh) = open_with_rotation(&login).await?;
        if let Some(ado) = fresh {
            let config = Config::from_ado_string(&ado).map_err(db("parse connection string"))?;
            *self.config.write().map_err(|_| StoreError::Corrupt("connection settings poisoned".into()))? = config;
            tracing::info!("logged in to the database with its rotated secret");
        }
        Ok(conn)
    }

    /// A connection idle for `CHECK_IDLE_AFTER` or more (the Lambda environment may have been frozen meanwhile,
    /// and the server or a NAT may have closed it) answers `SELECT 1` first, or is dropped.
    async fn recycle(&self, conn: &mut Conn, metrics: &managed::Metrics) -> managed::RecycleResult<StoreError> {
        let idle = metrics.last_used();
        if idle < CHECK_IDLE_AFTER || alive(conn).await {
            return Ok(());
        }
        tracing::warn!(idle_ms = idle.as_millis() as u64, "a pooled database connection was dead; dropped");
        Err(managed::RecycleError::message("the connection did not answer SELECT 1"))
    }
}

/// A pool of at most `size` connections, the most recently used handed out first.
pub(crate) fn pool(manager: TdsManager, size: usize) -> Result<Pool, StoreError> {
    Pool::builder(manager)
        .max_size(size.max(1))
        .queue_mode(managed::QueueMode::Lifo)
        .build()
        .map_err(|e| StoreError::Database { context: "build the connection pool", message: e.to_string() })
}

/// `SELECT 1` within `CHECK_TIMEOUT`.
async fn alive(conn: &mut Conn) -> bool {
    let check = async {
        conn.simple_query("SELECT 1").await?.into_results().await?;
        Ok::<_, tiberius::error::Error>(())
    };
    matches!(tokio::time::timeout(CHECK_TIMEOUT, check).await, Ok(Ok(())))
}

/// Why opening a connection failed: a refused login may be cured by reading a rotated secret.
#[derive(Debug)]
pub(crate) enum OpenError {
    LoginRefused(StoreError),
    Other(StoreError),
}

impl From<OpenError> for StoreError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::LoginRefused(e) | OpenError::Other(e) => e,
        }
    }
}

/// One way to log in: with the connection string in use, or with a fresh one; and how to read a fresh one.
#[async_trait]
pub(crate) trait Login: Sync {
    type Conn: Send;
    /// Logs in with the connection string in use (`None`) or with `fresh`.
    async fn attempt(&self, fresh: Option<&str>) -> Result<Self::Conn, OpenError>;
    /// Reads the connection string again, when it came from a secret.
    async fn reread(&self) -> Option<Result<String, StoreError>>;
}

/// Logs in; when the login is refused and the connection string came from a secret, reads it again and tries
/// once more with it (what a rotation of the database password needs). Returns the connection and, when a new
/// connection string was read and worked, that string.
pub(crate) async fn open_with_rotation<L: Login>(login: &L) -> Result<(L::Conn, Option<String>), StoreError> {
    match login.attempt(None).await {
        Ok(conn) => Ok((conn, None)),
        Err(OpenError::LoginRefused(first)) => {
            let Some(fresh) = login.reread().await else { return Err(first) };
            tracing::warn!(error = %first, "the database refused the login; read its connection secret again");
            let fresh = fresh?;
            let conn = login.attempt(Some(&fresh)).await.map_err(StoreError::from)?;
            Ok((conn, Some(fresh)))
        }
        Err(OpenError::Other(e)) => Err(e),
    }
}

/// The TDS login of a store.
struct TdsLogin<'a> {
    current: Config,
    rotation: Option<&'a (Arc<dyn SecretSource>, String)>,
}

#[async_trait]
impl Login for TdsLogin<'_> {
    type Conn = Conn;

    async fn attempt(&self, fresh: Option<&str>) -> Result<Conn, OpenError> {
        match fresh {
            None => MssqlStore::open_with(self.current.clone()).await,
            Some(ado) => {
                let config =
                    Config::from_ado_string(ado).map_err(|e| OpenError::Other(db("parse connection string")(e)))?;
                MssqlStore::open_with(config).await
            }
        }
    }

    async fn reread(&self) -> Option<Result<String, StoreError>> {
        let (source, arn) = self.rotation?;
        Some(
            source
                .read(arn)
                .await
                .map_err(|message| StoreError::Database { context: "read the database secret", message }),
        )
    }
}

impl MssqlStore {
    pub(crate) async fn open_with(config: Config) -> Result<Conn, OpenError> {
        let other =
            |context: &'static str, message: String| OpenError::Other(StoreError::Database { context, message });
        let tcp = tokio::time::timeout(Duration::from_secs(15), TcpStream::connect(config.get_addr()))
            .await
            .map_err(|_| other("connect", "timed out".into()))?
            .map_err(|e| other("connect", e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| other("connect", e.to_string()))?;
        let mut client = match Client::connect(config, tcp.compat_write()).await {
            Ok(client) => client,
            Err(e) if server_code(&e).is_some_and(|c| LOGIN_REFUSED.contains(&c)) => {
                return Err(OpenError::LoginRefused(db("login")(e)));
            }
            Err(e) => return Err(OpenError::Other(db("login")(e))),
        };
        client
            .simple_query(SESSION_OPTIONS)
            .await
            .map_err(|e| OpenError::Other(db("set session options")(e)))?
            .into_results()
            .await
            .map_err(|e| OpenError::Other(db("set session options")(e)))?;
        Ok(client)
    }

    pub(crate) async fn lease(&self) -> Result<Lease<'_>, StoreError> {
        let conn = self.pool.get().await.map_err(|e| match e {
            managed::PoolError::Backend(e) => e,
            other => StoreError::Database { context: "take a pooled connection", message: other.to_string() },
        })?;
        Ok(Lease { store: self, conn: Some(conn) })
    }
}
