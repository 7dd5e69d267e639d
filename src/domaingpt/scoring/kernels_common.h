/* Helpers of the native kernels (x86-64 with AVX2 and FMA): vector helpers, the register
 * tile of the attention products, and the GELU of a vector. Included by cpu_kernels.c;
 * static, so the library exports only the dg_ functions.
 */
#ifndef DG_KERNELS_COMMON_H
#define DG_KERNELS_COMMON_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 (larger x is not needed here): Cephes' single-precision polynomial,
 * branch-free; relative error ~1e-7. Inputs below -87 give exp(-87) ~ 1.6e-38. */
static inline __m256 exp_nonpositive(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* Flush denormals to zero while a kernel runs (FTZ and DAZ in this thread's MXCSR): a
 * sharp softmax makes probabilities near 1e-38, and arithmetic on the denormals their
 * products become costs ~100 cycles an instruction; the values lost are below 1.2e-38. */
static inline unsigned int flush_denormals(void) {
    const unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040);
    return old;
}

static inline float sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

static inline float max8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

/* Lanes [0, n) of x kept, the rest zeroed (0 <= n <= 8). */
static inline __m256 keep_first(__m256 x, int n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane)));
}

/* --- the attention tile ------------------------------------------------------------------ */

#define ROWS 4 /* query rows per tile: 4 rows x 16 columns = 8 accumulators */

/* kt (hs x ldk) = k^T for T rows of k (row stride ld); columns T..ldk-1 zeroed. */
static void transpose_keys(const float *k, int ld, int T, int hs, int ldk, float *kt) {
    int j0 = 0;
    for (; j0 + 8 <= T; j0 += 8)
        for (int d0 = 0; d0 < hs; d0 += 8) {
            __m256 r[8], t[8], s[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(k + (j0 + i) * ld + d0);
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
                s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
                s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
            float *o = kt + d0 * ldk + j0;
            for (int i = 0; i < 4; i++) {
                _mm256_storeu_ps(o + i * ldk, _mm256_permute2f128_ps(s[i], s[i + 4], 0x20));
                _mm256_storeu_ps(o + (i + 4) * ldk, _mm256_permute2f128_ps(s[i], s[i + 4], 0x31));
            }
        }
    for (int j = j0; j < ldk; j++)
        for (int d = 0; d < hs; d++) kt[d * ldk + j] = j < T ? k[j * ld + d] : 0.0f;
}

/* acc[r] = sum over k < K of a[r][k] * b[k * ldb .. k * ldb + 16), for ROWS rows a[r]:
 * the register tile (4 rows x 16 columns = 8 accumulators) of both attention products. */
static inline void tile_x16(const float *const a[ROWS], const float *b, int ldb, int K,
                            __m256 acc[ROWS][2]) {
    for (int r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        const __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
        for (int r = 0; r < ROWS; r++) {
            const __m256 x = _mm256_broadcast_ss(a[r] + k);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
}

/* The largest of the n floats at l (n >= 1). */
static inline float row_max(const float *l, int n) {
    __m256 vm = _mm256_set1_ps(l[0]);
    int c = 0;
    for (; c + 8 <= n; c += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(l + c));
    float mx = max8(vm);
    for (int i = c; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    return mx;
}

/* erf(x / sqrt 2) from Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, as oneDNN's
 * gelu_erf); *gauss = exp(-x^2 / 2), the intermediate it is computed from. */
static inline __m256 erf_sqrt2_8(__m256 x, __m256 *gauss) {
    const __m256 s = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
    const __m256 sign = _mm256_and_ps(s, _mm256_set1_ps(-0.0f));
    const __m256 a = _mm256_xor_ps(s, sign);
    const __m256 t = _mm256_div_ps(
        _mm256_set1_ps(1.0f), _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
    __m256 poly = _mm256_set1_ps(1.061405429f);
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
    poly = _mm256_mul_ps(poly, t);
    *gauss = exp_nonpositive(_mm256_mul_ps(_mm256_xor_ps(a, _mm256_set1_ps(-0.0f)), a));
    return _mm256_xor_ps(_mm256_fnmadd_ps(poly, *gauss, _mm256_set1_ps(1.0f)), sign);
}

/* Exact (erf) GELU, 0.5 x (1 + erf(x / sqrt 2)). */
static inline __m256 gelu8(__m256 x) {
    __m256 gauss;
    const __m256 erf = erf_sqrt2_8(x, &gauss);
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)),
                         _mm256_add_ps(erf, _mm256_set1_ps(1.0f)));
}

#endif
