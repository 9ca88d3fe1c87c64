#ifndef AETRAIN_KERNELS_H
#define AETRAIN_KERNELS_H
/* Element-wise hot loops of a training step, written so that clang vectorises them (with
   glibc's libmvec for expf/log1pf) and dispatched at load time to AVX-512, AVX2 or baseline
   code. Matrix products and convolutions are not here: they run as oneDNN primitives (dnnl_ops.h).
   Types: AET_F32 = 0, AET_BF16 = 1 (bf16 arrays are uint16_t, rounded to nearest even). */
#include <stddef.h>
#include <stdint.h>
#include "exchange.h" /* the hierarchical exchange's sums */

/* torch.nn.LeakyReLU's default slope; the oneDNN post-op and the backward kernels use it. */
#define AET_LEAKY_SLOPE 0.01f

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
/* In-place activation and its backward from the output y (kind: 0 relu, 1 leaky, 2 tanh, 3 sigmoid). */
void aet_act_forward(float *y, long n, int kind, float slope);
void aet_act_backward(const float *y, float *dy, long n, int kind, float slope);
/* The same backward on arrays of `type` (y and dy alike), in place on dy. */
void aet_act_backward_typed(const void *y, void *dy, long n, int kind, float slope, int type);

/* f32 -> bf16 (round to nearest even; NaN stays NaN). */
void aet_f32_to_bf16(const float *src, uint16_t *dst, long n);

/* A dense layer's backward element-wise pass over dy [rows, cols] (one pass): dz = dy * f'(y)
   (kind -1: dz = dy), db (+)= column sums of dz (overwritten unless accumulate). dz goes to dzb
   as bf16 when dzb is not NULL, else in place into dy. */
void aet_dense_backward_prep(const float *y, float *dy, uint16_t *dzb, float *db, long rows, long cols, int kind, float slope,
                             int accumulate);

/* Convolution lowering for few output channels (see dnnl_ops.h): Wp[c, tap*oc + o] = w[o, c, tap]
   (kk = k*k taps) as `type`; y[s, o, i, j] = act(b[o] + sum over taps of t[(s, i+ky-p, j+kx-p), tap*oc + o])
   in NCHW; v[(s, i, j), tap*oc + o] = dz[s, o, i-ky+p, j-kx+p] (0 outside) with db (+)= sums of dz;
   dw[o, c, tap] (+)= dwt[tap*oc + o, c]. `scratch` holds (k*k*oc + oc) * h * w floats; k <= 7. */
void aet_conv_permute_weights(const float *w, void *wp, int type, long oc, long ic, long kk);
void aet_conv_shift_add(const float *t, long n, long oc, long h, long w, long k, const float *b, int act, void *y, int y_type,
                        float *scratch);
void aet_conv_im2col_dz(const void *dz, int dz_type, long n, long oc, long h, long w, long k, void *v, int v_type, float *db,
                        int accumulate, float *scratch);
void aet_conv_unpermute_grad(const float *dwt, float *dw, long oc, long ic, long kk, int accumulate);

/* One LSTM time step for n samples (nn.LSTM gates i, f, g, o). Row s of the step lives at
   z + s*zs (4H pre-activations, activated in place), c/tc + s*cs (cell state and tanh of it).
   Before activation z gets `add` (row s at add + s*adds) added, or set to it when !zinit.
   cprev (stride cs) is c_{t-1}, NULL for zeros. h_t = o*tanh(c_t) is written to h1 (and h2 when
   not NULL), each with its stride and type. */
void aet_lstm_fwd_step(float *z, long zs, const float *add, long adds, int zinit, const float *cprev, float *c, float *tc, long cs,
                       void *h1, long h1s, int h1t, void *h2, long h2s, int h2t, long n, long H);
/* Its backward: from dL/dh_t = dh1 + dh2 (each with its stride, either may be NULL) and the carried
   dc [n, H] (updated to dL/dc_{t-1}), writes dz_t = dL/d(pre-activation) (stride dzs, type dzt)
   and adds it to db [4H]. */
void aet_lstm_bwd_step(const float *z, long zs, const float *cprev, const float *tc, long cs, const float *dh1, long dh1s,
                       const float *dh2, long dh2s, float *dc, void *dz, long dzs, int dzt, float *db, long n, long H);
/* The two passes above run AVX-512 code (exp16) when the CPU has AVX-512 F/BW/DQ/VL, else the
   vectorised C. aet_avx512_kernels(on) switches that (on < 0: leave it), returning the previous
   state (tests run both paths); aet_exp(x, y, n) is y = e^x with the exponential they use. */
int aet_avx512_kernels(int on);
void aet_exp(const float *x, float *y, long n);
/* S[s, :] = sum over t of dz[s*sample_stride + t*step_stride + (0..G)] (dz of type dzt); S of type st. */
void aet_lstm_sum_steps(const void *dz, int dzt, long n, long T, long G, long sample_stride, long step_stride, void *s, int st);
/* [n, T, F] (sample-major, f32) to [T, n, F] (time-major) of `type`, and back (f32). */
void aet_steps_to_time_major(const float *x, long n, long T, long F, void *out, int type);
void aet_steps_to_sample_major(const float *in, long n, long T, long F, float *x);
#endif

/* Input corruption of one image of n pixels from x into y, with counter-based random numbers
   derived from `key` (value i depends only on key and i, so this vectorises and is reproducible):
   kind 0 gaussian (clip to [0,1]), 1 speckle x + x·n (clipped), 2 salt-and-pepper with
   probability a (half 0, half 1), 3 masking with probability a. */
void aet_noise(int kind, float a, const float *x, float *y, long n, uint64_t key);
