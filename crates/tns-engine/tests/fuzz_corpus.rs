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
