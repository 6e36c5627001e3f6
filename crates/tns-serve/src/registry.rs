//! The served models: each name holds its current compiled engine behind an atomic pointer,
//! so a reload loads and validates the new file off to the side and then swaps it in;
//! requests in flight finish on the engine they started with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tns_engine::Engine;

use crate::batcher::{Batcher, MicroBatching};
use crate::error::ApiError;

/// One loaded version of a model.
#[derive(Debug)]
pub struct Loaded {
    /// The compiled model.
    pub engine: Arc<Engine>,
    /// 1 for the file loaded at start, +1 per successful reload.
    pub version: u64,
    /// SHA-256 of the tensors (from the manifest, verified on load).
    pub sha256: String,
    /// When it was loaded (seconds since the Unix epoch).
    pub loaded_at: u64,
    /// Modification time and length of the file when it was read, for change detection.
    pub(crate) stamp: Option<(SystemTime, u64)>,
    /// The micro-batching queue of this version (when the server batches).
    pub(crate) batcher: Option<Batcher>,
}

/// A served model name and the file it comes from.
#[derive(Debug)]
pub struct Slot {
    /// The name in URLs.
    pub name: String,
    /// The model file.
    pub path: PathBuf,
    current: ArcSwap<Loaded>,
    /// Serializes reloads of this model (a reload reads the version it replaces).
    reload_lock: tokio::sync::Mutex<()>,
    /// How every version of it batches predictions.
    batching: Option<MicroBatching>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn load(path: &Path, version: u64, batching: Option<MicroBatching>) -> Result<Loaded, String> {
    let before = stamp(path);
    let engine = Arc::new(Engine::load(path).map_err(|e| e.to_string())?);
    let batcher = batching
        .map(|config| Batcher::start(engine.clone(), config))
        .transpose()
        .map_err(|e| format!("cannot start the batching thread: {e}"))?;
    Ok(Loaded {
        sha256: engine.manifest().sha256(),
        engine,
        batcher,
        version,
        loaded_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        stamp: before,
    })
}

impl Slot {
    /// The version serving now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Loads the file again, validates it by compiling it, and swaps it in. On any error the
    /// current version keeps serving and the error says why.
    pub async fn reload(&self) -> Result<(Arc<Loaded>, u64), ApiError> {
        let _guard = self.reload_lock.lock().await;
        let previous = self.current();
        let path = self.path.clone();
        let version = previous.version + 1;
        let batching = self.batching;
        let loaded = tokio::task::spawn_blocking(move || load(&path, version, batching))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|reason| ApiError::ReloadRejected {
                model: self.name.clone(),
                version: previous.version,
                reason,
            })?;
        let loaded = Arc::new(loaded);
        self.current.store(loaded.clone());
        Ok((loaded, previous.version))
    }

    /// Whether the file changed since the current version was read.
    pub fn file_changed(&self) -> bool {
        let now = stamp(&self.path);
        now.is_some() && now != self.current().stamp
    }
}

/// All served models by name.
#[derive(Debug)]
pub struct Registry {
    slots: BTreeMap<String, Arc<Slot>>,
}

impl Registry {
    /// Loads every `(name, path)`, each version with its micro-batching queue when
    /// `batching` is set; any failure aborts start-up with the file's error.
    pub fn load(
        models: &[(String, PathBuf)],
        batching: Option<MicroBatching>,
    ) -> Result<Self, String> {
        let mut slots = BTreeMap::new();
        for (name, path) in models {
            if slots.contains_key(name) {
                return Err(format!(
                    "model name {name:?} is given twice; name models with NAME=PATH"
                ));
            }
            let loaded = load(path, 1, batching).map_err(|e| format!("{}: {e}", path.display()))?;
            slots.insert(
                name.clone(),
                Arc::new(Slot {
                    name: name.clone(),
                    path: path.clone(),
                    current: ArcSwap::from_pointee(loaded),
                    reload_lock: tokio::sync::Mutex::new(()),
                    batching,
                }),
            );
        }
        Ok(Self { slots })
    }

    /// The model of that name.
    pub fn get(&self, name: &str) -> Result<&Arc<Slot>, ApiError> {
        self.slots
            .get(name)
            .ok_or_else(|| ApiError::UnknownModel(name.to_string()))
    }

    /// Every model, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.slots.values()
    }
}
