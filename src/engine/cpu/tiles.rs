//! Register tiles of products C = A B whose C rows are short (a few vectors of 16): R rows of C
//! x V vectors stay in registers while A's R rows are broadcast and B's rows stream past, one
//! fused multiply-add per element of the sum, in order (as a product over columns accumulates
//! them). B's rows come from a [`Rows`] source: loaded from a matrix, or gathered from an image
//! (the implicit GEMM of small convolutions). With no packing of either operand, products with
//! 64-wide C rows run at the rate of the gemm crate's own micro-kernel, without its packing.
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Row `t` of B as V vectors of 16 (the tile's columns), and which lanes of each C stores.
pub(super) trait Rows<const V: usize> {
    /// # Safety
    /// The CPU has AVX-512F; `t` is below the product's sum length.
    unsafe fn row(&self, t: usize) -> [__m512; V];
    fn stores(&self) -> [u16; V];
}

/// B as a matrix: row t at `b + t * ldb`, V full vectors (the caller pads C's columns to whole
/// vectors).
struct Loaded {
    b: *const f32,
    ldb: usize,
}

impl<const V: usize> Rows<V> for Loaded {
    #[inline(always)]
    unsafe fn row(&self, t: usize) -> [__m512; V] {
        // SAFETY: the caller's: row t of B holds V vectors.
        unsafe {
            let p = self.b.add(t * self.ldb);
            std::array::from_fn(|j| _mm512_loadu_ps(p.add(16 * j)))
        }
    }

    fn stores(&self) -> [u16; V] {
        [u16::MAX; V]
    }
}

/// Masked stores are slow (AMD Zen 4): only where a vector ends the row.
#[inline(always)]
pub(super) unsafe fn store(dst: *mut f32, lanes: u16, v: __m512) {
    // SAFETY: the caller's.
    unsafe {
        if lanes == u16::MAX {
            _mm512_storeu_ps(dst, v)
        } else {
            _mm512_mask_storeu_ps(dst, lanes, v)
        }
    }
}

/// R rows of C (at `c`, row stride `ldc`) = the sum over t < `len` of A's rows (at `a`, row
/// stride `lda`) times B's row t.
#[inline(always)]
unsafe fn tile<const V: usize, const R: usize, S: Rows<V>>(
    src: &S,
    len: usize,
    a: *const f32,
    lda: usize,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: the caller's (see the row functions below).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for t in 0..len {
            let x = src.row(t);
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*a.add(r * lda + t));
                for j in 0..V {
                    acc[j] = _mm512_fmadd_ps(w, x[j], acc[j]);
                }
            }
        }
        let stores = src.stores();
        for (r, acc) in acc.iter().enumerate() {
            for j in 0..V {
                store(c.add(r * ldc + 16 * j), stores[j], acc[j]);
            }
        }
    }
}

/// `rows_V(src, len, a, lda, c, ldc, count)`: `count` rows of C, V vectors wide, in tiles of R
/// rows (as many as the registers hold with V vectors), then one tile of the rest.
///
/// # Safety
/// The CPU has AVX-512F; A holds `count` rows of `len` elements, C `count` rows of V vectors
/// (less the lanes `src` does not store), and `src` the rows 0..len.
macro_rules! rows {
    ($name:ident, $v:literal, $r:literal, $($rest:literal)*) => {
        #[inline(always)]
        pub(super) unsafe fn $name<S: Rows<$v>>(
            src: &S,
            len: usize,
            a: *const f32,
            lda: usize,
            c: *mut f32,
            ldc: usize,
            count: usize,
        ) {
            let mut r = 0;
            // SAFETY: the caller's; each tile's rows lie below count.
            unsafe {
                while r + $r <= count {
                    tile::<$v, $r, S>(src, len, a.add(r * lda), lda, c.add(r * ldc), ldc);
                    r += $r;
                }
                let (a, c) = (a.add(r * lda), c.add(r * ldc));
                match count - r {
                    $($rest => tile::<$v, $rest, S>(src, len, a, lda, c, ldc),)*
                    _ => {}
                }
            }
        }
    };
}

rows!(rows_4, 4, 5, 1 2 3 4);
rows!(rows_3, 3, 7, 1 2 3 4 5 6);
rows!(rows_2, 2, 12, 1 2 3 4 5 6 7 8 9 10 11);
rows!(rows_1, 1, 12, 1 2 3 4 5 6 7 8 9 10 11);

/// C = A B for C of `rows` x `width` (a multiple of 16), A of rows x `len` and B of len x width,
/// each given as (first element, row stride).
///
/// # Safety
/// The CPU has AVX-512F; the operands hold their elements at their strides.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn product(
    (a, lda): (*const f32, usize),
    (b, ldb): (*const f32, usize),
    (c, ldc): (*mut f32, usize),
    (rows, width, len): (usize, usize, usize),
) {
    assert!(
        width.is_multiple_of(16),
        "tiles: C's width must be whole vectors"
    );
    let mut v0 = 0;
    while v0 < width / 16 {
        let v = (width / 16 - v0).min(4);
        // SAFETY: the caller's; vectors v0..v0 + v of B's and C's rows.
        unsafe {
            let (src, c) = (
                Loaded {
                    b: b.add(16 * v0),
                    ldb,
                },
                c.add(16 * v0),
            );
            match v {
                4 => rows_4(&src, len, a, lda, c, ldc, rows),
                3 => rows_3(&src, len, a, lda, c, ldc, rows),
                2 => rows_2(&src, len, a, lda, c, ldc, rows),
                _ => rows_1(&src, len, a, lda, c, ldc, rows),
            }
        }
        v0 += v;
    }
}

/// dst[c][r] = alpha * src[r][c] + beta * dst[c][r] (beta 0: dst is not read) for r < `rows`
/// and c < `cols`; `src` and `dst` as (first element, row stride). Sixteen rows of src at a
/// time, each row read in order by one lane of a gather.
///
/// # Safety
/// The CPU has AVX-512F; the operands hold their elements at their strides, and 16 times src's
/// row stride fits an i32.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose(
    (src, lds): (*const f32, usize),
    (dst, ldd): (*mut f32, usize),
    (rows, cols): (usize, usize),
    (alpha, beta): (f32, f32),
) {
    let step = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(lds as i32),
    );
    let (alpha, beta_v) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    for r0 in (0..rows).step_by(16) {
        let lanes = ((1u32 << (rows - r0).min(16)) - 1) as u16;
        for c in 0..cols {
            // SAFETY: the caller's; the mask keeps the gather and the store to rows < `rows`.
            unsafe {
                let first = src.add(r0 * lds + c);
                let v =
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), lanes, step, first.cast());
                let at = dst.add(c * ldd + r0);
                let mut v = _mm512_mul_ps(alpha, v);
                if beta != 0.0 {
                    v = _mm512_fmadd_ps(beta_v, _mm512_maskz_loadu_ps(lanes, at), v);
                }
                store(at, lanes, v);
            }
        }
    }
}
