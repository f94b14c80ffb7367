//! `bonsai images …`: the runtime's image store from the command line, for people debugging a node.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use runtime::pull::{Progress, Puller};
use runtime::registries::RegistriesConfig;
use runtime::store::ContentStore;

use crate::cli::{ImagesArgs, ImagesCommand};

/// Where the server and the CLI keep images.
pub fn store_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("agent/content")
}

/// One bar per blob, drawn only on a terminal.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress for Bars {
    fn layer(&self, digest: &str, done: u64, total: u64) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.entry(digest.to_string()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(total));
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.set_prefix(digest.chars().skip(7).take(12).collect::<String>());
            bar
        });
        bar.set_length(total.max(done));
        bar.set_position(done);
        if done >= total {
            bar.finish();
        }
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1}MB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}kB", b as f64 / (1 << 10) as f64),
        b => format!("{b}B"),
    }
}

pub async fn run(args: ImagesArgs) -> anyhow::Result<()> {
    let root = store_dir(&args.data_dir);
    let store = Arc::new(
        ContentStore::open(&root)
            .with_context(|| format!("cannot open the image store in {}", root.display()))?,
    );
    match args.command {
        ImagesCommand::Pull { reference } => {
            let registries = RegistriesConfig::load(&args.private_registry)?;
            let puller = Puller::new(store, registries);
            let progress = Bars {
                multi: MultiProgress::new(),
                bars: Mutex::new(HashMap::new()),
            };
            let record = puller
                .pull(&reference, &progress)
                .await
                .with_context(|| format!("cannot pull {reference}"))?;
            println!("{} {}", record.name, record.manifest_digest);
        }
        ImagesCommand::Import { files } => {
            for file in files {
                let blocking_store = store.clone();
                let path = file.clone();
                let records =
                    tokio::task::spawn_blocking(move || runtime::import::import(&blocking_store, &path))
                        .await?
                        .with_context(|| format!("cannot import {}", file.display()))?;
                for record in records {
                    println!("{} {}", record.name, record.manifest_digest);
                }
            }
        }
        ImagesCommand::Ls => {
            println!("{:<60} {:<20} {:>10}", "IMAGE", "DIGEST", "SIZE");
            for image in store.images()? {
                let short: String = image.manifest_digest.hex().chars().take(12).collect();
                println!("{:<60} sha256:{short:<13} {:>10}", image.name, human(image.size));
            }
        }
        ImagesCommand::Rm { references } => {
            let known = store.images()?;
            for reference in references {
                let normalised = runtime::image_name(&reference).ok();
                let matching: Vec<_> = known
                    .iter()
                    .filter(|i| {
                        i.name == reference
                            || Some(&i.name) == normalised.as_ref()
                            || i.manifest_digest.to_string() == reference
                    })
                    .collect();
                anyhow::ensure!(!matching.is_empty(), "no image {reference}");
                for image in matching {
                    store.remove_image(&image.name)?;
                    println!("removed {}", image.name);
                }
            }
            let collected = store.collect_garbage(&BTreeSet::new())?;
            println!("freed {} blobs and {} layers", collected.blobs, collected.layers);
        }
    }
    Ok(())
}
