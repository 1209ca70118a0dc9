//! `crds/` must hold exactly what the Rust types generate.

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = std::path::Path::new("crds");
    let rendered = stoker::cli::crds::render().expect("CRDs render");
    let mut committed: Vec<String> = std::fs::read_dir(dir)
        .expect("crds/ exists")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    let mut expected: Vec<String> = rendered.iter().map(|(name, _)| name.clone()).collect();
    expected.sort();
    assert_eq!(
        committed, expected,
        "crds/ has other files than the types generate: run `cargo run -- crds --output-dir crds`"
    );
    for (name, yaml) in rendered {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            on_disk == yaml,
            "crds/{name} is out of date: run `cargo run -- crds --output-dir crds` and commit the result"
        );
    }
}
