//! Streaming sessions: a bounded table of per-stream states that expire when idle.
//!
//! A session keeps the engine version it was opened with, so a stream's predictions stay
//! consistent across a reload; new sessions get the new version.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::TryRngCore;
use tns_engine::Session;

use crate::error::ApiError;

/// One open stream.
#[derive(Debug)]
pub struct Stream {
    /// The model name it was opened on.
    pub model: String,
    /// The model version it predicts with.
    pub version: u64,
    /// The engine state.
    pub session: Session,
    last_used: Instant,
}

/// Who a session belongs to: the bearer token its opener presented, or else the client's
/// address. A session opened with a token answers only requests with that token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// `Authorization: Bearer <token>` of the request that opened it.
    Token(String),
    /// The client's IP address (no token given).
    Address(IpAddr),
}

impl Owner {
    /// Whether a request from `caller` may use a session of this owner: a token-bound
    /// session needs the same token; an address-owned one is reachable by its id alone
    /// (ids are 128-bit random), so a client behind a changing address keeps its stream.
    fn admits(&self, caller: &Owner) -> bool {
        match self {
            Owner::Token(_) => self == caller,
            Owner::Address(_) => true,
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Owner {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        Ok(match token {
            Some(t) => Owner::Token(t.to_string()),
            None => Owner::Address(
                parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip()),
            ),
        })
    }
}

/// Bounds of the session table.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Most open sessions in all.
    pub max: usize,
    /// Most open sessions per owner (token or address).
    pub per_owner: usize,
    /// Most bytes all sessions may hold (each holds a fixed amount from its opening).
    pub bytes: usize,
    /// Idle time after which a session is closed.
    pub idle: Duration,
}

#[derive(Debug)]
struct Entry {
    owner: Owner,
    bytes: usize,
    stream: Arc<Mutex<Stream>>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<String, Entry>,
    per_owner: HashMap<Owner, usize>,
    bytes: usize,
}

impl Table {
    fn remove(&mut self, id: &str) {
        if let Some(e) = self.entries.remove(id) {
            self.bytes -= e.bytes;
            if let Some(n) = self.per_owner.get_mut(&e.owner) {
                *n -= 1;
                if *n == 0 {
                    self.per_owner.remove(&e.owner);
                }
            }
        }
    }
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    limits: SessionLimits,
    table: Mutex<Table>,
}

impl Sessions {
    /// An empty table with these bounds.
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            table: Mutex::new(Table::default()),
        }
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.limits.idle
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the map itself inconsistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `owner` and returns its id; refused (429) when the owner has
    /// its quota open, or the table is full in count or bytes.
    pub fn open(
        &self,
        model: &str,
        version: u64,
        session: Session,
        owner: Owner,
    ) -> Result<String, ApiError> {
        // Ids come from the OS generator: a session is addressed by its id alone, so it
        // must not be guessable.
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| ApiError::Internal(format!("no randomness for a session id: {e}")))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let size = session.heap_bytes();
        let limits = self.limits;
        let mut table = self.table();
        let full = |t: &Table| {
            t.entries.len() >= limits.max
                || t.bytes + size > limits.bytes
                || t.per_owner
                    .get(&owner)
                    .is_some_and(|&n| n >= limits.per_owner)
        };
        if full(&table) {
            self.expire_locked(&mut table);
        }
        let idle = limits.idle.as_secs();
        if table
            .per_owner
            .get(&owner)
            .is_some_and(|&n| n >= limits.per_owner)
        {
            return Err(ApiError::TooManySessions(format!(
                "you have {} sessions open, the limit per client; close one (DELETE) or let idle ones expire ({idle} s)",
                limits.per_owner
            )));
        }
        if table.entries.len() >= limits.max || table.bytes + size > limits.bytes {
            return Err(ApiError::TooManySessions(format!(
                "the session table is full ({} sessions, {} of {} bytes); close one (DELETE) or wait for idle sessions to expire ({idle} s)",
                table.entries.len(),
                table.bytes,
                limits.bytes
            )));
        }
        *table.per_owner.entry(owner.clone()).or_default() += 1;
        table.bytes += size;
        table.entries.insert(
            id.clone(),
            Entry {
                owner,
                bytes: size,
                stream: Arc::new(Mutex::new(Stream {
                    model: model.to_string(),
                    version,
                    session,
                    last_used: Instant::now(),
                })),
            },
        );
        Ok(id)
    }

    /// Runs `f` on the session `id` of `model`, if `caller` may use it, and marks it used.
    pub fn with<R>(
        &self,
        model: &str,
        id: &str,
        caller: &Owner,
        f: impl FnOnce(&mut Stream) -> R,
    ) -> Result<R, ApiError> {
        let stream = self
            .table()
            .entries
            .get(id)
            .filter(|e| e.owner.admits(caller))
            .map(|e| e.stream.clone())
            .ok_or_else(|| ApiError::UnknownSession(id.to_string()))?;
        let mut stream = stream.lock().unwrap_or_else(|p| p.into_inner());
        if stream.model != model {
            return Err(ApiError::UnknownSession(id.to_string()));
        }
        stream.last_used = Instant::now();
        Ok(f(&mut stream))
    }

    /// Closes a session, if `caller` may use it.
    pub fn close(&self, model: &str, id: &str, caller: &Owner) -> Result<(), ApiError> {
        let mut table = self.table();
        let owned = table.entries.get(id).is_some_and(|e| {
            e.owner.admits(caller)
                && e.stream.lock().unwrap_or_else(|p| p.into_inner()).model == model
        });
        if !owned {
            return Err(ApiError::UnknownSession(id.to_string()));
        }
        table.remove(id);
        Ok(())
    }

    /// Bytes the open sessions hold.
    pub fn bytes(&self) -> usize {
        self.table().bytes
    }

    /// Removes sessions idle for longer than the timeout; returns how many remain.
    pub fn expire(&self) -> usize {
        let mut table = self.table();
        self.expire_locked(&mut table);
        table.entries.len()
    }

    fn expire_locked(&self, table: &mut Table) {
        let now = Instant::now();
        let idle: Vec<String> = table
            .entries
            .iter()
            .filter(|(_, e)| {
                // A session busy in a request right now is in use, not idle.
                e.stream
                    .try_lock()
                    .is_ok_and(|s| now.duration_since(s.last_used) >= self.limits.idle)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            table.remove(&id);
        }
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.table().entries.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
