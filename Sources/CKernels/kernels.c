#include "kernels.h"
#include <float.h>
#include <math.h>

#define MV __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define LANES 16

MV int aet_adam(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, long n,
                float shrink, float l2, float one_minus_b1, float b2, float one_minus_b2, float step_size,
                float bc2_sqrt, float eps) {
    int bad = 0;
    for (long i = 0; i < n; i++) {
        float g0 = g[i];
        bad |= !(fabsf(g0) <= FLT_MAX); /* Inf or NaN: free here, the loop is bound by sqrt/div */
        float pi = p[i] * shrink;
        float gi = g0 + l2 * pi;
        float mi = m[i] + one_minus_b1 * (gi - m[i]);
        float vi = v[i] * b2 + one_minus_b2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
    return bad;
}

/* One element of the Adam step from the summed gradient GSUM (an expression of i). */
#define ADAM_SUM_LOOP(GSUM)                                                        \
    for (long i = 0; i < n; i++) {                                                 \
        float gs_ = GSUM;                                                          \
        bad |= !(fabsf(gs_) <= FLT_MAX);                                           \
        float pi = p[i] * shrink;                                                  \
        float gi = gs_ + l2 * pi;                                                  \
        float mi = m[i] + one_minus_b1 * (gi - m[i]);                              \
        float vi = v[i] * b2 + one_minus_b2 * gi * gi;                             \
        m[i] = mi;                                                                 \
        v[i] = vi;                                                                 \
        float pn = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);             \
        p[i] = pn;                                                                 \
        if (pub) pub[i] = pn;                                                      \
    }

#define ADAM_BLOCK 512
MV int aet_adam_sum(float *restrict p, float *restrict pub, const float *const *gs, int ng, float *restrict m, float *restrict v, long n,
                    float shrink, float l2, float one_minus_b1, float b2, float one_minus_b2, float step_size,
                    float bc2_sqrt, float eps) {
    int bad = 0;
    /* Up to 4 sources: one fused pass. More: the sum is built per block in a stack buffer first.
       Either way the order is ((g0 + g1) + g2) + ... */
    const float *restrict a = gs[0], *restrict b = ng > 1 ? gs[1] : a, *restrict c = ng > 2 ? gs[2] : a,
                *restrict d = ng > 3 ? gs[3] : a;
    switch (ng) {
    case 1: ADAM_SUM_LOOP(a[i]) return bad;
    case 2: ADAM_SUM_LOOP(a[i] + b[i]) return bad;
    case 3: ADAM_SUM_LOOP((a[i] + b[i]) + c[i]) return bad;
    case 4: ADAM_SUM_LOOP(((a[i] + b[i]) + c[i]) + d[i]) return bad;
    default: break;
    }
    float g[ADAM_BLOCK] __attribute__((aligned(64)));
    for (long blk = 0; blk < n; blk += ADAM_BLOCK) {
        long len = n - blk < ADAM_BLOCK ? n - blk : ADAM_BLOCK;
        const float *restrict g0 = gs[0] + blk;
        for (long i = 0; i < len; i++) g[i] = g0[i];
        for (int r = 1; r < ng; r++) {
            const float *restrict gr = gs[r] + blk;
            for (long i = 0; i < len; i++) g[i] += gr[i];
        }
        bad |= aet_adam_sum(p + blk, pub ? pub + blk : 0, (const float *const[]){g}, 1, m + blk, v + blk, len, shrink, l2,
                            one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps);
    }
    return bad;
}

static inline float sigm(float z) { return 1.0f / (1.0f + expf(-z)); }

/* Reductions keep LANES partial sums so that the loop vectorises without reassociation flags;
   the result is still deterministic for a given n. */
#define REDUCE_LOOP(BODY)                                   \
    float acc[LANES] = {0};                                 \
    long i = 0;                                             \
    for (; i + LANES <= n; i += LANES) {                    \
        for (int l = 0; l < LANES; l++) { long k = i + l; BODY; acc[l] += term; } \
    }                                                       \
    double total = 0;                                       \
    for (; i < n; i++) { long k = i; BODY; total += term; } \
    for (int l = 0; l < LANES; l++) total += acc[l];        \
    return total;

MV double aet_head_mse(const float *restrict z, float *restrict y, const float *restrict x, float *restrict dz, long n, float g) {
    if (dz) {
        REDUCE_LOOP(float yk = sigm(z[k]); y[k] = yk; float e = yk - x[k]; dz[k] = 2.0f * e * yk * (1.0f - yk) * g; float term = e * e)
    } else {
        REDUCE_LOOP(float yk = sigm(z[k]); y[k] = yk; float e = yk - x[k]; float term = e * e)
    }
}

MV double aet_head_bce(const float *restrict z, float *restrict y, const float *restrict x, float *restrict dz, long n, float g) {
    if (dz) {
        REDUCE_LOOP(float zk = z[k]; float yk = sigm(zk); y[k] = yk; dz[k] = (yk - x[k]) * g;
                    float term = fmaxf(zk, 0.0f) - zk * x[k] + logf(1.0f + expf(-fabsf(zk))))
    } else {
        REDUCE_LOOP(float zk = z[k]; float yk = sigm(zk); y[k] = yk;
                    float term = fmaxf(zk, 0.0f) - zk * x[k] + logf(1.0f + expf(-fabsf(zk))))
    }
}

MV double aet_head_l1(const float *restrict z, float *restrict y, const float *restrict x, float *restrict dz, long n, float g) {
    if (dz) {
        REDUCE_LOOP(float yk = sigm(z[k]); y[k] = yk; float e = yk - x[k];
                    float s = e > 0.0f ? 1.0f : (e < 0.0f ? -1.0f : 0.0f); dz[k] = s * yk * (1.0f - yk) * g;
                    float term = fabsf(e))
    } else {
        REDUCE_LOOP(float yk = sigm(z[k]); y[k] = yk; float e = yk - x[k]; float term = fabsf(e))
    }
}

MV void aet_eval_sums(const float *restrict z, float *restrict y, const float *restrict x, long n, double *sse, double *bce) {
    float a[LANES] = {0}, b[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES) {
        for (int l = 0; l < LANES; l++) {
            long k = i + l;
            float zk = z[k], yk = sigm(zk), e = yk - x[k];
            y[k] = yk;
            a[l] += e * e;
            b[l] += fmaxf(zk, 0.0f) - zk * x[k] + logf(1.0f + expf(-fabsf(zk)));
        }
    }
    double s = 0, c = 0;
    for (; i < n; i++) {
        float zk = z[i], yk = sigm(zk), e = yk - x[i];
        y[i] = yk;
        s += e * e;
        c += fmaxf(zk, 0.0f) - zk * x[i] + logf(1.0f + expf(-fabsf(zk)));
    }
    for (int l = 0; l < LANES; l++) { s += a[l]; c += b[l]; }
    *sse = s;
    *bce = c;
}

MV int aet_all_finite(const float *restrict a, long n) {
    /* Exponent bits all ones = Inf or NaN. Integer OR has no add-latency chain, so this runs at
       load speed. */
    const uint32_t *restrict u = (const uint32_t *)a;
    uint32_t bad = 0;
    for (long i = 0; i < n; i++) bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    return bad == 0;
}

MV void aet_u8_to_float(const uint8_t *restrict src, float *restrict dst, long n, int binarize) {
    if (binarize) {
        for (long i = 0; i < n; i++) dst[i] = src[i] >= 128 ? 1.0f : 0.0f; /* round(x/255): x/255 >= 0.5 */
    } else {
        for (long i = 0; i < n; i++) dst[i] = (float)src[i] / 255.0f;
    }
}

MV void aet_colsum_add(float *restrict db, const float *restrict dz, long rows, long cols) {
    for (long r = 0; r < rows; r++) {
        const float *row = dz + r * cols;
        for (long j = 0; j < cols; j++) db[j] += row[j];
    }
}

MV void aet_broadcast_rows(float *restrict y, const float *restrict b, long rows, long cols) {
    for (long r = 0; r < rows; r++)
        for (long j = 0; j < cols; j++) y[r * cols + j] = b[j];
}

MV void aet_act_forward(float *restrict y, long n, int kind, float slope) {
    switch (kind) {
    case 0: for (long i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f; break;
    case 1: for (long i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : slope * y[i]; break;
    case 2: for (long i = 0; i < n; i++) y[i] = tanhf(y[i]); break;
    case 3: for (long i = 0; i < n; i++) y[i] = sigm(y[i]); break;
    default: break;
    }
}

MV void aet_act_backward(const float *restrict y, float *restrict dy, long n, int kind, float slope) {
    switch (kind) {
    case 0: for (long i = 0; i < n; i++) dy[i] = y[i] > 0.0f ? dy[i] : 0.0f; break;
    case 1: for (long i = 0; i < n; i++) dy[i] = y[i] > 0.0f ? dy[i] : slope * dy[i]; break;
    case 2: for (long i = 0; i < n; i++) dy[i] *= 1.0f - y[i] * y[i]; break;
    case 3: for (long i = 0; i < n; i++) dy[i] *= y[i] * (1.0f - y[i]); break;
    default: break;
    }
}

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 24 bits, the i-th value of the stream `key`. */
static inline float u01(uint64_t key, uint64_t i) {
    return (float)(mix64(key + (i + 1) * 0x9E3779B97F4A7C15ULL) >> 40) * (1.0f / 16777216.0f);
}

static inline float clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

MV void aet_noise(int kind, float a, const float *restrict x, float *restrict y, long n, uint64_t key) {
    const float two_pi = 6.28318530717958647692f;
    switch (kind) {
    case 0:
    case 1:
        for (long i = 0; i < n; i++) {
            float u1 = u01(key, 2 * (uint64_t)i) + (1.0f / 33554432.0f); /* (0, 1] */
            float u2 = u01(key, 2 * (uint64_t)i + 1);
            float g = sqrtf(-2.0f * logf(u1)) * cosf(two_pi * u2);
            y[i] = clamp01(kind == 0 ? x[i] + a * g : x[i] + x[i] * a * g);
        }
        break;
    case 2:
        for (long i = 0; i < n; i++) {
            float u = u01(key, (uint64_t)i);
            y[i] = u < a ? (u < 0.5f * a ? 0.0f : 1.0f) : x[i];
        }
        break;
    default:
        for (long i = 0; i < n; i++) y[i] = u01(key, (uint64_t)i) < a ? 0.0f : x[i];
        break;
    }
}
