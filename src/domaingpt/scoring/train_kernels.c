/* Native CPU kernels for training: the backward of cpu_kernels.c's forward pass (x86-64
 * with AVX2 and FMA), for domaingpt/training/native_step.py.
 *
 * Built into the same library as cpu_kernels.c and called the same way (ctypes, one
 * worker per core, float32 row-major buffers). Why these: in a cpu-mini training step on
 * one core, PyTorch's backward of attention (the flash-attention kernel and the cat of
 * its three gradients), GELU and LayerNorm took 17 % of the time, for 3 % of the FLOPs.
 * Every kernel writes each output element once, in a fixed order: results do not depend
 * on anything but the inputs.
 */
#include "kernels_common.h"

/* acc[r] = sum over k < K of a[r][k * sa] * b[k * ldb .. k * ldb + 16): tile_x16 with the
 * rows of a read down a column (stride sa), so no transposed copy is needed. */
static inline void tile_xs16(const float *const a[ROWS], long sa, const float *b, long ldb, int K,
                             __m256 acc[ROWS][2]) {
    for (int r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        const __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
        for (int r = 0; r < ROWS; r++) {
            const __m256 x = _mm256_broadcast_ss(a[r] + k * sa);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
}

static inline void store_x16(float *out, __m256 acc[2]) {
    _mm256_storeu_ps(out, acc[0]);
    _mm256_storeu_ps(out + 8, acc[1]);
}

/* Lanes [0, n) of p[0..8) loaded, the rest zero, never reading past p + n (0 <= n <= 8). */
static inline __m256 load_first(const float *p, int n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
}

/* --- causal self-attention ----------------------------------------------------------- */

/* Floats of scratch space dg_attention_backward needs for windows of T positions. */
long dg_attention_backward_scratch(int T, int C, int H) {
    const long ldk = (T + 15) & ~15;
    return (long)(C / H) * ldk + ldk * ldk;
}

/* The backward of one head of one window, with S = q k^T / sqrt(hs) (causal), P its
 * softmax, y = P v: from dy, dP = dy v^T, dS = P * (dP - rowsum(P * dP)), then
 * dq = dS k / sqrt(hs), dk = dS^T q / sqrt(hs), dv = P^T dy. q, k, v, dq, dk, dv have
 * row stride ld, dy row stride ldy, P is T x T. vt: hs x ldk, ds: T x ldk scratch. */
static void head_backward(const float *q, const float *k, const float *v, const float *P,
                          const float *dy, float *dq, float *dk, float *dv, int T, long ld,
                          long ldy, int hs, int ldk, float *vt, float *ds, float scale) {
    transpose_keys(v, (int)ld, T, hs, ldk, vt);
    for (int i0 = 0; i0 < T; i0 += ROWS) {
        const int rows = T - i0 < ROWS ? T - i0 : ROWS, n = i0 + rows;
        const float *a[ROWS];
        for (int r = 0; r < ROWS; r++) a[r] = dy + (i0 + (r < rows ? r : 0)) * ldy;
        for (int j0 = 0; j0 < n; j0 += 16) { /* dP rows, 16 keys at a time */
            __m256 acc[ROWS][2];
            tile_x16(a, vt + j0, ldk, hs, acc);
            for (int r = 0; r < rows; r++) store_x16(ds + (i0 + r) * ldk + j0, acc[r]);
        }
        const int n16 = (n + 15) & ~15;
        for (int r = 0; r < rows; r++) { /* dS = P (dP - D) scale, zero past the diagonal */
            const int i = i0 + r, m = i + 1;
            const float *pr = P + (long)i * T;
            float *dr = ds + (long)i * ldk;
            __m256 acc = _mm256_setzero_ps();
            for (int j = 0; j < m; j += 8) {
                const int left = m - j < 8 ? m - j : 8;
                acc = _mm256_fmadd_ps(load_first(pr + j, left), load_first(dr + j, left), acc);
            }
            const __m256 d = _mm256_set1_ps(sum8(acc)), s = _mm256_set1_ps(scale);
            int j = 0;
            for (; j < m; j += 8) {
                const int left = m - j < 8 ? m - j : 8;
                const __m256 g = _mm256_sub_ps(load_first(dr + j, left), d);
                _mm256_storeu_ps(dr + j, _mm256_mul_ps(_mm256_mul_ps(load_first(pr + j, left), g), s));
            }
            for (; j < n16; j += 8) _mm256_storeu_ps(dr + j, _mm256_setzero_ps());
        }
        const float *dsr[ROWS];
        for (int r = 0; r < ROWS; r++) dsr[r] = ds + (i0 + (r < rows ? r : 0)) * ldk;
        for (int c = 0; c < hs; c += 16) { /* dq = dS k (the scale is in dS) */
            __m256 acc[ROWS][2];
            tile_x16(dsr, k + c, (int)ld, n, acc);
            for (int r = 0; r < rows; r++) store_x16(dq + (i0 + r) * ld + c, acc[r]);
        }
    }
    for (int j0 = 0; j0 < T; j0 += ROWS) { /* dk = dS^T q, dv = P^T dy: rows i >= j0 only */
        const int rows = T - j0 < ROWS ? T - j0 : ROWS;
        const float *as[ROWS], *ap[ROWS];
        for (int r = 0; r < ROWS; r++) {
            const int j = j0 + (r < rows ? r : 0);
            as[r] = ds + (long)j0 * ldk + j;
            ap[r] = P + (long)j0 * T + j;
        }
        for (int c = 0; c < hs; c += 16) {
            __m256 acc[ROWS][2];
            tile_xs16(as, ldk, q + j0 * ld + c, ld, T - j0, acc);
            for (int r = 0; r < rows; r++) store_x16(dk + (j0 + r) * ld + c, acc[r]);
            tile_xs16(ap, T, dy + j0 * ldy + c, ldy, T - j0, acc);
            for (int r = 0; r < rows; r++) store_x16(dv + (j0 + r) * ld + c, acc[r]);
        }
    }
}

/* dqkv (B x T x 3C, the layout of qkv) = the gradient of dg_attention_train's output y
 * given dy (B x T x C), from its input qkv and probabilities P (B x H x T x T). scratch:
 * dg_attention_backward_scratch(T, C, H) floats. Returns 0, or 1 if C / H is not a
 * multiple of 16. */
int dg_attention_backward(const float *qkv, const float *P, const float *dy, float *dqkv, long B,
                          int T, int C, int H, float *scratch) {
    if (H < 1 || C % H || (C / H) % 16 || T < 1) return 1;
    const int hs = C / H, ldk = (T + 15) & ~15;
    float *vt = scratch, *ds = vt + (long)hs * ldk;
    const float scale = 1.0f / sqrtf((float)hs);
    const unsigned int mxcsr = flush_denormals();
    for (long b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *q = qkv + b * T * 3 * C + h * hs;
            float *dq = dqkv + b * T * 3 * C + h * hs;
            head_backward(q, q + C, q + 2 * C, P + ((size_t)b * H + h) * T * T,
                          dy + b * T * C + h * hs, dq, dq + C, dq + 2 * C, T, 3 * C, C, hs, ldk,
                          vt, ds, scale);
        }
    _mm_setcsr(mxcsr);
    return 0;
}

/* --- element- and row-wise ops --------------------------------------------------------- */

/* GELU'(x) = Phi(x) + x phi(x), with the erf of gelu8 (Abramowitz & Stegun 7.1.26). */
static inline __m256 gelu_grad8(__m256 x) {
    __m256 e;
    const __m256 erf = erf_sqrt2_8(x, &e);
    const __m256 cdf = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(erf, _mm256_set1_ps(1.0f)));
    const __m256 pdf = _mm256_mul_ps(e, _mm256_set1_ps(0.39894228040143268f)); /* 1/sqrt(2 pi) */
    return _mm256_fmadd_ps(x, pdf, cdf);
}

/* d *= GELU'(x), n floats: the gradient at GELU's input from the one at its output. */
void dg_gelu_backward(const float *x, float *d, long n) {
    const unsigned int mxcsr = flush_denormals();
    long i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_loadu_ps(d + i), gelu_grad8(_mm256_loadu_ps(x + i))));
    for (; i < n; i++) {
        float tx[8] = {0}, g[8];
        tx[0] = x[i];
        _mm256_storeu_ps(g, gelu_grad8(_mm256_loadu_ps(tx)));
        d[i] *= g[0];
    }
    _mm_setcsr(mxcsr);
}

/* The backward of dg_layer_norm_train over rows of C (a multiple of 8), with xhat =
 * (x - mean) rstd and g = dy w: dx += rstd (g - mean(g) - xhat mean(g xhat)) (added to
 * dx: the residual stream's gradient), dw += sum over rows of dy xhat, db += sum of dy
 * (db may be NULL). */
void dg_layer_norm_backward(const float *x, const float *w, const float *mean, const float *rstd,
                            const float *dy, float *dx, float *dw, float *db, long rows, int C) {
    const float inv_c = 1.0f / (float)C;
    const unsigned int mxcsr = flush_denormals();
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * C, *dyr = dy + r * C;
        float *dxr = dx + r * C;
        const __m256 mu = _mm256_set1_ps(mean[r]), rs = _mm256_set1_ps(rstd[r]);
        __m256 s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps();
        for (int c = 0; c < C; c += 8) {
            const __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + c), mu), rs);
            const __m256 dyc = _mm256_loadu_ps(dyr + c);
            const __m256 g = _mm256_mul_ps(dyc, _mm256_loadu_ps(w + c));
            s1 = _mm256_add_ps(s1, g);
            s2 = _mm256_fmadd_ps(g, xh, s2);
            _mm256_storeu_ps(dw + c, _mm256_fmadd_ps(dyc, xh, _mm256_loadu_ps(dw + c)));
            if (db) _mm256_storeu_ps(db + c, _mm256_add_ps(dyc, _mm256_loadu_ps(db + c)));
        }
        const __m256 m1 = _mm256_set1_ps(sum8(s1) * inv_c), m2 = _mm256_set1_ps(sum8(s2) * inv_c);
        for (int c = 0; c < C; c += 8) {
            const __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + c), mu), rs);
            const __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dyr + c), _mm256_loadu_ps(w + c));
            const __m256 inner = _mm256_sub_ps(_mm256_sub_ps(g, m1), _mm256_mul_ps(xh, m2));
            _mm256_storeu_ps(dxr + c, _mm256_fmadd_ps(rs, inner, _mm256_loadu_ps(dxr + c)));
        }
    }
    _mm_setcsr(mxcsr);
}

/* Cross-entropy and its gradient in one pass per row of V logits: nll[r] =
 * logsumexp(l) - l[target], and l is replaced by (softmax(l) - onehot(target)) * scale,
 * the gradient of scale * nll[r]. */
void dg_cross_entropy_backward(float *logits, const int64_t *target, float *nll, long rows, int V,
                               float scale) {
    const unsigned int mxcsr = flush_denormals();
    for (long r = 0; r < rows; r++) {
        float *l = logits + r * V;
        const float at_target = l[target[r]];
        const float mx = row_max(l, V);
        const __m256 shift = _mm256_set1_ps(mx);
        int c;
        __m256 sum = _mm256_setzero_ps();
        for (c = 0; c + 8 <= V; c += 8) {
            const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(l + c), shift));
            _mm256_storeu_ps(l + c, e);
            sum = _mm256_add_ps(sum, e);
        }
        if (c < V) {
            float tail[8];
            for (int i = 0; i < 8; i++) tail[i] = c + i < V ? l[c + i] - mx : 0.0f;
            const __m256 e = keep_first(exp_nonpositive(_mm256_loadu_ps(tail)), V - c);
            _mm256_storeu_ps(tail, e);
            sum = _mm256_add_ps(sum, e);
            for (int i = 0; c + i < V; i++) l[c + i] = tail[i];
        }
        const float total = sum8(sum);
        nll[r] = logf(total) + mx - at_target;
        const __m256 k = _mm256_set1_ps(scale / total);
        for (c = 0; c + 8 <= V; c += 8) _mm256_storeu_ps(l + c, _mm256_mul_ps(_mm256_loadu_ps(l + c), k));
        for (; c < V; c++) l[c] *= scale / total;
        l[target[r]] -= scale;
    }
    _mm_setcsr(mxcsr);
}
