//! The numeric kernels of the plan: matrix–vector products, the lane-blocked product of
//! the batch path (8 or 16 sequences), and fast `exp`/`sigmoid`/`tanh`, each in an AVX2+FMA build and a
//! portable one. The instruction set is chosen once, when the plan is built.
//!
//! Both builds run the same generic code ([`Kernels`] picks the primitives); the AVX2 entry
//! points are `#[target_feature]` functions that the generic code is inlined into, so the
//! element-wise loops are vectorized with 256-bit registers and FMA there.

use crate::int8::BLOCK;

/// The most sequences that advance together in the batch path: two 256-bit registers of
/// f32, so that each weight broadcast in the lane-blocked product feeds two multiply-adds.
/// Blocks of at most [`VECTOR`] sequences run on one register instead.
pub const LANES: usize = 16;

/// f32 values in one 256-bit register.
pub(crate) const VECTOR: usize = 8;

/// The instruction set the plan's kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX2 and FMA, detected at run time.
    Avx2Fma,
    /// Plain Rust that any target compiles (vectorized as far as the baseline allows).
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Self::Avx2Fma;
        }
        Self::Portable
    }

    /// Whether the kernels run their long products and element-wise passes on 512-bit
    /// registers: the AVX2 kernels do where the CPU has AVX-512F.
    pub fn uses_avx512(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Self::Avx2Fma {
            return std::is_x86_feature_detected!("avx512f");
        }
        false
    }

    /// A short name for reports (it names AVX-512F where [`Isa::uses_avx512`]).
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx2Fma if self.uses_avx512() => "avx2+fma+avx512f",
            Self::Avx2Fma => "avx2+fma",
            Self::Portable => "portable",
        }
    }
}

/// The primitives the generic network code is written against.
pub(crate) trait Kernels {
    /// `a · b + c`, fused where the hardware has it.
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
    /// `ln(1 + t)` for `t ∈ [0, 1]` (softplus's tail).
    fn ln_1p_unit(t: f32) -> f32;
    /// `values[i] ← e^{values[i]}` with [`exp`]'s operations (so its bits), for a slice long
    /// enough that a kernel may pick wider registers than the rest of the plan uses.
    fn exp_slice(values: &mut [f32]);
    /// Slices from this length are worth a call to the `*_slice` kernels' wider registers;
    /// shorter ones are better left to inline loops.
    const SLICE_FROM: usize;
    /// `values[i] ← σ(values[i])` with [`sigmoid`]'s operations (as [`Kernels::exp_slice`]).
    fn sigmoid_slice(values: &mut [f32]);
    /// `values[i] ← tanh(values[i])` with [`tanh`]'s operations (as [`Kernels::exp_slice`]).
    fn tanh_slice(values: &mut [f32]);
    /// `y[r] = bias[r] + Σ_j cols[j·rows + r] · x[j]` (weights packed column by column).
    fn gemv(cols: &[f32], x: &[f32], bias: &[f32], y: &mut [f32]);
    /// [`Kernels::gemv`] for each of `T` rows of inputs at once: `xs` is `[T, inputs]`,
    /// `ys` is `[T, bias.len()]`. Each output has the bits `gemv` gives it (the same
    /// multiply-adds in the same order); a kernel may share a weight load among tokens.
    fn gemv_rows(cols: &[f32], xs: &[f32], bias: &[f32], ys: &mut [f32]);
    /// `ys[r][l] += Σ_j w[r·n + j] · xs[j][l]` for `L` sequences side by side (`L` is
    /// [`VECTOR`] or [`LANES`]; weights row-major, `n = xs.len() / L` columns). Each output
    /// adds its products in the order of `j`, whatever `L`.
    fn gemm_lanes_acc<const L: usize>(w: &[f32], xs: &[f32], ys: &mut [f32]);
    /// One sequence's GRU recurrence, where the kernels have a fused form for its size:
    /// from the state `h` (`[H]`), for each step's input gates in `gates_in` (`[steps, 3H]`,
    /// `W_ih x + b_ih`, laid out `[r | z | n]`), `gh = b_hh + W_hh h` with [`Kernels::gemv`]'s
    /// bits (`cols` and `bias` packed as for it), then [`gru_unit`] for every unit. Returns
    /// `false` and leaves `h` alone where there is no fused form (by default: the portable
    /// kernels have none): the caller runs its own loop, with the same bits.
    #[inline(always)]
    fn gru_sequence(_cols: &[f32], _bias: &[f32], _gates_in: &[f32], _h: &mut [f32]) -> bool {
        false
    }
    /// [`Kernels::gru_sequence`] for an LSTM: gates `[i | f | g | o]` (`[steps, 4H]`), the
    /// state `(h, c)`, [`lstm_unit`] for every unit, and every step's `h` written to
    /// `states` (`[steps, H]`) unless it is empty.
    #[inline(always)]
    fn lstm_sequence(
        _cols: &[f32],
        _bias: &[f32],
        _gates_in: &[f32],
        _state: (&mut [f32], &mut [f32]),
        _states: &mut [f32],
    ) -> bool {
        false
    }
    /// INT8 product: `acc[b·8 + o] = Σ_p Σ_k packed[((b·P + p)·8 + o)·2 + k] · codes[2p + k]`
    /// with `P = codes.len() / 2` input pairs (see [`crate::int8::QDense`] for the
    /// packing). Exact.
    fn qgemv(packed: &[i16], codes: &[i16], acc: &mut [i32]);
}

/// Plain Rust primitives.
pub(crate) struct Portable;

impl Kernels for Portable {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }

    /// The C library's: the portable kernels are the bit-for-bit reference the golden files
    /// were written with.
    #[inline(always)]
    fn ln_1p_unit(t: f32) -> f32 {
        t.ln_1p()
    }

    /// No wider registers to call out to.
    const SLICE_FROM: usize = usize::MAX;

    #[inline(always)]
    fn exp_slice(values: &mut [f32]) {
        exp_blocks::<Self>(values);
    }

    #[inline(always)]
    fn sigmoid_slice(values: &mut [f32]) {
        sigmoids::<Self>(values);
    }

    #[inline(always)]
    fn tanh_slice(values: &mut [f32]) {
        tanhs::<Self>(values);
    }

    #[inline(always)]
    fn gemv(cols: &[f32], x: &[f32], bias: &[f32], y: &mut [f32]) {
        let rows = y.len();
        y.copy_from_slice(bias);
        for (col, &xj) in cols.chunks_exact(rows).zip(x) {
            for (yr, &w) in y.iter_mut().zip(col) {
                *yr += w * xj;
            }
        }
    }

    #[inline(always)]
    fn gemv_rows(cols: &[f32], xs: &[f32], bias: &[f32], ys: &mut [f32]) {
        let tokens = ys.len() / bias.len().max(1);
        let inputs = xs.len() / tokens.max(1);
        for (x, y) in xs.chunks_exact(inputs).zip(ys.chunks_exact_mut(bias.len())) {
            Self::gemv(cols, x, bias, y);
        }
    }

    #[inline(always)]
    fn qgemv(packed: &[i16], codes: &[i16], acc: &mut [i32]) {
        let pairs = codes.len() / 2;
        for (b, block) in acc.chunks_exact_mut(BLOCK).enumerate() {
            block.fill(0);
            let weights = &packed[b * pairs * 2 * BLOCK..(b + 1) * pairs * 2 * BLOCK];
            for (c, w) in codes.chunks_exact(2).zip(weights.chunks_exact(2 * BLOCK)) {
                let (lo, hi) = (i32::from(c[0]), i32::from(c[1]));
                for (a, wo) in block.iter_mut().zip(w.chunks_exact(2)) {
                    *a += i32::from(wo[0]) * lo + i32::from(wo[1]) * hi;
                }
            }
        }
    }

    #[inline(always)]
    fn gemm_lanes_acc<const L: usize>(w: &[f32], xs: &[f32], ys: &mut [f32]) {
        let n = xs.len() / L;
        for (row, y) in w.chunks_exact(n).zip(ys.chunks_exact_mut(L)) {
            for (&wj, x) in row.iter().zip(xs.chunks_exact(L)) {
                for (yl, &xl) in y.iter_mut().zip(x) {
                    *yl += wj * xl;
                }
            }
        }
    }
}

/// AVX2 + FMA primitives. Only reachable through the `#[target_feature]` entry points below,
/// which are only called when [`Isa::detect`] found both features.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Avx2, BLOCK, Kernels, LANES, VECTOR, gru_unit, lstm_unit};
    use std::arch::x86_64::*;

    /// `N` registers (8·N rows) of `y = b + W x`, kept in registers across all columns.
    #[inline(always)]
    unsafe fn gemv_block<const N: usize>(
        cols: &[f32],
        x: &[f32],
        bias: &[f32],
        y: &mut [f32],
        r: usize,
    ) {
        let rows = y.len();
        // SAFETY (whole body): the caller guarantees r + 8·N ≤ rows = y.len() = bias.len()
        // and cols.len() ≥ rows · x.len(), so every load and store below is in bounds.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); N];
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(bias.as_ptr().add(r + 8 * k));
            }
            for (j, &xj) in x.iter().enumerate() {
                let xv = _mm256_set1_ps(xj);
                let col = cols.as_ptr().add(j * rows + r);
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(col.add(8 * k)), xv, *a);
                }
            }
            for (k, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(y.as_mut_ptr().add(r + 8 * k), *a);
            }
        }
    }

    /// The first `m` of a 512-bit register's 16 lanes (`m` from 1 to 16).
    #[inline(always)]
    fn low_lanes(m: usize) -> __mmask16 {
        if m >= 16 { u16::MAX } else { (1u16 << m) - 1 }
    }

    /// Rows from which [`Kernels::gemv`] calls out to [`gemv_avx512`]: the 96 of a GRU(·→32)'s
    /// gates take 6 registers there, 12 here, whose 384 multiply-adds a step two pipes
    /// take 192 cycles for, against the 128 of a 32-deep chain of 4-cycle multiply-adds.
    const GEMV_WIDE_FROM: usize = 64;

    /// [`Kernels::gemv`] on 512-bit registers (see [`GEMV_WIDE_FROM`]): one token of
    /// [`gemv_rows_block512`], in blocks of 6 registers, then one block of the rest, its last
    /// rows masked.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn gemv_avx512(cols: &[f32], x: &[f32], bias: &[f32], y: &mut [f32]) {
        let rows = y.len();
        let mut r = 0;
        // SAFETY: each block's rows stay below `rows` (loop conditions, and the tail's mask
        // keeps `rows − r` lanes); the caller checked the columns' length.
        unsafe {
            while r + 96 <= rows {
                gemv_rows_block512::<1, 6>(cols, x, bias, y, (0, r, u16::MAX));
                r += 96;
            }
            let count = (rows - r).div_ceil(16);
            let at = (0, r, low_lanes(rows - r - 16 * count.saturating_sub(1)));
            match count {
                0 => {}
                1 => gemv_rows_block512::<1, 1>(cols, x, bias, y, at),
                2 => gemv_rows_block512::<1, 2>(cols, x, bias, y, at),
                3 => gemv_rows_block512::<1, 3>(cols, x, bias, y, at),
                4 => gemv_rows_block512::<1, 4>(cols, x, bias, y, at),
                5 => gemv_rows_block512::<1, 5>(cols, x, bias, y, at),
                _ => gemv_rows_block512::<1, 6>(cols, x, bias, y, at),
            }
        }
    }

    /// Tokens `t..t + T` of `ys = b + W xs` (`[token, row]`) on 512-bit registers, rows
    /// `r..r + 16·N` whose last register keeps the lanes of `mask`: [`gemv_rows_block`] with
    /// sixteen outputs an instruction, the same multiply-adds per output in the same order
    /// (so, with one token, [`gemv_block`]'s).
    #[inline(always)]
    unsafe fn gemv_rows_block512<const T: usize, const N: usize>(
        cols: &[f32],
        xs: &[f32],
        bias: &[f32],
        ys: &mut [f32],
        (t, r, mask): (usize, usize, __mmask16),
    ) {
        let rows = bias.len();
        let inputs = xs.len() / (ys.len() / rows);
        let lanes = |k: usize| if k + 1 == N { mask } else { u16::MAX };
        // SAFETY (whole body): the caller guarantees t + T ≤ tokens, that the rows the masks
        // keep lie below `rows`, and cols.len() ≥ rows · inputs; masked-off lanes are neither
        // read nor written.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); N]; T];
            for token in acc.iter_mut() {
                for (k, a) in token.iter_mut().enumerate() {
                    *a = _mm512_maskz_loadu_ps(lanes(k), bias.as_ptr().add(r + 16 * k));
                }
            }
            for j in 0..inputs {
                let col = cols.as_ptr().add(j * rows + r);
                let mut w = [_mm512_setzero_ps(); N];
                for (k, wk) in w.iter_mut().enumerate() {
                    *wk = _mm512_maskz_loadu_ps(lanes(k), col.add(16 * k));
                }
                for (i, token) in acc.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*xs.get_unchecked((t + i) * inputs + j));
                    for (a, &wk) in token.iter_mut().zip(&w) {
                        *a = _mm512_fmadd_ps(wk, xv, *a);
                    }
                }
            }
            for (i, token) in acc.iter().enumerate() {
                for (k, a) in token.iter().enumerate() {
                    let at = ys.as_mut_ptr().add((t + i) * rows + r + 16 * k);
                    _mm512_mask_storeu_ps(at, lanes(k), *a);
                }
            }
        }
    }

    /// Tokens `t..t + T` of every row on 512-bit registers: blocks of 32 rows (two
    /// registers, `2T` chains of multiply-adds), the last one masked.
    #[inline(always)]
    unsafe fn gemv_rows_tokens512<const T: usize>(
        cols: &[f32],
        xs: &[f32],
        bias: &[f32],
        ys: &mut [f32],
        t: usize,
    ) {
        let rows = bias.len();
        let mut r = 0;
        // SAFETY: the loop condition and the tail's mask keep each block within the rows;
        // the caller guarantees the tokens and the columns.
        unsafe {
            while r + 32 <= rows {
                gemv_rows_block512::<T, 2>(cols, xs, bias, ys, (t, r, u16::MAX));
                r += 32;
            }
            let left = rows - r;
            if left > 16 {
                gemv_rows_block512::<T, 2>(cols, xs, bias, ys, (t, r, low_lanes(left - 16)));
            } else if left > 0 {
                gemv_rows_block512::<T, 1>(cols, xs, bias, ys, (t, r, low_lanes(left)));
            }
        }
    }

    /// [`Kernels::gemv_rows`] on 512-bit registers (AVX-512 has 32 of them: eight tokens of
    /// two registers each stay in registers): blocks of 8, 4, 2 and 1 tokens.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn gemv_rows_avx512(cols: &[f32], xs: &[f32], bias: &[f32], ys: &mut [f32]) {
        let tokens = ys.len() / bias.len();
        let mut t = 0;
        // SAFETY: the loop conditions keep each block of tokens below `tokens`; the caller
        // checked the rows and columns.
        unsafe {
            while t + 8 <= tokens {
                gemv_rows_tokens512::<8>(cols, xs, bias, ys, t);
                t += 8;
            }
            if t + 4 <= tokens {
                gemv_rows_tokens512::<4>(cols, xs, bias, ys, t);
                t += 4;
            }
            if t + 2 <= tokens {
                gemv_rows_tokens512::<2>(cols, xs, bias, ys, t);
                t += 2;
            }
            if t < tokens {
                gemv_rows_tokens512::<1>(cols, xs, bias, ys, t);
            }
        }
    }

    /// The last `m < 8` rows of `y = b + W x` in one masked register, so that narrow outputs
    /// (a head with 4 targets) accumulate in a register instead of through memory.
    #[inline(always)]
    unsafe fn gemv_tail(cols: &[f32], x: &[f32], bias: &[f32], y: &mut [f32], r: usize) {
        let rows = y.len();
        let m = rows - r;
        // SAFETY: masked-off lanes are neither read nor written, and the m active lanes
        // lie within rows r..rows of `bias`, `y` and every column of `cols`.
        unsafe {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(m as i32), lane);
            let mut acc = _mm256_maskload_ps(bias.as_ptr().add(r), mask);
            for (j, &xj) in x.iter().enumerate() {
                let w = _mm256_maskload_ps(cols.as_ptr().add(j * rows + r), mask);
                acc = _mm256_fmadd_ps(w, _mm256_set1_ps(xj), acc);
            }
            _mm256_maskstore_ps(y.as_mut_ptr().add(r), mask, acc);
        }
    }

    /// Tokens `t..t + T` of `ys = b + W xs` (`[token, row]`), rows `r..r + 8·N`: `T·N`
    /// accumulators, and each column's `N` weight loads serve all `T` tokens (a
    /// single-token product loads a weight per multiply-add). The same multiply-adds per
    /// output, in the same order, as [`gemv_block`].
    #[inline(always)]
    unsafe fn gemv_rows_block<const T: usize, const N: usize>(
        cols: &[f32],
        xs: &[f32],
        bias: &[f32],
        ys: &mut [f32],
        (t, r): (usize, usize),
    ) {
        let rows = bias.len();
        let inputs = xs.len() / (ys.len() / rows);
        // SAFETY (whole body): the caller guarantees t + T ≤ tokens, r + 8·N ≤ rows, and
        // cols.len() ≥ rows · inputs, so every load and store below is in bounds.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); N]; T];
            for token in acc.iter_mut() {
                for (k, a) in token.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(bias.as_ptr().add(r + 8 * k));
                }
            }
            for j in 0..inputs {
                let col = cols.as_ptr().add(j * rows + r);
                let mut w = [_mm256_setzero_ps(); N];
                for (k, wk) in w.iter_mut().enumerate() {
                    *wk = _mm256_loadu_ps(col.add(8 * k));
                }
                for (i, token) in acc.iter_mut().enumerate() {
                    let xv = _mm256_set1_ps(*xs.get_unchecked((t + i) * inputs + j));
                    for (a, &wk) in token.iter_mut().zip(&w) {
                        *a = _mm256_fmadd_ps(wk, xv, *a);
                    }
                }
            }
            for (i, token) in acc.iter().enumerate() {
                for (k, a) in token.iter().enumerate() {
                    _mm256_storeu_ps(ys.as_mut_ptr().add((t + i) * rows + r + 8 * k), *a);
                }
            }
        }
    }

    /// Tokens `t..t + T`, the last `rows − r < 8` rows, masked as in [`gemv_tail`].
    #[inline(always)]
    unsafe fn gemv_rows_tail<const T: usize>(
        cols: &[f32],
        xs: &[f32],
        bias: &[f32],
        ys: &mut [f32],
        (t, r): (usize, usize),
    ) {
        let rows = bias.len();
        let inputs = xs.len() / (ys.len() / rows);
        // SAFETY: masked-off lanes are neither read nor written; the active lanes lie within
        // rows r..rows, and the caller guarantees t + T ≤ tokens.
        unsafe {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((rows - r) as i32), lane);
            let mut acc = [_mm256_maskload_ps(bias.as_ptr().add(r), mask); T];
            for j in 0..inputs {
                let w = _mm256_maskload_ps(cols.as_ptr().add(j * rows + r), mask);
                for (i, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_set1_ps(*xs.get_unchecked((t + i) * inputs + j));
                    *a = _mm256_fmadd_ps(w, xv, *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_maskstore_ps(ys.as_mut_ptr().add((t + i) * rows + r), mask, *a);
            }
        }
    }

    /// Tokens `t..t + T` of every row: blocks of 24 rows, then 16, then 8, then the masked
    /// tail. Thirty-two rows go as 16 + 16, not 24 + 8: a block of 8 rows has `T` chains of
    /// multiply-adds, too few at `T` ≤ 4 to cover their latency, where 16 rows have `2T`.
    #[inline(always)]
    unsafe fn gemv_rows_tokens<const T: usize>(
        cols: &[f32],
        xs: &[f32],
        bias: &[f32],
        ys: &mut [f32],
        t: usize,
    ) {
        let rows = bias.len();
        let mut r = 0;
        // SAFETY: the loop conditions keep each block within the rows; the caller
        // guarantees the tokens and the columns.
        unsafe {
            while r + 24 <= rows && rows - r != 32 {
                gemv_rows_block::<T, 3>(cols, xs, bias, ys, (t, r));
                r += 24;
            }
            while r + 16 <= rows {
                gemv_rows_block::<T, 2>(cols, xs, bias, ys, (t, r));
                r += 16;
            }
            while r + 8 <= rows {
                gemv_rows_block::<T, 1>(cols, xs, bias, ys, (t, r));
                r += 8;
            }
            if r < rows {
                gemv_rows_tail::<T>(cols, xs, bias, ys, (t, r));
            }
        }
    }

    /// `R` rows of the lane-blocked product over `L` lanes, in `V = L / 8` registers per
    /// row: each weight is broadcast once for the row's `V` multiply-adds.
    #[inline(always)]
    unsafe fn gemm_block<const R: usize, const V: usize, const L: usize>(
        w: &[f32],
        xs: &[f32],
        ys: &mut [f32],
        r: usize,
    ) {
        const { assert!(V * VECTOR == L) };
        let n = xs.len() / L;
        // SAFETY: the caller guarantees r + R rows exist in `w` (n columns each) and `ys`
        // (L lanes each), and n rows of L lanes in `xs`.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            for (k, row) in acc.iter_mut().enumerate() {
                for (v, a) in row.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(ys.as_ptr().add((r + k) * L + v * VECTOR));
                }
            }
            for j in 0..n {
                let mut xv = [_mm256_setzero_ps(); V];
                for (v, x) in xv.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(xs.as_ptr().add(j * L + v * VECTOR));
                }
                for (k, row) in acc.iter_mut().enumerate() {
                    let wv = _mm256_set1_ps(*w.get_unchecked((r + k) * n + j));
                    for (a, x) in row.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(wv, *x, *a);
                    }
                }
            }
            for (k, row) in acc.iter().enumerate() {
                for (v, a) in row.iter().enumerate() {
                    _mm256_storeu_ps(ys.as_mut_ptr().add((r + k) * L + v * VECTOR), *a);
                }
            }
        }
    }

    /// Every row of the lane-blocked product in blocks of `R` rows (as many accumulators
    /// as the registers hold beside the inputs), then the rest in one block.
    #[inline(always)]
    unsafe fn gemm_rows<const R: usize, const V: usize, const L: usize>(
        w: &[f32],
        xs: &[f32],
        ys: &mut [f32],
        rows: usize,
    ) {
        let mut r = 0;
        // SAFETY: as in `gemm_block`: every block lies within the `rows` rows.
        unsafe {
            while r + R <= rows {
                gemm_block::<R, V, L>(w, xs, ys, r);
                r += R;
            }
            match rows - r {
                1 => gemm_block::<1, V, L>(w, xs, ys, r),
                2 => gemm_block::<2, V, L>(w, xs, ys, r),
                3 => gemm_block::<3, V, L>(w, xs, ys, r),
                4 => gemm_block::<4, V, L>(w, xs, ys, r),
                5 => gemm_block::<5, V, L>(w, xs, ys, r),
                6 => gemm_block::<6, V, L>(w, xs, ys, r),
                7 => gemm_block::<7, V, L>(w, xs, ys, r),
                _ => {}
            }
        }
    }

    /// `R` rows of the lane-blocked product over [`LANES`] lanes in one 512-bit register per
    /// row: [`gemm_block`]'s multiply-adds per lane in its order (so its bits), one
    /// broadcast weight per multiply-add (AVX-512 folds it into the instruction).
    #[inline(always)]
    unsafe fn gemm_block512<const R: usize>(w: &[f32], xs: &[f32], ys: &mut [f32], r: usize) {
        let n = xs.len() / LANES;
        // SAFETY: the caller guarantees r + R rows exist in `w` (n columns each) and `ys`
        // (LANES lanes each), and n rows of LANES lanes in `xs`.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); R];
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(ys.as_ptr().add((r + k) * LANES));
            }
            for j in 0..n {
                let x = _mm512_loadu_ps(xs.as_ptr().add(j * LANES));
                for (k, a) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*w.get_unchecked((r + k) * n + j));
                    *a = _mm512_fmadd_ps(wv, x, *a);
                }
            }
            for (k, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(ys.as_mut_ptr().add((r + k) * LANES), *a);
            }
        }
    }

    /// [`Kernels::gemm_lanes_acc`] over [`LANES`] lanes on 512-bit registers: blocks of 16
    /// rows (16 of the 32 registers accumulate), then 8, then the rest in one block.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn gemm_lanes_avx512(w: &[f32], xs: &[f32], ys: &mut [f32]) {
        let rows = ys.len() / LANES;
        let mut r = 0;
        // SAFETY: every block lies within the `rows` rows; the caller checked the shapes.
        unsafe {
            while r + 16 <= rows {
                gemm_block512::<16>(w, xs, ys, r);
                r += 16;
            }
            if r + 8 <= rows {
                gemm_block512::<8>(w, xs, ys, r);
                r += 8;
            }
            match rows - r {
                1 => gemm_block512::<1>(w, xs, ys, r),
                2 => gemm_block512::<2>(w, xs, ys, r),
                3 => gemm_block512::<3>(w, xs, ys, r),
                4 => gemm_block512::<4>(w, xs, ys, r),
                5 => gemm_block512::<5>(w, xs, ys, r),
                6 => gemm_block512::<6>(w, xs, ys, r),
                7 => gemm_block512::<7>(w, xs, ys, r),
                _ => {}
            }
        }
    }

    /// `N` blocks (8·N outputs) of the INT8 product, accumulated in registers.
    #[inline(always)]
    unsafe fn qgemv_blocks<const N: usize>(
        packed: &[i16],
        codes: &[i16],
        acc: &mut [i32],
        b: usize,
    ) {
        let pairs = codes.len() / 2;
        // SAFETY: the caller guarantees blocks b..b+N exist: acc holds 8·(b+N) values and
        // packed holds 16·pairs values per block; codes holds 2·pairs values.
        unsafe {
            let mut sums = [_mm256_setzero_si256(); N];
            for p in 0..pairs {
                // Both codes of the pair as one 32-bit lane, low half first (little endian),
                // matching the weights' order within each lane.
                let pair = codes.as_ptr().add(2 * p).cast::<i32>().read_unaligned();
                let x = _mm256_set1_epi32(pair);
                for (k, s) in sums.iter_mut().enumerate() {
                    let w = packed.as_ptr().add(((b + k) * pairs + p) * 2 * BLOCK);
                    let w = _mm256_loadu_si256(w.cast());
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(w, x));
                }
            }
            for (k, s) in sums.iter().enumerate() {
                _mm256_storeu_si256(acc.as_mut_ptr().add((b + k) * BLOCK).cast(), *s);
            }
        }
    }

    /// `N` blocks (8·N outputs) of the INT8 product on 512-bit registers: each register
    /// holds a block's weights for two consecutive input pairs (they are adjacent in the
    /// packing), the low half against the first pair's codes, the high half against the
    /// second's, and the halves are added at the end. Integer sums, so exact: the same
    /// accumulators as [`qgemv_blocks`].
    #[inline(always)]
    unsafe fn qgemv_blocks512<const N: usize>(
        packed: &[i16],
        codes: &[i16],
        acc: &mut [i32],
        b: usize,
    ) {
        let pairs = codes.len() / 2;
        // SAFETY: as in `qgemv_blocks`; the odd last pair's load keeps only the low half
        // (masked-off lanes are not read).
        unsafe {
            let mut sums = [_mm512_setzero_si512(); N];
            let code_pair = |p: usize| codes.as_ptr().add(2 * p).cast::<i32>().read_unaligned();
            let mut p = 0;
            while p + 2 <= pairs {
                let x = _mm512_inserti64x4::<1>(
                    _mm512_set1_epi32(code_pair(p)),
                    _mm256_set1_epi32(code_pair(p + 1)),
                );
                for (k, s) in sums.iter_mut().enumerate() {
                    let w = packed.as_ptr().add(((b + k) * pairs + p) * 2 * BLOCK);
                    *s = _mm512_dpwssd_epi32(*s, _mm512_loadu_si512(w.cast()), x);
                }
                p += 2;
            }
            if p < pairs {
                let x = _mm512_set1_epi32(code_pair(p));
                for (k, s) in sums.iter_mut().enumerate() {
                    let w = packed.as_ptr().add(((b + k) * pairs + p) * 2 * BLOCK);
                    let w = _mm512_maskz_loadu_epi32(0x00ff, w.cast());
                    *s = _mm512_dpwssd_epi32(*s, w, x);
                }
            }
            for (k, s) in sums.iter().enumerate() {
                let halves = _mm256_add_epi32(
                    _mm512_castsi512_si256(*s),
                    _mm512_extracti64x4_epi64::<1>(*s),
                );
                _mm256_storeu_si256(acc.as_mut_ptr().add((b + k) * BLOCK).cast(), halves);
            }
        }
    }

    /// [`Kernels::qgemv`] on 512-bit registers with VNNI (`vpdpwssd`: the pairs' products
    /// and their sum in one instruction, 32 multiply-adds): blocks of 4, then 1.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    fn qgemv_avx512(packed: &[i16], codes: &[i16], acc: &mut [i32]) {
        let blocks = acc.len() / BLOCK;
        let mut b = 0;
        // SAFETY: the loop conditions keep every block below `blocks`; the caller checked
        // `packed`'s length.
        unsafe {
            while b + 4 <= blocks {
                qgemv_blocks512::<4>(packed, codes, acc, b);
                b += 4;
            }
            while b < blocks {
                qgemv_blocks512::<1>(packed, codes, acc, b);
                b += 1;
            }
        }
    }

    /// Values from which [`wide`] calls out to AVX-512: a call that cannot be inlined, worth
    /// it for the hundreds of values of a batch block's activations or a Mamba row's decays,
    /// not for a single sequence's few dozen (the GRU's single-sample step, split into
    /// slices and calls, went from 1.14 to 1.21 µs a window; it keeps its inline loops).
    const WIDE_FROM: usize = 256;

    /// Whether a slice goes to the AVX-512 functions below: where the CPU has AVX-512F and
    /// the slice is long enough. They run the element-wise loops of the AVX2 kernels
    /// compiled for 512-bit registers: twice the values per multiply-add for the same
    /// operations per value (so the same bits), in functions of their own because compiling
    /// the whole plan for AVX-512 slowed the layers written in 8-wide chunks. Each calls its
    /// loop directly, so that the loop is inlined and compiled with these features (passed
    /// as a function value, it was not, and ran the fused multiply-add as a library call).
    #[inline(always)]
    fn wide(values: &[f32]) -> bool {
        values.len() >= WIDE_FROM && std::is_x86_feature_detected!("avx512f")
    }

    /// `fn $wide`: the loop `super::$each` over the AVX2 kernels, compiled for AVX-512 (see
    /// [`wide`]); and, inside the `Kernels` impl, the method `$method` that calls it where
    /// [`wide`] says so and runs the loop inline otherwise.
    macro_rules! wide_slices {
        ($($method:ident => $wide:ident, $each:ident;)*) => {
            $(
                #[doc = concat!("[`super::", stringify!($each), "`] on AVX-512 (see [`wide`]).")]
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn $wide(values: &mut [f32]) {
                    super::$each::<Avx2>(values);
                }
            )*

            macro_rules! slice_methods {
                () => {
                    $(
                        #[inline(always)]
                        fn $method(values: &mut [f32]) {
                            if wide(values) {
                                // SAFETY: `wide` saw AVX-512F; AVX2 and FMA are present (only
                                // the AVX2 plan, chosen by `Isa::detect`, reaches these kernels).
                                unsafe { $wide(values) }
                            } else {
                                super::$each::<Self>(values);
                            }
                        }
                    )*
                };
            }
        };
    }

    /// Gate rows a fused recurrence keeps in registers: 12 of the 32 512-bit ones.
    const FUSED_ROWS: usize = 192;

    /// `b + W h` for the `rows` gate rows of a fused recurrence (a multiple of 16, at most
    /// [`FUSED_ROWS`]) in registers: each row from its bias, then its multiply-adds in
    /// column order, as [`gemv_rows_block512`] computes one token (so [`Kernels::gemv`]'s
    /// bits). The rows past `rows` are zero.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `bias` holds at least `rows` values and `cols` at least
    /// `rows · state.len()`.
    #[inline(always)]
    unsafe fn state_product(
        cols: &[f32],
        bias: &[f32],
        state: &[f32],
        rows: usize,
    ) -> [f32; FUSED_ROWS] {
        let registers = rows / 16;
        // SAFETY (whole body): the caller has AVX-512F and bounds the `registers · 16 = rows`
        // bias values and every column's `rows` weights; twelve 512-bit registers are 192
        // f32 values, the same size and no invalid bit patterns either way.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); FUSED_ROWS / 16];
            for (k, a) in acc.iter_mut().take(registers).enumerate() {
                *a = _mm512_loadu_ps(bias.as_ptr().add(16 * k));
            }
            for (j, &hj) in state.iter().enumerate() {
                let xv = _mm512_set1_ps(hj);
                let col = cols.as_ptr().add(j * rows);
                for (k, a) in acc.iter_mut().take(registers).enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(col.add(16 * k)), xv, *a);
                }
            }
            std::mem::transmute::<[__m512; FUSED_ROWS / 16], [f32; FUSED_ROWS]>(acc)
        }
    }

    /// [`Kernels::gru_sequence`] for `H` units (16, 32, 48 or 64, so that the `3H` gate rows
    /// fill whole registers) on AVX-512. A step's gate sums stay in registers from the
    /// product ([`state_product`]) to the cell, and the whole recurrence is one function,
    /// where the layer's loop made a call and a round trip through memory per step. The
    /// cell is [`gru_unit`] over the units, which the compiler vectorizes 16 at a time with
    /// the same operations per value.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn gru_sequence_avx512<const H: usize>(
        cols: &[f32],
        bias: &[f32],
        gates_in: &[f32],
        h: &mut [f32],
    ) {
        const { assert!(H.is_multiple_of(16) && 3 * H <= FUSED_ROWS) };
        let rows = 3 * H;
        assert!(
            h.len() == H && bias.len() == rows && cols.len() >= rows * H,
            "gru_sequence shapes"
        );
        let mut state = [0f32; H];
        state.copy_from_slice(h);
        for gi in gates_in.chunks_exact(rows) {
            // SAFETY: AVX-512F is enabled here; the assert above bounds `bias` and `cols`.
            let gh = unsafe { state_product(cols, bias, &state, rows) };
            for (u, hu) in state.iter_mut().enumerate() {
                let gates_in = [gi[u], gi[H + u], gi[2 * H + u]];
                *hu = gru_unit::<Avx2>(gates_in, [gh[u], gh[H + u], gh[2 * H + u]], *hu);
            }
        }
        h.copy_from_slice(&state);
    }

    /// [`Kernels::lstm_sequence`] for `H` units (16, 32 or 48: `4H` gate rows in whole
    /// registers) on AVX-512, as [`gru_sequence_avx512`] with [`lstm_unit`] for the cell.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn lstm_sequence_avx512<const H: usize>(
        cols: &[f32],
        bias: &[f32],
        gates_in: &[f32],
        (h, c): (&mut [f32], &mut [f32]),
        states: &mut [f32],
    ) {
        const { assert!(H.is_multiple_of(16) && 4 * H <= FUSED_ROWS) };
        let rows = 4 * H;
        let steps = gates_in.len() / rows;
        assert!(
            h.len() == H
                && c.len() == H
                && bias.len() == rows
                && cols.len() >= rows * H
                && (states.is_empty() || states.len() == steps * H),
            "lstm_sequence shapes"
        );
        let (mut state, mut cell) = ([0f32; H], [0f32; H]);
        state.copy_from_slice(h);
        cell.copy_from_slice(c);
        for (t, gi) in gates_in.chunks_exact(rows).enumerate() {
            // SAFETY: AVX-512F is enabled here; the assert above bounds `bias` and `cols`.
            let gh = unsafe { state_product(cols, bias, &state, rows) };
            for (u, (hu, cu)) in state.iter_mut().zip(cell.iter_mut()).enumerate() {
                let gates_in = [gi[u], gi[H + u], gi[2 * H + u], gi[3 * H + u]];
                let gates_state = [gh[u], gh[H + u], gh[2 * H + u], gh[3 * H + u]];
                *hu = lstm_unit::<Avx2>(gates_in, gates_state, cu);
            }
            if !states.is_empty() {
                states[t * H..(t + 1) * H].copy_from_slice(&state);
            }
        }
        h.copy_from_slice(&state);
        c.copy_from_slice(&cell);
    }

    wide_slices! {
        exp_slice => exp_avx512, exp_blocks;
        sigmoid_slice => sigmoid_avx512, sigmoids;
        tanh_slice => tanh_avx512, tanhs;
    }

    impl Kernels for Avx2 {
        #[inline(always)]
        fn qgemv(packed: &[i16], codes: &[i16], acc: &mut [i32]) {
            let blocks = acc.len() / BLOCK;
            assert!(
                acc.len() == blocks * BLOCK
                    && codes.len().is_multiple_of(2)
                    && packed.len() >= blocks * codes.len() * BLOCK,
                "qgemv shapes"
            );
            if std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                // SAFETY: AVX-512F/BW and VNNI were detected (BW implies F), AVX2 is present,
                // and the assert above bounds `packed`.
                unsafe { qgemv_avx512(packed, codes, acc) };
                return;
            }
            let mut b = 0;
            // SAFETY: the loop conditions keep every block below `blocks`, and the assert
            // bounds `packed`; AVX2 is present (only `#[target_feature]` code reaches here).
            unsafe {
                while b + 4 <= blocks {
                    qgemv_blocks::<4>(packed, codes, acc, b);
                    b += 4;
                }
                while b < blocks {
                    qgemv_blocks::<1>(packed, codes, acc, b);
                    b += 1;
                }
            }
        }

        /// The branch-free polynomial, so that a loop over it vectorizes (the library's
        /// `log1pf` is a call per value).
        #[inline(always)]
        fn ln_1p_unit(t: f32) -> f32 {
            super::ln_1p_unit::<Self>(t)
        }

        const SLICE_FROM: usize = WIDE_FROM;

        #[inline(always)]
        fn gru_sequence(cols: &[f32], bias: &[f32], gates_in: &[f32], h: &mut [f32]) -> bool {
            if !std::is_x86_feature_detected!("avx512f") {
                return false;
            }
            match h.len() {
                // SAFETY: AVX-512F was detected; AVX2 and FMA are present (only the AVX2
                // plan, chosen by `Isa::detect`, reaches these kernels).
                16 => unsafe { gru_sequence_avx512::<16>(cols, bias, gates_in, h) },
                // SAFETY: as above.
                32 => unsafe { gru_sequence_avx512::<32>(cols, bias, gates_in, h) },
                // SAFETY: as above.
                48 => unsafe { gru_sequence_avx512::<48>(cols, bias, gates_in, h) },
                // SAFETY: as above.
                64 => unsafe { gru_sequence_avx512::<64>(cols, bias, gates_in, h) },
                _ => return false,
            }
            true
        }

        #[inline(always)]
        fn lstm_sequence(
            cols: &[f32],
            bias: &[f32],
            gates_in: &[f32],
            state: (&mut [f32], &mut [f32]),
            states: &mut [f32],
        ) -> bool {
            if !std::is_x86_feature_detected!("avx512f") {
                return false;
            }
            match state.0.len() {
                // SAFETY: AVX-512F was detected; AVX2 and FMA are present (only the AVX2
                // plan, chosen by `Isa::detect`, reaches these kernels).
                16 => unsafe { lstm_sequence_avx512::<16>(cols, bias, gates_in, state, states) },
                // SAFETY: as above.
                32 => unsafe { lstm_sequence_avx512::<32>(cols, bias, gates_in, state, states) },
                // SAFETY: as above.
                48 => unsafe { lstm_sequence_avx512::<48>(cols, bias, gates_in, state, states) },
                _ => return false,
            }
            true
        }

        slice_methods!();

        #[inline(always)]
        fn mul_add(a: f32, b: f32, c: f32) -> f32 {
            a.mul_add(b, c)
        }

        #[inline(always)]
        fn gemv(cols: &[f32], x: &[f32], bias: &[f32], y: &mut [f32]) {
            let rows = y.len();
            assert!(
                bias.len() == rows && cols.len() >= rows * x.len(),
                "gemv shapes"
            );
            if rows >= GEMV_WIDE_FROM && std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F was detected, AVX2 and FMA are present (only the AVX2
                // plan reaches these kernels), and the assert above bounds the columns.
                unsafe { gemv_avx512(cols, x, bias, y) };
                return;
            }
            let mut r = 0;
            // SAFETY: each block stays below `rows` (loop conditions) and the assert above
            // bounds the columns; AVX2/FMA are present because only `#[target_feature]`
            // entry points reach this code. Twelve accumulators (96 rows, a GRU(·→32)'s
            // gates) hide the FMA latency with 2 pipes; 16 registers hold them plus the
            // broadcast and a load.
            unsafe {
                while r + 96 <= rows {
                    gemv_block::<12>(cols, x, bias, y, r);
                    r += 96;
                }
                while r + 64 <= rows {
                    gemv_block::<8>(cols, x, bias, y, r);
                    r += 64;
                }
                while r + 32 <= rows {
                    gemv_block::<4>(cols, x, bias, y, r);
                    r += 32;
                }
                while r + 8 <= rows {
                    gemv_block::<1>(cols, x, bias, y, r);
                    r += 8;
                }
                if r < rows {
                    gemv_tail(cols, x, bias, y, r);
                }
            }
        }

        #[inline(always)]
        fn gemv_rows(cols: &[f32], xs: &[f32], bias: &[f32], ys: &mut [f32]) {
            let rows = bias.len();
            let tokens = ys.len() / rows.max(1);
            let inputs = xs.len() / tokens.max(1);
            assert!(
                rows > 0
                    && ys.len() == tokens * rows
                    && xs.len() == tokens * inputs
                    && cols.len() >= rows * inputs,
                "gemv_rows shapes"
            );
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F was detected, AVX2 and FMA are present (as in `gemv`), and
                // the assert above bounds the rows and columns.
                unsafe { gemv_rows_avx512(cols, xs, bias, ys) };
                return;
            }
            let mut t = 0;
            // SAFETY: the loop conditions keep each block of tokens below `tokens`, and the
            // assert bounds the rows and columns; AVX2/FMA are present (as in `gemv`).
            unsafe {
                while t + 4 <= tokens {
                    gemv_rows_tokens::<4>(cols, xs, bias, ys, t);
                    t += 4;
                }
                while t + 2 <= tokens {
                    gemv_rows_tokens::<2>(cols, xs, bias, ys, t);
                    t += 2;
                }
            }
            if t < tokens {
                Self::gemv(cols, &xs[t * inputs..], bias, &mut ys[t * rows..]);
            }
        }

        #[inline(always)]
        fn gemm_lanes_acc<const L: usize>(w: &[f32], xs: &[f32], ys: &mut [f32]) {
            const { assert!(L == VECTOR || L == LANES) };
            let n = xs.len() / L;
            let rows = ys.len() / L;
            assert!(
                xs.len() == n * L && ys.len() == rows * L && w.len() == rows * n,
                "gemm shapes"
            );
            if L == LANES && std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F was detected, AVX2 and FMA are present (as in `gemv`), and
                // the assert above bounds all rows and columns.
                unsafe { gemm_lanes_avx512(w, xs, ys) };
                return;
            }
            // SAFETY: as in `gemv_acc`; the assert bounds all rows and columns.
            unsafe {
                // 8 rows × 1 register or 6 rows × 2: the accumulators, the inputs and the
                // broadcast weight fill at most 15 of the 16 registers.
                if L == LANES {
                    gemm_rows::<6, 2, LANES>(w, xs, ys, rows);
                } else {
                    gemm_rows::<8, 1, VECTOR>(w, xs, ys, rows);
                }
            }
        }
    }
}

/// `e^x` to about 1 ulp on `[-87, 88]` (clamped outside): `2^n · p(r)` with `n = round(x/ln 2)`,
/// `r = x − n ln 2` split in two constants, and a degree-7 Taylor polynomial, whose error
/// `r⁸/8!` is below 6e-9 for `|r| ≤ ln 2 / 2`. Branch-free, so loops over it vectorize.
#[inline(always)]
pub(crate) fn exp<K: Kernels>(x: f32) -> f32 {
    let mut value = [x];
    exp_block::<K, 1>(&mut value);
    value[0]
}

/// Values a block of exponentials takes at once: four vectors.
pub(crate) const EXP_BLOCK: usize = 4 * VECTOR;

/// `values[i] ← e^{values[i]}` ([`exp`]) for a block of `W` values, each step for every
/// value before the next step. With `W` = [`EXP_BLOCK`] the dependency chains of four
/// vectors (twelve operations each) come in program order one step apart, so the multiply
/// pipes can stay busy without the scheduler looking past one block (the compiler may still
/// reorder them: in the 256-bit plan's Mamba scan it serialized the chains). The same
/// operations per value in any block, so the same bits.
#[inline(always)]
pub(crate) fn exp_block<K: Kernels, const W: usize>(values: &mut [f32; W]) {
    let mut n = [0u32; W];
    exp_reduced::<K, W>(values, &mut n);
    for i in 0..W {
        values[i] = times_power_of_two(values[i], n[i]);
    }
}

/// [`exp`]'s first part for a block of values: `values[i] ← p(r)`, and `n[i]` as
/// two's-complement bits. Index loops over the arrays, which the compiler keeps in
/// registers (returning arrays or mapping them sent them through the stack).
#[inline(always)]
fn exp_reduced<K: Kernels, const W: usize>(values: &mut [f32; W], n: &mut [u32; W]) {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5·2²³ rounds to the nearest integer in the default rounding mode.
    const ROUND: f32 = 12_582_912.0;
    let mut shifted = [0f32; W];
    for i in 0..W {
        // max/min rather than clamp: they map to single vector instructions (clamp adds
        // NaN handling that blocks the cheap form).
        #[allow(clippy::manual_clamp)]
        let x = values[i].max(-87.0).min(88.0);
        values[i] = x;
        shifted[i] = x * std::f32::consts::LOG2_E + ROUND;
    }
    let mut r = [0f32; W];
    for i in 0..W {
        let n = shifted[i] - ROUND;
        r[i] = K::mul_add(-n, LN2_LO, K::mul_add(-n, LN2_HI, values[i]));
    }
    let mut p = [1.0 / 5040.0; W];
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        for i in 0..W {
            p[i] = K::mul_add(p[i], r[i], c);
        }
    }
    // The rounded n sits in the low mantissa bits of `shifted` (whose exponent is fixed by
    // ROUND), so no float→int conversion is needed; n ∈ [-126, 127] after the clamp.
    for i in 0..W {
        values[i] = p[i];
        n[i] = shifted[i].to_bits().wrapping_sub(ROUND.to_bits());
    }
}

/// `values[i] ← e^{values[i]}`, [`EXP_BLOCK`] values at a time through [`exp_block`],
/// the rest one by one.
#[inline(always)]
pub(crate) fn exp_blocks<K: Kernels>(values: &mut [f32]) {
    let (blocks, rest) = values.as_chunks_mut::<EXP_BLOCK>();
    for block in blocks {
        exp_block::<K, EXP_BLOCK>(block);
    }
    for v in rest {
        *v = exp::<K>(*v);
    }
}

/// `values[i] ← σ(values[i])` ([`sigmoid`]), one plain loop (which vectorizes).
#[inline(always)]
pub(crate) fn sigmoids<K: Kernels>(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = sigmoid::<K>(*v);
    }
}

/// `values[i] ← tanh(values[i])` ([`tanh`]), one plain loop (which vectorizes).
#[inline(always)]
pub(crate) fn tanhs<K: Kernels>(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = tanh::<K>(*v);
    }
}

/// `p · 2^n` for [`exp_reduced`]'s pairs, by adding `n` to `p`'s exponent field: one
/// integer add where multiplying by `2^n` takes a slot on the multiply pipes, which the
/// polynomial already fills. The same bits as the product, because every `p · 2^n` here is
/// a normal number (so the product is exact too): `p ∈ (0.7, 1.42)`, `n ∈ [-126, 127]`, and
/// `n = −126` only for `x ∈ [−87, −86.99]`, where `p > 1`
/// (`exp_scaling_is_the_product_by_a_power_of_two` checks it over the whole range).
#[inline(always)]
fn times_power_of_two(p: f32, n: u32) -> f32 {
    f32::from_bits(p.to_bits().wrapping_add(n << 23))
}

/// `values[i] ← e^(values[i] − shift)`, eight at a time: the same operations per value as a
/// plain loop, in a form the compiler vectorizes (the plain loop over a short slice of
/// unknown length stayed scalar).
#[inline(always)]
pub(crate) fn exp_shifted<K: Kernels>(values: &mut [f32], shift: f32) {
    let mut chunks = values.chunks_exact_mut(VECTOR);
    for chunk in &mut chunks {
        for v in chunk.iter_mut() {
            *v = exp::<K>(*v - shift);
        }
    }
    for v in chunks.into_remainder() {
        *v = exp::<K>(*v - shift);
    }
}

/// The largest of `init` and `values`, eight running maxima at a time rather than one
/// chain: the maximum of a set does not depend on the order it is taken in, so this is the
/// fold's result.
#[inline(always)]
pub(crate) fn max_of(values: &[f32], init: f32) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    // Halving the lanes: three steps where a fold over them takes eight.
    for half in [4, 2, 1] {
        for i in 0..half {
            lanes[i] = lanes[i].max(lanes[i + half]);
        }
    }
    rest.iter().fold(init.max(lanes[0]), |m, &v| m.max(v))
}

/// `ln(1 + t)` for `t ∈ [0, 1]` to about 1e-7 relative, branch-free: `2 atanh s` with
/// `s = t / (2 + t) ∈ [0, 1/3]`, its odd series to `s¹⁵` (the first term left out,
/// `s¹⁷/17 · 2`, is below 2e-9 · 2s). No cancellation for small `t`: `2s ≈ t`. Only the
/// x86-64 kernels use it (the portable ones call the C library), and the tests.
#[cfg(any(target_arch = "x86_64", test))]
#[inline(always)]
pub(crate) fn ln_1p_unit<K: Kernels>(t: f32) -> f32 {
    let s = t / (2.0 + t);
    let s2 = s * s;
    let mut p = 1.0 / 15.0;
    p = K::mul_add(p, s2, 1.0 / 13.0);
    p = K::mul_add(p, s2, 1.0 / 11.0);
    p = K::mul_add(p, s2, 1.0 / 9.0);
    p = K::mul_add(p, s2, 1.0 / 7.0);
    p = K::mul_add(p, s2, 1.0 / 5.0);
    p = K::mul_add(p, s2, 1.0 / 3.0);
    p = K::mul_add(p, s2, 1.0);
    2.0 * s * p
}

/// One GRU unit's update (PyTorch convention) from its input gates `gi = W_ih x + b_ih`
/// and state gates `gh = W_hh h + b_hh`, each `[r, z, n]`: `r = σ(gi_r + gh_r)`,
/// `z = σ(gi_z + gh_z)`, `n = tanh(gi_n + r · gh_n)`, `h ← n + z · (h − n)`.
/// The layer's own cell computes the same expressions over the gates' slices; only the
/// x86-64 fused recurrences take them a unit at a time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn gru_unit<K: Kernels>(gi: [f32; 3], gh: [f32; 3], h: f32) -> f32 {
    let r = sigmoid::<K>(gi[0] + gh[0]);
    let z = sigmoid::<K>(gi[1] + gh[1]);
    let n = tanh::<K>(K::mul_add(r, gh[2], gi[2]));
    K::mul_add(z, h - n, n)
}

/// One LSTM unit's update (PyTorch convention) from its input and state gates, each
/// `[i, f, g, o]`: with the sums `a = gi + gh`, `c ← σ(a_f) · c + σ(a_i) · tanh(a_g)`, and
/// the new `h = σ(a_o) · tanh(c)`, returned.
/// The layer's own cell computes the same expressions over the gates' slices; only the
/// x86-64 fused recurrences take them a unit at a time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn lstm_unit<K: Kernels>(gi: [f32; 4], gh: [f32; 4], c: &mut f32) -> f32 {
    let i = sigmoid::<K>(gi[0] + gh[0]);
    let f = sigmoid::<K>(gi[1] + gh[1]);
    let g = tanh::<K>(gi[2] + gh[2]);
    let o = sigmoid::<K>(gi[3] + gh[3]);
    *c = K::mul_add(f, *c, i * g);
    o * tanh::<K>(*c)
}

/// `1 / (1 + e^{−x})`.
#[inline(always)]
pub(crate) fn sigmoid<K: Kernels>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<K>(-x))
}

/// `tanh x`: an odd Taylor polynomial for `|x| < 0.2` (error below 2e-10 relative), where
/// `1 − 2/(e^{2x} + 1)` would cancel, and that formula elsewhere. Both are computed and one
/// is selected, so the loop stays branch-free.
#[inline(always)]
pub(crate) fn tanh<K: Kernels>(x: f32) -> f32 {
    let x2 = x * x;
    let mut p = 62.0 / 2835.0;
    p = K::mul_add(p, x2, -17.0 / 315.0);
    p = K::mul_add(p, x2, 2.0 / 15.0);
    p = K::mul_add(p, x2, -1.0 / 3.0);
    let small = K::mul_add(p * x2, x, x);
    let large = 1.0 - 2.0 / (exp::<K>(2.0 * x) + 1.0);
    if x.abs() < 0.2 { small } else { large }
}

/// `xs[i] ← σ(xs[i])` with the plan's fast sigmoid, vectorized with AVX2 where the CPU has
/// it: for callers outside the plan (the fused training ops share the engine's numerics).
pub fn sigmoid_in_place(xs: &mut [f32]) {
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` returns `Avx2Fma` only when the CPU reports AVX2 and FMA.
        Isa::Avx2Fma => unsafe { sigmoid_avx2(xs) },
        _ => xs.iter_mut().for_each(|x| *x = sigmoid::<Portable>(*x)),
    }
}

/// `xs[i] ← tanh(xs[i])` with the plan's fast tanh (see [`sigmoid_in_place`]).
pub fn tanh_in_place(xs: &mut [f32]) {
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `sigmoid_in_place`.
        Isa::Avx2Fma => unsafe { tanh_avx2(xs) },
        _ => xs.iter_mut().for_each(|x| *x = tanh::<Portable>(*x)),
    }
}

/// `xs[i] ← e^{xs[i]}` with the plan's fast exponential (see [`sigmoid_in_place`]).
pub fn exp_in_place(xs: &mut [f32]) {
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `sigmoid_in_place`.
        Isa::Avx2Fma => unsafe { exp_avx2(xs) },
        _ => xs.iter_mut().for_each(|x| *x = exp::<Portable>(*x)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_avx2(xs: &mut [f32]) {
    Avx2::exp_slice(xs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sigmoid_avx2(xs: &mut [f32]) {
    Avx2::sigmoid_slice(xs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tanh_avx2(xs: &mut [f32]) {
    Avx2::tanh_slice(xs);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test of `$check` on the portable kernels, and one on the AVX2 kernels where the
    /// CPU has them.
    macro_rules! on_both_isas {
        ($check:ident, $portable:ident, $avx2:ident) => {
            #[test]
            fn $portable() {
                $check::<Portable>();
            }

            #[cfg(target_arch = "x86_64")]
            #[test]
            fn $avx2() {
                if Isa::detect() == Isa::Avx2Fma {
                    $check::<Avx2>();
                }
            }
        };
    }

    /// Every f32 (one bit pattern in 61, and every one near the clamps, where `n` is ±126
    /// or 127): [`times_power_of_two`] gives the bits of `p · 2^n`.
    fn check_exp_scaling<K: Kernels>() {
        let near_clamps = [(-88.0f32, -86.0f32), (86.0, 89.0)].map(|(low, high)| {
            let bits = |x: f32| if x < 0.0 { (-x).to_bits() } else { x.to_bits() };
            (
                bits(low).min(bits(high)),
                bits(low).max(bits(high)),
                low < 0.0,
            )
        });
        let strided = (0..=u32::MAX).step_by(61).map(f32::from_bits);
        let dense = near_clamps.into_iter().flat_map(|(from, to, negative)| {
            (from..=to).map(move |b| {
                if negative {
                    -f32::from_bits(b)
                } else {
                    f32::from_bits(b)
                }
            })
        });
        let mut checked = 0u64;
        for x in strided.chain(dense) {
            let ([p], [n]) = {
                let (mut p, mut n) = ([x], [0]);
                exp_reduced::<K, 1>(&mut p, &mut n);
                (p, n)
            };
            let product = p * f32::from_bits(n.wrapping_add(127) << 23);
            assert_eq!(
                times_power_of_two(p, n).to_bits(),
                product.to_bits(),
                "e^{x}"
            );
            checked += 1;
        }
        assert!(checked > 70_000_000, "{checked} values");
    }

    on_both_isas!(
        check_exp_scaling,
        exp_scaling_is_the_product_by_a_power_of_two_portable,
        exp_scaling_is_the_product_by_a_power_of_two_avx2
    );

    fn check_functions<K: Kernels>() {
        let mut worst = [0f64; 3];
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4 * 4.35 + 0.5; // [-86.5, 87.5]
            let e = f64::from(exp::<K>(x));
            let want = f64::from(x).exp();
            worst[0] = worst[0].max((e - want).abs() / want);
            let y = i as f32 * 1e-4 * 0.5; // [-10, 10]
            let s = f64::from(sigmoid::<K>(y));
            let want = 1.0 / (1.0 + (-f64::from(y)).exp());
            worst[1] = worst[1].max((s - want).abs() / want);
            let t = f64::from(tanh::<K>(y));
            let want = f64::from(y).tanh();
            worst[2] = worst[2].max((t - want).abs() / want.abs().max(1e-30));
        }
        assert!(worst[0] < 4e-7, "exp relative error {}", worst[0]);
        assert!(worst[1] < 5e-7, "sigmoid relative error {}", worst[1]);
        assert!(worst[2] < 1e-6, "tanh relative error {}", worst[2]);
        assert_eq!(tanh::<K>(0.0), 0.0);
        // ln(1 + t) on [0, 1], tiny t included (softplus of large |x|): the kernel set's and
        // the polynomial's.
        let mut worst = [0f64; 2];
        for i in 0..=100_000 {
            let t = if i < 1000 {
                1e-30 * 1.07f32.powi(i)
            } else {
                i as f32 * 1e-5
            };
            let want = f64::from(t).ln_1p();
            for (w, got) in worst.iter_mut().zip([K::ln_1p_unit(t), ln_1p_unit::<K>(t)]) {
                *w = w.max((f64::from(got) - want).abs() / want.max(1e-45));
            }
        }
        assert!(worst[0] < 3e-7, "ln_1p relative error {}", worst[0]);
        assert!(
            worst[1] < 3e-7,
            "ln_1p polynomial relative error {}",
            worst[1]
        );
        assert_eq!(ln_1p_unit::<K>(0.0), 0.0);
    }

    on_both_isas!(
        check_functions,
        transcendental_functions_are_accurate_portable,
        transcendental_functions_are_accurate_avx2
    );

    fn reference_gemv(w_rows: &[f32], rows: usize, x: &[f32]) -> Vec<f64> {
        (0..rows)
            .map(|r| {
                (0..x.len())
                    .map(|j| f64::from(w_rows[r * x.len() + j]) * f64::from(x[j]))
                    .sum()
            })
            .collect()
    }

    fn check_products<K: Kernels>() {
        // Odd sizes exercise every block and the scalar tails.
        for (rows, cols) in [
            (1, 1),
            (4, 3),
            (5, 2),
            (7, 3),
            (9, 2),
            (10, 6),
            (14, 3),
            (64, 5),
            (80, 3),
            (95, 7),
            (96, 4),
            (96, 32),
            (112, 2),
            (131, 17),
            (200, 9),
            (300, 5),
        ] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let packed: Vec<f32> = (0..cols)
                .flat_map(|j| (0..rows).map(move |r| (r, j)))
                .map(|(r, j)| w[r * cols + j])
                .collect();
            let x: Vec<f32> = (0..cols).map(|j| (j as f32 * 0.3).sin()).collect();
            let want = reference_gemv(&w, rows, &x);
            let bias: Vec<f32> = (0..rows).map(|r| r as f32 * 0.01).collect();
            let mut y = vec![f32::NAN; rows];
            K::gemv(&packed, &x, &bias, &mut y);
            for (r, ((a, b), c)) in y.iter().zip(&want).zip(&bias).enumerate() {
                assert!(
                    (f64::from(*a) - b - f64::from(*c)).abs() < 1e-5,
                    "gemv {rows}×{cols}"
                );
                // Whatever the register width (AVX-512 from 64 rows where the CPU has it),
                // each output is the bias then one multiply-add per input, in input order.
                let chain = (0..cols).fold(*c, |acc, j| K::mul_add(w[r * cols + j], x[j], acc));
                assert_eq!(a.to_bits(), chain.to_bits(), "gemv {rows}×{cols} row {r}");
            }
            // Rows of tokens: each token's outputs carry `gemv`'s bits, for every count of
            // tokens the blocks of 8 (AVX-512), 4 and 2 and the single last one cover.
            for tokens in 1..=17 {
                let xs: Vec<f32> = (0..tokens * cols)
                    .map(|i| (i as f32 * 0.23).sin())
                    .collect();
                let mut ys = vec![f32::NAN; tokens * rows];
                K::gemv_rows(&packed, &xs, &bias, &mut ys);
                for (x, y) in xs.chunks_exact(cols).zip(ys.chunks_exact(rows)) {
                    let mut alone = vec![f32::NAN; rows];
                    K::gemv(&packed, x, &bias, &mut alone);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(y),
                        bits(&alone),
                        "gemv_rows {rows}×{cols}, {tokens} tokens"
                    );
                }
            }
            // Both lane widths against the reference; the 16-lane product gives each lane
            // the bits of the 8-lane one (the same multiply-adds in the same order).
            let xs: Vec<f32> = (0..cols * LANES).map(|i| (i as f32 * 0.17).cos()).collect();
            let mut ys = vec![1f32; rows * LANES];
            K::gemm_lanes_acc::<LANES>(&w, &xs, &mut ys);
            for half in 0..LANES / VECTOR {
                let lane_of = |l: usize| half * VECTOR + l;
                let xh: Vec<f32> = (0..cols * VECTOR)
                    .map(|i| xs[i / VECTOR * LANES + lane_of(i % VECTOR)])
                    .collect();
                let mut yh = vec![1f32; rows * VECTOR];
                K::gemm_lanes_acc::<VECTOR>(&w, &xh, &mut yh);
                for l in 0..VECTOR {
                    let xl: Vec<f32> = (0..cols).map(|j| xh[j * VECTOR + l]).collect();
                    for (r, want) in reference_gemv(&w, rows, &xl).iter().enumerate() {
                        let got = yh[r * VECTOR + l];
                        assert!(
                            (f64::from(got) - 1.0 - want).abs() < 1e-5,
                            "gemm {rows}×{cols} lane {l}"
                        );
                        assert_eq!(
                            ys[r * LANES + lane_of(l)].to_bits(),
                            got.to_bits(),
                            "gemm {rows}×{cols}: 16 lanes against 8, lane {l}"
                        );
                    }
                }
            }
        }
    }

    /// A slice kernel, the function it maps over the values, and its name.
    type SliceCheck = (fn(&mut [f32]), fn(f32) -> f32, &'static str);

    /// `max_of`, `exp_shifted` and the kernels' slices of `exp`, `sigmoid` and `tanh` (on
    /// AVX-512 where the CPU has it)
    /// give the bits of the plain fold and loops they replace (the attention's golden files
    /// hold only 5 keys, below a chunk of 8), over every length around a block and beyond
    /// the clamps.
    fn check_block_helpers<K: Kernels>() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -100.0,
            100.0,
            -0.0,
        ];
        for len in (0..=3 * EXP_BLOCK).chain([255, 256, 1029]) {
            let mut values: Vec<f32> = (0..len).map(|_| rng.random_range(-30.0..30.0)).collect();
            for (v, &special) in values.iter_mut().step_by(5).zip(&specials) {
                *v = special;
            }
            let slices: [SliceCheck; 3] = [
                (K::exp_slice, exp::<K>, "exp"),
                (K::sigmoid_slice, sigmoid::<K>, "sigmoid"),
                (K::tanh_slice, tanh::<K>, "tanh"),
            ];
            for (slice_op, value_op, name) in slices {
                let mut got = values.clone();
                slice_op(&mut got);
                for (got, &v) in got.iter().zip(&values) {
                    let want = value_op(v);
                    assert_eq!(got.to_bits(), want.to_bits(), "{name}({v}), {len} values");
                }
            }
            let values: Vec<f32> = values.into_iter().filter(|v| v.is_finite()).collect();
            for init in [f32::NEG_INFINITY, -5.0, 50.0] {
                let folded = values.iter().fold(init, |m, &v| m.max(v));
                assert_eq!(
                    max_of(&values, init).to_bits(),
                    folded.to_bits(),
                    "{len} values"
                );
            }
            let mut shifted = values.clone();
            exp_shifted::<K>(&mut shifted, 3.5);
            for (got, &v) in shifted.iter().zip(&values) {
                assert_eq!(got.to_bits(), exp::<K>(v - 3.5).to_bits(), "{len} values");
            }
        }
    }

    on_both_isas!(
        check_block_helpers,
        block_helpers_keep_the_bits_of_the_plain_loops_portable,
        block_helpers_keep_the_bits_of_the_plain_loops_avx2
    );

    on_both_isas!(
        check_products,
        products_match_a_reference_portable,
        products_match_a_reference_avx2
    );
}
