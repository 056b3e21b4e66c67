#include <cblas.h>
#include <stddef.h>
#include <string.h>

#include "nn/gemm.h"

/* Register tile: MR rows of C by NR columns (two 8-float vectors each), 12
 * accumulators of the 16 AVX registers. A chunk of rows of the long operand
 * of at most CHUNK_FLOATS (24 KB: 96 rows at K = 64) stays in L1 while every
 * column block reads it. The tile sizes suit AVX2 with FMA, which the build
 * requires. */
#define MR 6
#define NR 16
#define CHUNK_FLOATS 6144
/* Weight panels are packed on the stack (xwt) or read in place (nn) and
 * must stay in L2: past these sizes, BLAS blocks better. */
#define PACK_MAX 16384
#define INPLACE_MAX 65536

/* BLAS for the shapes these kernels are not for. */
static void blas_xwt(float *y, const float *x, const float *W, const float *b, int T, int K,
                     int N) {
    if (b) {
#pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * N, b, (size_t)N * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, x, K, W, K,
                b ? 1.0f : 0.0f, y, N);
}

static void blas_nn(float *c, const float *a, const float *w, int T, int K, int N,
                    int accumulate) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, N, K, 1.0f, a, K, w, N,
                accumulate ? 1.0f : 0.0f, c, N);
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

typedef enum { START_ZERO, START_ROW, START_C } start_from;

/* C[r, j] = start + sum_k A[r, k] B[k, j] for r < mr, j < NR (full) or the
 * lanes set in m0/m1, with A's rows lda apart and B's row k at b + k * ldb.
 * start: 0, the row vector `row`, or C itself. Instantiated with literal mr
 * and full; the accumulators are named variables, not an array, which GCC
 * would keep on the stack. */
#define LOAD8(p, m) (full ? _mm256_loadu_ps(p) : _mm256_maskload_ps((p), (m)))
#define STORE8(p, m, v)                                                                      \
    do {                                                                                     \
        if (full) _mm256_storeu_ps((p), (v));                                                \
        else _mm256_maskstore_ps((p), (m), (v));                                             \
    } while (0)
#define ROW_INIT(r)                                                                          \
    if (mr > r) {                                                                            \
        if (start == START_C) {                                                              \
            c##r##0 = LOAD8(c + r * ldc, m0);                                                \
            c##r##1 = LOAD8(c + r * ldc + 8, m1);                                            \
        } else {                                                                             \
            c##r##0 = s0;                                                                    \
            c##r##1 = s1;                                                                    \
        }                                                                                    \
    }
#define ROW_STEP(r)                                                                          \
    if (mr > r) {                                                                            \
        const __m256 av = _mm256_broadcast_ss(ak + r * lda);                                 \
        c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                                          \
        c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);                                          \
    }
#define ROW_STORE(r)                                                                         \
    if (mr > r) {                                                                            \
        STORE8(c + r * ldc, m0, c##r##0);                                                    \
        STORE8(c + r * ldc + 8, m1, c##r##1);                                                \
    }
#define ALL_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

static inline __attribute__((always_inline)) void micro(const int mr, const int full, __m256i m0,
                                                        __m256i m1, int K, const float *a,
                                                        ptrdiff_t lda, const float *b,
                                                        ptrdiff_t ldb, float *c, ptrdiff_t ldc,
                                                        start_from start, const float *row) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    if (start == START_ROW) {
        s0 = LOAD8(row, m0);
        s1 = LOAD8(row + 8, m1);
    }
    __m256 c00 = s0, c01 = s0, c10 = s0, c11 = s0, c20 = s0, c21 = s0, c30 = s0, c31 = s0,
           c40 = s0, c41 = s0, c50 = s0, c51 = s0;
    ALL_ROWS(ROW_INIT)
    for (int k = 0; k < K; k++) {
        const float *bk = b + k * ldb, *ak = a + k;
        const __m256 b0 = LOAD8(bk, m0), b1 = LOAD8(bk + 8, m1);
        ALL_ROWS(ROW_STEP)
    }
    ALL_ROWS(ROW_STORE)
}
#undef ALL_ROWS
#undef ROW_STORE
#undef ROW_STEP
#undef ROW_INIT
#undef STORE8
#undef LOAD8

#define MICRO_ROWS(full)                                                                     \
    switch (mr) {                                                                            \
    case 6: micro(6, full, m0, m1, K, a, lda, b, ldb, c, ldc, start, row); break;            \
    case 5: micro(5, full, m0, m1, K, a, lda, b, ldb, c, ldc, start, row); break;            \
    case 4: micro(4, full, m0, m1, K, a, lda, b, ldb, c, ldc, start, row); break;            \
    case 3: micro(3, full, m0, m1, K, a, lda, b, ldb, c, ldc, start, row); break;            \
    case 2: micro(2, full, m0, m1, K, a, lda, b, ldb, c, ldc, start, row); break;            \
    default: micro(1, full, m0, m1, K, a, lda, b, ldb, c, ldc, start, row); break;           \
    }

/* One mr x nr tile (mr <= MR, nr <= NR) of C. */
static void tile(int mr, int nr, int K, const float *a, ptrdiff_t lda, const float *b,
                 ptrdiff_t ldb, float *c, ptrdiff_t ldc, start_from start, const float *row) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), lane);
    if (nr == NR) {
        MICRO_ROWS(1)
    } else {
        MICRO_ROWS(0)
    }
}
#undef MICRO_ROWS

/* Rows per chunk of the long operand: a multiple of MR. */
static int chunk_rows(int K) {
    const int rows = K > 0 ? CHUNK_FLOATS / K / MR * MR : MR;
    return rows > MR ? rows : MR;
}

/* C[T x N] = start + A[T x K] B[K x N]: B's column block jb (NR columns)
 * starts at b + jb * b_block, its rows ldb apart; row, for START_ROW, is
 * added to every row of C. */
static void rows_times_blocks(float *c, const float *a, const float *b, ptrdiff_t b_block,
                              ptrdiff_t ldb, int T, int K, int N, start_from start,
                              const float *row) {
    const int n_blocks = (N + NR - 1) / NR, mc = chunk_rows(K);
#pragma omp parallel for schedule(static)
    for (int i0 = 0; i0 < T; i0 += mc) {
        const int i1 = T - i0 < mc ? T : i0 + mc;
        for (int jb = 0; jb < n_blocks; jb++) {
            const int nr = N - jb * NR < NR ? N - jb * NR : NR;
            for (int i = i0; i < i1; i += MR)
                tile(i1 - i < MR ? i1 - i : MR, nr, K, a + (size_t)i * K, K, b + jb * b_block,
                     ldb, c + (size_t)i * N + jb * NR, N, start, row ? row + jb * NR : NULL);
        }
    }
}

void br_gemm_xwt(float *y, const float *x, const float *W, const float *b, int T, int K,
                 int N) {
    if (T == 0) return;
    const int n_blocks = (N + NR - 1) / NR;
    if ((long)n_blocks * NR * K > PACK_MAX) {
        blas_xwt(y, x, W, b, T, K, N);
        return;
    }
    /* W^T in column blocks: panel jb holds K rows of NR floats, zero-padded. */
    float panel[PACK_MAX] __attribute__((aligned(32)));
    for (int jb = 0; jb < n_blocks; jb++)
        for (int k = 0; k < K; k++)
            for (int jj = 0; jj < NR; jj++) {
                const int j = jb * NR + jj;
                panel[((size_t)jb * K + k) * NR + jj] = j < N ? W[(size_t)j * K + k] : 0.0f;
            }
    rows_times_blocks(y, x, panel, (ptrdiff_t)K * NR, NR, T, K, N, b ? START_ROW : START_ZERO,
                      b);
}

void br_gemm_nn(float *c, const float *a, const float *w, int T, int K, int N, int accumulate) {
    if (T == 0) return;
    if ((long)K * N > INPLACE_MAX) {
        blas_nn(c, a, w, T, K, N, accumulate);
        return;
    }
    rows_times_blocks(c, a, w, NR, N, T, K, N, accumulate ? START_C : START_ZERO, NULL);
}

#else /* no AVX2/FMA: BLAS for everything */

void br_gemm_xwt(float *y, const float *x, const float *W, const float *b, int T, int K,
                 int N) {
    if (T > 0) blas_xwt(y, x, W, b, T, K, N);
}

void br_gemm_nn(float *c, const float *a, const float *w, int T, int K, int N, int accumulate) {
    if (T > 0) blas_nn(c, a, w, T, K, N, accumulate);
}

#endif
