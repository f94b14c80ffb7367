//! Helpers shared by the store's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::Path;
use std::time::Duration;

use embedded_store::{CompactionPolicy, EmbeddedStore, EngineKind, StoreOptions};

pub const ENGINES: [EngineKind; 2] = [EngineKind::Redb, EngineKind::Sled];

pub fn options(engine: EngineKind) -> StoreOptions {
    StoreOptions {
        engine: Some(engine),
        cache_bytes: 4 << 20,
        // Tests compact explicitly; keep the timer out of their way.
        compaction: CompactionPolicy {
            interval: Duration::from_secs(3600),
            retain_revisions: 1000,
        },
    }
}

pub fn open(dir: &Path, engine: EngineKind) -> EmbeddedStore {
    EmbeddedStore::open(dir, options(engine)).unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
