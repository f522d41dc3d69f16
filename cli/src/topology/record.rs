//! What a topology owns on the host: `<state>/topologies/<name>.json`,
//! rewritten atomically (temporary file, fsync, rename) each time an
//! object is created or deleted, so that a failure halfway through
//! `nimbus up` leaves a record `nimbus down` can clean up from.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::desired::Id;

/// Format version of record files.
const VERSION: u32 = 1;

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a record.
    #[error("{path}: not a topology record: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The persisted record of one topology.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format version.
    pub version: u32,
    /// Topology name.
    pub name: String,
    /// The file it was last brought up from.
    pub file: Option<PathBuf>,
    /// Objects it owns (created by it, not yet deleted).
    pub objects: BTreeSet<Id>,
}

/// Directory of all records.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("topologies")
}

/// Path of topology `name`'s record.
pub fn path(state_dir: &Path, name: &str) -> PathBuf {
    dir(state_dir).join(format!("{name}.json"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a record file.
fn read(path: &Path) -> Result<Option<Record>, RecordError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let r: Record = serde_json::from_str(&text).map_err(|e| RecordError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if r.version != VERSION {
        return Err(RecordError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("version {} (this nimbus reads {VERSION})", r.version),
        });
    }
    Ok(Some(r))
}

/// Every record in the state directory except `except`'s: who owns what.
pub fn others(state_dir: &Path, except: &str) -> Result<Vec<Record>, RecordError> {
    let d = dir(state_dir);
    let entries = match fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&d)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let p = entry.map_err(io(&d))?.path();
        if p.extension().is_some_and(|e| e == "json") {
            if let Some(r) = read(&p)? {
                if r.name != except {
                    out.push(r);
                }
            }
        }
    }
    Ok(out)
}

/// A topology's record, shared by the threads applying its changes.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    record: Mutex<Record>,
}

impl Store {
    /// Opens (or starts) the record of topology `name`.
    pub fn open(state_dir: &Path, name: &str) -> Result<Self, RecordError> {
        let path = path(state_dir, name);
        let record = read(&path)?.unwrap_or_else(|| Record {
            version: VERSION,
            name: name.to_string(),
            file: None,
            objects: BTreeSet::new(),
        });
        Ok(Store {
            path,
            record: Mutex::new(record),
        })
    }

    /// The record's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the record.
    pub fn snapshot(&self) -> Record {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        // A thread that panicked while holding the lock left a whole
        // record behind (writes happen under the lock, after the change).
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the topology owns `id` (before it is created, so a
    /// crash during the creation still leaves it to `down`).
    pub fn add(&self, id: &Id) -> Result<(), RecordError> {
        let mut r = self.lock();
        if r.objects.insert(id.clone()) {
            write(&self.path, &r)?;
        }
        Ok(())
    }

    /// Records that `id` is gone.
    pub fn remove(&self, id: &Id) -> Result<(), RecordError> {
        let mut r = self.lock();
        if r.objects.remove(id) {
            write(&self.path, &r)?;
        }
        Ok(())
    }

    /// Remembers the file the topology came from.
    pub fn set_file(&self, file: &Path) -> Result<(), RecordError> {
        let mut r = self.lock();
        let abs = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        if r.file.as_deref() != Some(abs.as_path()) {
            r.file = Some(abs);
            if !r.objects.is_empty() {
                write(&self.path, &r)?;
            }
        }
        Ok(())
    }

    /// Deletes the record file once the topology owns nothing.
    pub fn delete_if_empty(&self) -> Result<bool, RecordError> {
        let r = self.lock();
        if !r.objects.is_empty() {
            return Ok(false);
        }
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(io(&self.path)(e)),
        }
    }
}

/// Writes `r` to `path` atomically.
fn write(path: &Path, r: &Record) -> Result<(), RecordError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(r).map_err(|e| RecordError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.write_all(b"\n").map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    // The rename itself must survive a crash too.
    if let Ok(d) = fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::desired::Kind;

    #[test]
    fn records_survive_reopen_and_vanish_when_empty() {
        let dir = std::env::temp_dir().join(format!("nimbus-record-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let s = Store::open(&dir, "rg").expect("open");
        let id = Id::new(Kind::Vnet, "rg-app");
        s.add(&id).expect("add");
        let again = Store::open(&dir, "rg").expect("reopen");
        assert!(again.snapshot().objects.contains(&id));
        assert_eq!(others(&dir, "x").expect("others").len(), 1);
        assert!(others(&dir, "rg").expect("others").is_empty());
        again.remove(&id).expect("remove");
        assert!(again.delete_if_empty().expect("delete"));
        assert!(!path(&dir, "rg").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
