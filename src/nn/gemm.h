/* The two products of a linear layer that multiply the long operand (every
 * real position of a batch) by the weight matrix, row-major, for narrow
 * weights of a few hundred floats a side. At K = 64, OpenBLAS spends about
 * a fifth of such a product copying the long operand into its packed
 * layout and clearing C; these kernels read it in place, pack only the
 * weight (a few KB), and start from the bias or C in registers. Larger
 * weights go to BLAS, as does the weight gradient (a long sum over rows,
 * where BLAS is as fast).
 *
 * Every output element is one sum over k in increasing order, whatever the
 * thread count, so results are deterministic and do not depend on it. */
#ifndef BR_NN_GEMM_H
#define BR_NN_GEMM_H

/* y[T x N] = x[T x K] W[N x K]^T (+ b[N] on every row, when b is given). */
void br_gemm_xwt(float *y, const float *x, const float *W, const float *b, int T, int K,
                 int N);

/* c[T x N] = a[T x K] w[K x N], or c += it when accumulate is set. */
void br_gemm_nn(float *c, const float *a, const float *w, int T, int K, int N, int accumulate);

#endif
