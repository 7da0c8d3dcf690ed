//! Producer-id allocation that never hands out the same id twice, across restarts too: ids are
//! reserved in blocks whose end is persisted (fsynced) before any id of the block is used.

use std::path::PathBuf;

use parking_lot::Mutex;
use strom_storage::StorageError;

const BLOCK: i64 = 1000;

pub struct ProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the persisted block).
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(path: PathBuf) -> Result<Self, StorageError> {
        let start = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        Ok(Self {
            path,
            state: Mutex::new((start, start)),
        })
    }

    /// A fresh producer id.
    pub fn allocate(&self) -> Result<i64, StorageError> {
        let mut state = self.state.lock();
        if state.0 >= state.1 {
            let end = state.0 + BLOCK;
            self.persist(end)?;
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }

    fn persist(&self, end: i64) -> Result<(), StorageError> {
        strom_storage::write_atomic(&self.path, format!("{end}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("producer-ids");
        let ids = ProducerIds::open(path.clone()).expect("open");
        let a: Vec<i64> = (0..5).map(|_| ids.allocate().expect("id")).collect();
        assert_eq!(a, vec![0, 1, 2, 3, 4]);
        drop(ids);
        let ids = ProducerIds::open(path).expect("reopen");
        assert!(ids.allocate().expect("id") > 4);
    }
}
