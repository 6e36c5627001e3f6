//! The single-sample path and streaming sessions allocate nothing: a counting global
//! allocator sees zero allocations on the predicting thread across many predictions of every
//! model kind. (Only this thread counts: rayon's workers, which calibrated the models, may
//! still be tidying up in the background.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use common::{Shape, data, fitted};
use tns_engine::{Engine, Predictor, Session};
use tns_model::ModelKind;

struct Counting;

thread_local! {
    // `const`-initialized: reading it never allocates, so the allocator may use it.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down has no slot left; its allocations do not matter.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn predict_and_session_push_do_not_allocate() {
    let (splits, dt) = data(Shape::Compact, 3000);
    for kind in ModelKind::ALL {
        let model = fitted(kind, Shape::Compact, &splits, dt);
        let mut variants = vec![(model.manifest.clone(), model.tensors.clone())];
        if model.manifest.config.network.is_some() {
            variants.push(common::int8(&model.manifest, &model.tensors));
        }
        for (manifest, tensors) in variants {
            let engine = Arc::new(Engine::new(manifest, &tensors).unwrap());
            let mut predictor = Predictor::new(engine.clone());
            let mut session = Session::new(engine.clone());
            let per = engine.input_len();
            let windows = splits.test.inputs();
            let rows = windows.len() / 4;
            let before = allocations();
            let mut checksum = 0.0;
            for i in 0..500 {
                let j = i % (windows.len() / per);
                let w = &windows[j * per..(j + 1) * per];
                checksum += predictor.predict(w).unwrap().values()[0];
                if let Some(p) = session
                    .push(&windows[(i % rows) * 4..(i % rows + 1) * 4])
                    .unwrap()
                {
                    checksum += p.values()[0];
                }
            }
            let after = allocations();
            assert!(checksum.is_finite());
            assert_eq!(
                after - before,
                0,
                "{kind:?}: {} allocations in 500 predictions",
                after - before
            );
            // The counter does count: building a predictor allocates.
            let _ = Predictor::new(engine);
            assert!(allocations() > after);
        }
    }
}
