//! Replays the loader fuzz target's corpus (`fuzz/corpus/load_model`) on stable Rust, so that
//! every input that ever found a bug, and the seeds, stay checked in CI without libFuzzer.

use std::path::Path;

#[test]
fn the_loader_fuzz_corpus_loads_or_fails_cleanly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/load_model");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "the corpus holds at least the seed models"
    );
    for file in &files {
        tns_engine::fuzz_check(&std::fs::read(file).unwrap());
    }
    // The seeds are valid models: the check above must have run them through prediction.
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden-system-b-v1.tns");
    assert!(tns_engine::Engine::from_bytes(&golden, &std::fs::read(&golden).unwrap()).is_ok());
}

/// Replays the manifest fuzz target's corpus (`fuzz/corpus/manifest`: manifests mutated as
/// JSON, under the golden file's tensors).
#[test]
fn the_manifest_fuzz_corpus_loads_or_fails_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = std::fs::read(root.join("tests/fixtures/golden-system-b-v1.tns")).unwrap();
    let corpus = root.join("fuzz/corpus/manifest");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus holds at least the seed");
    for file in &files {
        tns_engine::fuzz_manifest_check(&model, &std::fs::read(file).unwrap());
    }
    // The seed is the golden file's own manifest: it must load again under its tensors.
    let seed = std::fs::read_to_string(corpus.join("golden-system-b-v1.json")).unwrap();
    let bytes = tns_format::with_manifest_json(&model, &seed).unwrap();
    assert!(tns_engine::Engine::from_bytes(&corpus, &bytes).is_ok());
}
