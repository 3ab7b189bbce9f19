//! The cached `base` image tar (`warren image build-base`'s), for tests that need a real
//! Debian userland.
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use warren_cli::base_image::{ensure_base_tar, BuildOptions};

/// The cached base tar, built by the first test that needs it (the cache's lock makes the other
/// test binaries running at once wait for that build instead of repeating it).
pub fn base_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let started = Instant::now();
        let base = ensure_base_tar(&BuildOptions::default()).expect("building the base tar");
        let size = std::fs::metadata(&base.path).expect("tar").len();
        eprintln!(
            "base tar {} ({:.1} MB): {} in {:.1} s",
            base.path.display(),
            size as f64 / 1e6,
            if base.built { "built" } else { "cached" },
            started.elapsed().as_secs_f64()
        );
        base.path
    })
    .clone()
}
