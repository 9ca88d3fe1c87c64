#include "exchange.h"

#define MV __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

MV void aet_sum_sources(float *restrict dst, const float *const *gs, int ng, long n) {
    const float *restrict a = gs[0];
    if (ng == 1) {
        for (long i = 0; i < n; i++) dst[i] = a[i];
        return;
    }
    const float *restrict b = gs[1];
    for (long i = 0; i < n; i++) dst[i] = a[i] + b[i];
    for (int r = 2; r < ng; r++) {
        const float *restrict g = gs[r];
        for (long i = 0; i < n; i++) dst[i] += g[i];
    }
}

MV void aet_add_into(float *restrict dst, const float *restrict src, long n) {
    for (long i = 0; i < n; i++) dst[i] += src[i];
}
