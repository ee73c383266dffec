//! Plugin components built from `plugins/` for the tests: where to find them and how to publish one.

use std::path::{Path, PathBuf};

pub fn built(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GROK2API_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(format!("{name}.wasm"));
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("GROK2API_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!(
            "{} is missing: run plugins/build.sh (GROK2API_REQUIRE_ALL=1)",
            path.display()
        );
    }
    eprintln!("SKIP: {} not built (run plugins/build.sh)", path.display());
    None
}

/// Publishes a plugin the recommended way: a temp file in the same directory, then a rename.
pub fn install(src: &Path, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.wasm.part"));
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}
