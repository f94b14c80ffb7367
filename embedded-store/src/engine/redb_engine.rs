//! redb: copy-on-write B-trees with checksummed commits; a commit with `Durability::Immediate`
//! (the default) is on disk when it returns.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

use super::{Engine, EngineError, EngineKind, EngineTuning, Mutation, Table, Visit};

const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");
const LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");

const FILE_NAME: &str = "state.redb";

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    match table {
        Table::History => HISTORY,
        Table::Log => LOG,
        Table::Meta => META,
    }
}

pub(crate) struct RedbEngine {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbEngine").field("path", &self.path).finish()
    }
}

fn failure(err: impl Into<redb::Error>) -> EngineError {
    let err: redb::Error = err.into();
    let detail = err.to_string();
    match err {
        redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => EngineError::Corrupt {
            engine: EngineKind::Redb,
            detail,
        },
        _ => EngineError::Failed {
            engine: EngineKind::Redb,
            detail,
        },
    }
}

impl RedbEngine {
    pub(crate) fn open(dir: &Path, tuning: EngineTuning, create: bool) -> Result<Self, EngineError> {
        let path = dir.join(FILE_NAME);
        let mut builder = Database::builder();
        builder.set_cache_size(tuning.cache_bytes);
        let db = if create {
            builder.create(&path).map_err(failure)?
        } else {
            if !path.is_file() {
                return Err(EngineError::Corrupt {
                    engine: EngineKind::Redb,
                    detail: format!("{} is missing", path.display()),
                });
            }
            builder.open(&path).map_err(failure)?
        };
        if create {
            // Create the tables up front so that readers never meet a missing table.
            let tx = db.begin_write().map_err(failure)?;
            for table in Table::ALL {
                tx.open_table(definition(table)).map_err(failure)?;
            }
            tx.commit().map_err(failure)?;
        } else {
            // A redb file without the store's tables is some other program's database.
            let tx = db.begin_read().map_err(failure)?;
            for table in Table::ALL {
                tx.open_table(definition(table))
                    .map_err(|e| EngineError::Corrupt {
                        engine: EngineKind::Redb,
                        detail: format!("{}: {e}", path.display()),
                    })?;
            }
        }
        Ok(RedbEngine { db, path })
    }
}

impl Engine for RedbEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Redb
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let tx = self.db.begin_read().map_err(failure)?;
        let t = tx.open_table(definition(table)).map_err(failure)?;
        Ok(t.get(key).map_err(failure)?.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> Result<(), EngineError> {
        if super::is_inverted(start, end) {
            return Ok(());
        }
        let tx = self.db.begin_read().map_err(failure)?;
        let t = tx.open_table(definition(table)).map_err(failure)?;
        let mut range = t.range::<&[u8]>((start, end)).map_err(failure)?;
        loop {
            let item = if reverse { range.next_back() } else { range.next() };
            let Some(item) = item else { return Ok(()) };
            let (k, v) = item.map_err(failure)?;
            if !visit(k.value(), v.value()) {
                return Ok(());
            }
        }
    }

    fn commit(&self, mutations: Vec<Mutation>) -> Result<(), EngineError> {
        let tx = self.db.begin_write().map_err(failure)?;
        {
            let mut history = tx.open_table(HISTORY).map_err(failure)?;
            let mut log = tx.open_table(LOG).map_err(failure)?;
            let mut meta = tx.open_table(META).map_err(failure)?;
            for m in &mutations {
                let (table, key) = match m {
                    Mutation::Put { table, key, .. } | Mutation::Delete { table, key } => (*table, key),
                };
                let t = match table {
                    Table::History => &mut history,
                    Table::Log => &mut log,
                    Table::Meta => &mut meta,
                };
                match m {
                    Mutation::Put { value, .. } => {
                        t.insert(key.as_slice(), value.as_slice()).map_err(failure)?;
                    }
                    Mutation::Delete { .. } => {
                        t.remove(key.as_slice()).map_err(failure)?;
                    }
                }
            }
        }
        // Durability::Immediate is redb's default: commit returns after fsync.
        tx.commit().map_err(failure)
    }

    fn disk_bytes(&self) -> u64 {
        super::tree_bytes(&self.path)
    }
}
