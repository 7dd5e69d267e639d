/* Native CPU kernels for domaingpt's scoring engine (x86-64 with AVX2 and FMA): the
 * forward pass.
 *
 * Compiled on first use by domaingpt/native.py (cached per machine) and called through
 * ctypes, which releases the GIL: each function is single-threaded, and the engine
 * (domaingpt/cpu_scoring.py) runs one worker per core. All buffers are float32,
 * row-major and contiguous. Why these four: at the shapes of a small character model
 * (block 64, head size 32), PyTorch's eager CPU ops for them cost as much as a third of
 * a forward pass, while the matmuls themselves already run near the machine's rate.
 */
#include "kernels_common.h"

int dg_abi_version(void) { return 4; }

/* --- causal self-attention ----------------------------------------------------------- */

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
        const float mx = row_max(l, V);
        const __m256 shift = _mm256_set1_ps(mx);
        int c;
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
