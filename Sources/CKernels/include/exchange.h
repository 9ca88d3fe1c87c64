#ifndef AETRAIN_EXCHANGE_KERNELS_H
#define AETRAIN_EXCHANGE_KERNELS_H
/* The element-wise sums of the hierarchical gradient exchange (node sum, then the ring across
   nodes), vectorised like kernels.h's loops. */

/* dst[i] = ((gs[0][i] + gs[1][i]) + gs[2][i]) + ..., in buffer order, for n floats (ng >= 1). */
void aet_sum_sources(float *dst, const float *const *gs, int ng, long n);
/* dst[i] += src[i] for n floats. */
void aet_add_into(float *dst, const float *src, long n);
#endif
