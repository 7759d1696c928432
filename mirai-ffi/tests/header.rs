//! `include/mirai.h` must be exactly what cbindgen generates from this crate. Regenerate with
//! `BLESS=1 cargo test -p mirai-ffi --test header`.

use std::path::Path;

#[test]
fn header_is_current() {
    let crate_dir = env!("CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(crate_dir).join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = Path::new(crate_dir).join("../include/mirai.h");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/mirai.h is stale: run `BLESS=1 cargo test -p mirai-ffi --test header`"
    );
}

#[test]
fn header_version_matches_the_crate() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/mirai.h")).unwrap();
    let line = format!("#define MIRAI_VERSION \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(header.contains(&line), "cbindgen.toml's after_includes must say {line}");
}
