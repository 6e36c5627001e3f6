//! Buffers that start on a cache line.
//!
//! A heap `Vec<f32>` starts wherever the allocator puts it (16-byte aligned here), so a 32-byte
//! vector load from it crosses a 64-byte cache line every other time whenever the buffer
//! starts 16 or 48 bytes into a line; those loads cost about twice as much. Which case a
//! process got depended on the allocation order, and the compact GRU ran at 1.2 or 1.45 µs
//! from one run to the next (`results/zoo/ab-aligned.md`). Weights and scratch live in
//! [`Aligned`] buffers instead, so every run gets the fast case.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Bytes per cache line, the buffers' alignment.
const LINE: usize = 64;

/// One cache line of storage.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; LINE]);

/// Element types an [`Aligned`] buffer may hold.
///
/// # Safety
/// Every bit pattern, all zeros included, must be a valid value, with no padding and an
/// alignment that divides 64.
pub(crate) unsafe trait Plain: Copy + Default + fmt::Debug {}

// SAFETY: plain numbers: any bits are a value, no padding, alignment 2 or 4.
unsafe impl Plain for f32 {}
// SAFETY: as above.
unsafe impl Plain for i16 {}
// SAFETY: as above.
unsafe impl Plain for i32 {}

/// A fixed-length, zero-initialized buffer of `T` whose first element starts a cache line.
/// It derefs to a slice; its length is set when it is made.
#[derive(Clone)]
pub(crate) struct Aligned<T: Plain> {
    lines: Vec<Line>,
    len: usize,
    element: std::marker::PhantomData<T>,
}

impl<T: Plain> Aligned<T> {
    /// `len` zeros.
    pub(crate) fn zeros(len: usize) -> Self {
        let bytes = len * size_of::<T>();
        Self {
            lines: vec![Line([0; LINE]); bytes.div_ceil(LINE)],
            len,
            element: std::marker::PhantomData,
        }
    }

    /// A copy of `values`.
    pub(crate) fn from_slice(values: &[T]) -> Self {
        let mut buffer = Self::zeros(values.len());
        buffer.copy_from_slice(values);
        buffer
    }

    /// Bytes held on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.lines.capacity() * LINE
    }
}

impl<T: Plain> Default for Aligned<T> {
    fn default() -> Self {
        Self::zeros(0)
    }
}

impl<T: Plain> Deref for Aligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `lines` holds at least `len · size_of::<T>()` initialized bytes (see
        // `zeros`), its start is 64-byte aligned (enough for any `Plain` type) and every bit
        // pattern is a valid `T` (the `Plain` contract). The slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Plain> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; the slice borrows `self` mutably, so it is the only one.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

impl<'a, T: Plain> IntoIterator for &'a Aligned<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Plain> FromIterator<T> for Aligned<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let values: Vec<T> = values.into_iter().collect();
        Self::from_slice(&values)
    }
}

impl<T: Plain> From<Vec<T>> for Aligned<T> {
    fn from(values: Vec<T>) -> Self {
        Self::from_slice(&values)
    }
}

impl<T: Plain> fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Aligned;

    #[test]
    fn buffers_start_on_a_cache_line_and_keep_their_values() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let f = Aligned::from_slice(&values);
            assert_eq!(f.as_ptr() as usize % 64, 0);
            assert_eq!(&f[..], &values[..]);
            let mut codes = Aligned::<i16>::zeros(len);
            assert_eq!(codes.as_ptr() as usize % 64, 0);
            assert!(codes.iter().all(|&c| c == 0));
            codes
                .iter_mut()
                .enumerate()
                .for_each(|(i, c)| *c = i as i16);
            assert_eq!(
                codes.iter().map(|&c| c as usize).sum::<usize>(),
                (0..len).sum::<usize>()
            );
            assert!(codes.heap_bytes() >= 2 * len && f.heap_bytes() >= 4 * len);
        }
    }
}
