#ifndef AETRAIN_DNNL_OPS_H
#define AETRAIN_DNNL_OPS_H
/* A thin layer over oneDNN's C API (dnnl_ops.c): every matrix product, convolution, pooling and
   upsampling of a training step runs as a oneDNN primitive created once per shape (per layer and
   batch size) and executed many times on caller-owned buffers.

   Conventions: element types AET_F32 / AET_BF16 (bf16 buffers are uint16_t); activation kinds as
   in kernels.h (-1 none, 0 relu, 1 leaky relu, 2 tanh, 3 sigmoid); 4-D tensors are
   [n, c, h, w] in one of three layouts: AET_NCHW (PyTorch), AET_NHWC (channels last) and
   AET_BLK16 (oneDNN nChw16c: 16 channels innermost, c a multiple of 16).
   Creation returns NULL on failure; aet_dnnl_error() then says why. Running allocates nothing in
   aetrain's code (oneDNN itself allocates its small argument map per execution). */
#include <stddef.h>
#include <stdint.h>

enum { AET_F32 = 0, AET_BF16 = 1 };
enum { AET_NCHW = 0, AET_NHWC = 1, AET_BLK16 = 2 };

/* Engine and stream (once per process); 0 on success. Every creator calls it. */
int aet_dnnl_init(void);
/* The last creation error (this thread). */
const char *aet_dnnl_error(void);
/* oneDNN's version and the ISA its kernels use on this CPU (e.g. "avx512_core_bf16"). */
const char *aet_dnnl_version(void);
const char *aet_dnnl_isa(void);
/* 1 when oneDNN runs AVX-512 kernels here (avx512_core or better). */
int aet_dnnl_avx512(void);
/* 1 when bf16 primitives run native (avx512_core_bf16) or emulated (avx512_core) AVX-512 code. */
int aet_dnnl_bf16_supported(void);
/* 1 when the CPU has the AVX-512 bf16 instructions (else bf16 is emulated, slower than f32). */
int aet_dnnl_bf16_native(void);
/* OpenMP threads used by oneDNN (omp_set_num_threads / omp_get_max_threads). */
void aet_dnnl_set_threads(int n);
int aet_dnnl_threads(void);

/* ---- Matrix product ----
   C[M,N] = A[M,K] · B[K,N] (+ bias[N]) (+ C when accumulate), then the activation.
   Each matrix is given by its element strides (row, column), so a transposed operand is just
   swapped strides; C's columns are contiguous. Bias is F32. */
typedef struct aet_matmul aet_matmul;
aet_matmul *aet_matmul_create(long M, long N, long K, long a_rs, long a_cs, int a_type, long b_rs, long b_cs, int b_type,
                              long c_rs, int c_type, int bias, int act, int accumulate);
void aet_matmul_run(aet_matmul *op, const void *a, const void *b, void *c, const float *bias);
const char *aet_matmul_impl(const aet_matmul *op);
void aet_matmul_free(aet_matmul *op);

/* ---- Convolution layer, stride 1, 'same' padding (odd kernel k, pad k/2) ----
   y = act(conv(x, w) + b) for n samples; w is PyTorch's [oc, ic, k, k] F32 and b [oc] F32.
   x and y (and dy, dx) are in the given layouts and types; the products read their inputs (x,
   w, dz) in `type` and accumulate in f32; outputs are written in the caller's types.
   oc >= 16: oneDNN's direct convolution (forward, backward data, backward weights), weights
   reordered into its layouts each forward, activations reordered only where the caller's layout
   or type differs from the primitive's. oc < 16 (e.g. the 32 -> 1 decoder head, where the
   convolution kernels would pad oc to 16): three matrix products around a shift-add
   (T = X·Wp, y = shift-add(T); dX = V·Wpᵀ and dWpᵀ = Vᵀ·X with V = im2col(dz)).
   Backward takes dz = dL/d(pre-activation) in y's layout and type; it uses the state of the last
   forward (same object, same x). dw/db are overwritten, or added to with accumulate; dx may be
   NULL (not computed). */
typedef struct aet_conv aet_conv;
aet_conv *aet_conv_create(long n, long ic, long oc, long h, long w, long k, int x_layout, int x_type,
                          int y_layout, int y_type, int type, int act, int need_dx);
void aet_conv_forward(aet_conv *c, const void *x, const float *w, const float *b, void *y);
void aet_conv_backward(aet_conv *c, const void *x, const float *w, const void *dz, float *dw, float *db, int accumulate,
                       void *dx);
const char *aet_conv_impl(const aet_conv *c);
void aet_conv_free(aet_conv *c);

/* ---- 2x2 max pooling (stride 2) and 2x nearest upsampling ----
   Forward records what backward needs (pooling: the argmax workspace). Backward writes dx
   (overwrites). Layouts and types of x and y as above; the primitive runs on elements of `type`
   (the input's type: these layers only compare and copy, and sum 4 gradients). */
typedef struct aet_spatial aet_spatial;
aet_spatial *aet_pool_create(long n, long c, long h, long w, int x_layout, int x_type, int y_layout, int y_type, int type);
aet_spatial *aet_upsample_create(long n, long c, long h, long w, int x_layout, int x_type, int y_layout, int y_type, int type);
void aet_spatial_forward(aet_spatial *s, const void *x, void *y);
void aet_spatial_backward(aet_spatial *s, const void *dy, void *dx);
const char *aet_spatial_impl(const aet_spatial *s);
void aet_spatial_free(aet_spatial *s);

/* Test hook: when a process defines `void aet_alloc_probe_pause(int)` (the allocation test's
   LD_PRELOAD shim does), it is called with 1 before and 0 after every oneDNN execution, so that
   allocations inside oneDNN can be told apart from aetrain's own. */
#endif
