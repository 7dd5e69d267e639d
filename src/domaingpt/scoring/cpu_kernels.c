/* Native CPU kernels for domaingpt's scoring engine (x86-64 with AVX2 and FMA).
 *
 * Compiled on first use by domaingpt/native.py (cached per machine) and called through
 * ctypes, which releases the GIL: each function is single-threaded, and the engine
 * (domaingpt/cpu_scoring.py) runs one worker per core. All buffers are float32,
 * row-major and contiguous. Why these four: at the shapes of a small character model
 * (block 64, head size 32), PyTorch's eager CPU ops for them cost as much as a third of
 * a forward pass, while the matmuls themselves already run near the machine's rate.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

int dg_abi_version(void) { return 2; }

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

/* --- causal self-attention ----------------------------------------------------------- */

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

/* One head of one window: q (T x hs, pre-scaled) and v (T x hs) with row stride ld,
 * kt = k^T (hs x ldk); writes y (T x hs, row stride ld). p: ROWS x ldk scratch. */
static void attend_head(const float *q, const float *kt, const float *v, float *y, int T,
                        int ld, int hs, int ldk, float *p) {
    for (int i0 = 0; i0 < T; i0 += ROWS) {
        const int rows = T - i0 < ROWS ? T - i0 : ROWS;
        const int n = i0 + rows; /* keys visible to the tile's last row */
        const float *qr[ROWS];
        for (int r = 0; r < ROWS; r++) qr[r] = q + (i0 + (r < rows ? r : 0)) * ld;

        /* scores: p[r][j] = q_r . k_j for j < n (rounded up to 16) */
        for (int j0 = 0; j0 < n; j0 += 16) {
            __m256 a[ROWS][2];
            tile_x16(qr, kt + j0, ldk, hs, a);
            for (int r = 0; r < ROWS; r++) {
                _mm256_storeu_ps(p + r * ldk + j0, a[r][0]);
                _mm256_storeu_ps(p + r * ldk + j0 + 8, a[r][1]);
            }
        }

        /* softmax over the keys each row may see (row i0 + r sees m = i0 + r + 1);
         * the rest of the row is zeroed so the value pass can run to n for all rows */
        float inv[ROWS];
        const int nb = (n + 7) & ~7;
        for (int r = 0; r < ROWS; r++) {
            float *pr = p + r * ldk;
            if (r >= rows) {
                memset(pr, 0, sizeof(float) * nb);
                inv[r] = 0.0f;
                continue;
            }
            const int m = i0 + r + 1;
            __m256 vm = _mm256_set1_ps(pr[0]);
            int j = 0;
            for (; j + 8 <= m; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(pr + j));
            float mx = max8(vm);
            for (; j < m; j++) mx = pr[j] > mx ? pr[j] : mx;
            const __m256 shift = _mm256_set1_ps(mx);
            __m256 sum = _mm256_setzero_ps();
            for (j = 0; j < nb; j += 8) {
                __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(pr + j), shift));
                if (j + 8 > m) e = keep_first(e, m - j);
                _mm256_storeu_ps(pr + j, e);
                sum = _mm256_add_ps(sum, e);
            }
            inv[r] = 1.0f / sum8(sum);
        }

        /* values: y_r = sum_j p[r][j] v_j / sum_j p[r][j], 16 columns at a time */
        const float *prow[ROWS];
        for (int r = 0; r < ROWS; r++) prow[r] = p + r * ldk;
        for (int c = 0; c < hs; c += 16) {
            __m256 a[ROWS][2];
            tile_x16(prow, v + c, ld, n, a);
            for (int r = 0; r < rows; r++) {
                const __m256 s = _mm256_set1_ps(inv[r]);
                float *yr = y + (i0 + r) * ld + c;
                _mm256_storeu_ps(yr, _mm256_mul_ps(a[r][0], s));
                _mm256_storeu_ps(yr + 8, _mm256_mul_ps(a[r][1], s));
            }
        }
    }
}

/* Floats of scratch space dg_causal_attention needs for windows of T positions, C columns. */
long dg_attention_scratch(int T, int C) {
    const long ldk = (T + 15) & ~15;
    return 3 * ldk * C + ROWS * ldk;
}

/* y (B x T x C) = causal softmax attention of the q, k, v packed in qkv (B x T x 3C, the
 * layout of the model's fused qkv projection), H heads of C / H columns, scale
 * 1/sqrt(C / H): what F.scaled_dot_product_attention(is_causal=True) computes.
 * scratch: dg_attention_scratch(T, C) floats. Returns 0, or 1 if C / H is not a
 * multiple of 16. */
int dg_causal_attention(const float *qkv, float *y, long B, int T, int C, int H,
                        float *scratch) {
    if (H < 1 || C % H || (C / H) % 16 || T < 1) return 1;
    const int hs = C / H, ldk = (T + 15) & ~15;
    /* one window at a time, read row by row: q (scaled) and v copied, k transposed */
    float *q = scratch, *v = q + (size_t)ldk * C, *kt = v + (size_t)ldk * C;
    float *p = kt + (size_t)ldk * C;
    const __m256 scale = _mm256_set1_ps(1.0f / sqrtf((float)hs));
    const unsigned int mxcsr = flush_denormals();
    for (long b = 0; b < B; b++) {
        const float *x = qkv + b * T * 3 * C;
        for (int j = 0; j < T; j++)
            for (int c = 0; c < C; c += 8) {
                const float *row = x + (long)j * 3 * C + c;
                _mm256_storeu_ps(q + j * C + c, _mm256_mul_ps(_mm256_loadu_ps(row), scale));
                _mm256_storeu_ps(v + j * C + c, _mm256_loadu_ps(row + 2 * C));
            }
        for (int h = 0; h < H; h++)
            transpose_keys(x + C + h * hs, 3 * C, T, hs, ldk, kt + (size_t)h * hs * ldk);
        for (int h = 0; h < H; h++)
            attend_head(q + h * hs, kt + (size_t)h * hs * ldk, v + h * hs, y + b * T * C + h * hs,
                        T, C, hs, ldk, p);
    }
    _mm_setcsr(mxcsr);
    return 0;
}

/* --- element- and row-wise ops --------------------------------------------------------- */

/* Exact (erf) GELU, 0.5 x (1 + erf(x / sqrt 2)), with erf from Abramowitz & Stegun 7.1.26
 * (absolute error < 1.5e-7, as oneDNN's gelu_erf). */
static inline __m256 gelu8(__m256 x) {
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
    const __m256 e = exp_nonpositive(_mm256_mul_ps(_mm256_xor_ps(a, _mm256_set1_ps(-0.0f)), a));
    const __m256 erf = _mm256_xor_ps(_mm256_fnmadd_ps(poly, e, _mm256_set1_ps(1.0f)), sign);
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)),
                         _mm256_add_ps(erf, _mm256_set1_ps(1.0f)));
}

/* x = GELU(x), in place, n floats. */
void dg_gelu(float *x, long n) {
    const unsigned int mxcsr = flush_denormals();
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float tail[8] = {0};
        memcpy(tail, x + i, sizeof(float) * (n - i));
        _mm256_storeu_ps(tail, gelu8(_mm256_loadu_ps(tail)));
        memcpy(x + i, tail, sizeof(float) * (n - i));
    }
    _mm_setcsr(mxcsr);
}

/* Sum of (x[c] - shift)^power over c < C (C a multiple of 8), power 1 or 2: four
 * accumulators, so a 128-wide row is four short dependency chains, not one long one. */
static inline __m256 moment_term(__m256 x, __m256 shift, __m256 acc, int power) {
    const __m256 d = _mm256_sub_ps(x, shift);
    return power == 1 ? _mm256_add_ps(acc, d) : _mm256_fmadd_ps(d, d, acc);
}

static inline float row_moment(const float *x, int C, __m256 shift, int power) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int c = 0;
    for (; c + 32 <= C; c += 32) {
        a0 = moment_term(_mm256_loadu_ps(x + c), shift, a0, power);
        a1 = moment_term(_mm256_loadu_ps(x + c + 8), shift, a1, power);
        a2 = moment_term(_mm256_loadu_ps(x + c + 16), shift, a2, power);
        a3 = moment_term(_mm256_loadu_ps(x + c + 24), shift, a3, power);
    }
    for (; c < C; c += 8) a0 = moment_term(_mm256_loadu_ps(x + c), shift, a0, power);
    return sum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

/* y = LayerNorm(x) over rows of C (C a multiple of 8): (x - mean) / sqrt(var + eps) * w + b
 * with the biased variance, as torch; b may be NULL. */
void dg_layer_norm(const float *x, const float *w, const float *b, float *y, long rows, int C,
                   float eps) {
    const float inv_c = 1.0f / (float)C;
    const unsigned int mxcsr = flush_denormals();
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * C;
        float *yr = y + r * C;
        const __m256 mean = _mm256_set1_ps(row_moment(xr, C, _mm256_setzero_ps(), 1) * inv_c);
        const __m256 rstd = _mm256_set1_ps(1.0f / sqrtf(row_moment(xr, C, mean, 2) * inv_c + eps));
        for (int c = 0; c < C; c += 8) {
            const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(xr + c), mean);
            __m256 o = _mm256_mul_ps(_mm256_mul_ps(d, rstd), _mm256_loadu_ps(w + c));
            if (b) o = _mm256_add_ps(o, _mm256_loadu_ps(b + c));
            _mm256_storeu_ps(yr + c, o);
        }
    }
    _mm_setcsr(mxcsr);
}

/* nll[r] = logsumexp(logits[r]) - logits[r][target[r]]: per-token cross-entropy in nats,
 * one pass over each row of V logits instead of log_softmax's full output. */
void dg_token_nll(const float *logits, const int64_t *target, float *nll, long rows, int V) {
    const unsigned int mxcsr = flush_denormals();
    for (long r = 0; r < rows; r++) {
        const float *l = logits + r * V;
        __m256 vm = _mm256_set1_ps(l[0]);
        int c = 0;
        for (; c + 8 <= V; c += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(l + c));
        float mx = max8(vm);
        for (int i = c; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        const __m256 shift = _mm256_set1_ps(mx);
        __m256 sum = _mm256_setzero_ps();
        for (c = 0; c + 8 <= V; c += 8)
            sum = _mm256_add_ps(sum, exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(l + c), shift)));
        if (c < V) {
            float tail[8];
            for (int i = 0; i < 8; i++) tail[i] = c + i < V ? l[c + i] - mx : 0.0f;
            sum = _mm256_add_ps(sum, keep_first(exp_nonpositive(_mm256_loadu_ps(tail)), V - c));
        }
        nll[r] = logf(sum8(sum)) + mx - l[target[r]];
    }
    _mm_setcsr(mxcsr);
}
