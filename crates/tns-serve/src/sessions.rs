//! Streaming sessions: a bounded table of per-stream states that expire when idle.
//!
//! A session keeps the engine version it was opened with, so a stream's predictions stay
//! consistent across a reload; new sessions get the new version.

use std::collections::HashMap;
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

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    max: usize,
    idle: Duration,
    table: Mutex<HashMap<String, Arc<Mutex<Stream>>>>,
}

impl Sessions {
    /// A table of at most `max` sessions that expire after `idle` without a post.
    pub fn new(max: usize, idle: Duration) -> Self {
        Self {
            max,
            idle,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<Stream>>>> {
        // A panic while holding the lock cannot leave the map itself inconsistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session and returns its id.
    pub fn open(&self, model: &str, version: u64, session: Session) -> Result<String, ApiError> {
        // Ids come from the OS generator: a session is addressed by its id alone, so it
        // must not be guessable.
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| ApiError::Internal(format!("no randomness for a session id: {e}")))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut table = self.table();
        if table.len() >= self.max {
            self.expire_locked(&mut table);
        }
        if table.len() >= self.max {
            return Err(ApiError::TooManySessions(format!(
                "{} sessions are open, the server's limit; close one (DELETE) or wait for idle sessions to expire ({} s)",
                table.len(),
                self.idle.as_secs()
            )));
        }
        table.insert(
            id.clone(),
            Arc::new(Mutex::new(Stream {
                model: model.to_string(),
                version,
                session,
                last_used: Instant::now(),
            })),
        );
        Ok(id)
    }

    /// Runs `f` on the session `id` of `model` and marks it used.
    pub fn with<R>(
        &self,
        model: &str,
        id: &str,
        f: impl FnOnce(&mut Stream) -> R,
    ) -> Result<R, ApiError> {
        let stream = self
            .table()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::UnknownSession(id.to_string()))?;
        let mut stream = stream.lock().unwrap_or_else(|p| p.into_inner());
        if stream.model != model {
            return Err(ApiError::UnknownSession(id.to_string()));
        }
        stream.last_used = Instant::now();
        Ok(f(&mut stream))
    }

    /// Closes a session.
    pub fn close(&self, model: &str, id: &str) -> Result<(), ApiError> {
        let mut table = self.table();
        let owned = table
            .get(id)
            .is_some_and(|s| s.lock().unwrap_or_else(|p| p.into_inner()).model == model);
        if !owned {
            return Err(ApiError::UnknownSession(id.to_string()));
        }
        table.remove(id);
        Ok(())
    }

    /// Removes sessions idle for longer than the timeout; returns how many remain.
    pub fn expire(&self) -> usize {
        let mut table = self.table();
        self.expire_locked(&mut table);
        table.len()
    }

    fn expire_locked(&self, table: &mut HashMap<String, Arc<Mutex<Stream>>>) {
        let now = Instant::now();
        table.retain(|_, s| {
            // A session busy in a request right now is in use, not idle.
            s.try_lock()
                .map_or(true, |s| now.duration_since(s.last_used) < self.idle)
        });
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
