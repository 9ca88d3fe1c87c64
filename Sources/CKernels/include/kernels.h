#ifndef AETRAIN_KERNELS_H
#define AETRAIN_KERNELS_H
/* Element-wise hot loops of a training step, written so that clang vectorises them (with
   glibc's libmvec for expf/log1pf) and dispatched at load time to AVX-512, AVX2 or baseline
   code. Matrix products are not here: they all go through cblas_sgemm. */
#include <stddef.h>
#include <stdint.h>
#include "exchange.h" /* the hierarchical exchange's sums */

/* One Adam/AdamW step over flat buffers (torch.optim.Adam single-tensor semantics):
   p *= shrink; g' = g + l2*p; m += (1-b1)(g'-m); v = b2 v + (1-b2) g'^2;
   p -= step_size * m / (sqrt(v)/bc2_sqrt + eps). Returns 1 when some g is Inf or NaN. */
int aet_adam(float *p, const float *g, float *m, float *v, long n, float shrink, float l2,
              float one_minus_b1, float b2, float one_minus_b2, float step_size, float bc2_sqrt, float eps);

/* The same step with the gradient summed from `ng` buffers first (gs[0][i] + gs[1][i] + ..., in
   that order): the reduction of node-shared gradients fused into the optimiser pass. When `pub`
   is not NULL the new parameters are also written there (publishing them to other ranks). */
int aet_adam_sum(float *p, float *pub, const float *const *gs, int ng, float *m, float *v, long n, float shrink, float l2,
                  float one_minus_b1, float b2, float one_minus_b2, float step_size, float bc2_sqrt, float eps);

/* Loss heads from logits z against targets x over n elements. Each writes y = sigmoid(z),
   optionally dz (scaled by g), and returns the element sum of the loss (before any mean). */
double aet_head_mse(const float *z, float *y, const float *x, float *dz, long n, float g);
double aet_head_bce(const float *z, float *y, const float *x, float *dz, long n, float g);
double aet_head_l1(const float *z, float *y, const float *x, float *dz, long n, float g);
/* Sums of squared error and BCE (evaluation); writes y. */
void aet_eval_sums(const float *z, float *y, const float *x, long n, double *sse, double *bce);

/* 1 when every value is finite. */
int aet_all_finite(const float *a, long n);
/* dst[i] = src[i] / 255, or with binarize round(src[i] / 255) in {0, 1}, for n bytes. */
void aet_u8_to_float(const uint8_t *src, float *dst, long n, int binarize);
/* db[j] += sum_r dz[r*cols + j]. */
void aet_colsum_add(float *db, const float *dz, long rows, long cols);
/* y[r*cols + j] = b[j] for all rows (bias broadcast before a beta=1 sgemm). */
void aet_broadcast_rows(float *y, const float *b, long rows, long cols);
/* In-place activation and its backward from the output y (kind: 0 relu, 1 leaky, 2 tanh, 3 sigmoid). */
void aet_act_forward(float *y, long n, int kind, float slope);
void aet_act_backward(const float *y, float *dy, long n, int kind, float slope);
#endif

/* Input corruption of one image of n pixels from x into y, with counter-based random numbers
   derived from `key` (value i depends only on key and i, so this vectorises and is reproducible):
   kind 0 gaussian (clip to [0,1]), 1 speckle x + x·n (clipped), 2 salt-and-pepper with
   probability a (half 0, half 1), 3 masking with probability a. */
void aet_noise(int kind, float a, const float *x, float *y, long n, uint64_t key);
