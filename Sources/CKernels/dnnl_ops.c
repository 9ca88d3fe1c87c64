/* oneDNN primitives for aetrain's layers: see dnnl_ops.h. */
#define _GNU_SOURCE
#include "dnnl_ops.h"
#include "kernels.h"
#include <oneapi/dnnl/dnnl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dnnl_engine_t eng;
static dnnl_stream_t strm;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int ready = -1;
static void (*probe)(int);
static __thread char err[512];

static void fail(const char *what, dnnl_status_t s) {
    snprintf(err, sizeof err, "oneDNN %s: %s (status %d)", aet_dnnl_version(), what, (int)s);
}

static void init_once(void) {
    probe = (void (*)(int))dlsym(RTLD_DEFAULT, "aet_alloc_probe_pause");
    dnnl_status_t s = dnnl_engine_create(&eng, dnnl_cpu, 0);
    if (s != dnnl_success) { fail("creating the CPU engine", s); return; }
    s = dnnl_stream_create(&strm, eng, dnnl_stream_default_flags);
    if (s != dnnl_success) { fail("creating the stream", s); return; }
    ready = 0;
}

int aet_dnnl_init(void) {
    pthread_once(&once, init_once);
    if (ready != 0 && !err[0]) snprintf(err, sizeof err, "oneDNN: engine not available");
    return ready;
}

const char *aet_dnnl_error(void) { return err; }

const char *aet_dnnl_version(void) {
    static char buf[32];
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "%d.%d.%d", v->major, v->minor, v->patch);
    return buf;
}

const char *aet_dnnl_isa(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "baseline";
    }
}

int aet_dnnl_avx512(void) {
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core;
}

int aet_dnnl_bf16_supported(void) { return aet_dnnl_avx512(); }

int aet_dnnl_bf16_native(void) {
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
}

/* Channels innermost: oneDNN's blocked layout with 16 channels (the AVX-512 kernels'), else
   channels last (its AVX2 and SSE kernels read NHWC, or 8-channel blocks, not 16). */
static int channels_innermost(void) { return aet_dnnl_avx512() ? AET_BLK16 : AET_NHWC; }

/* OpenMP is oneDNN's runtime here (libgomp, loaded with libdnnl); looked up at run time so that
   aetrain does not link the OpenMP library itself. */
void aet_dnnl_set_threads(int n) {
    void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (set && n > 0) set(n);
}

int aet_dnnl_threads(void) {
    int (*get)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    return get ? get() : 1;
}

/* ---------------------------------------------------------------------------------------- */
/* One primitive with its arguments. An argument is either internal memory (owned by the layer
   object) or a caller pointer, slot `slot` of the pointer table passed to prim_exec. */

#define MAX_ARGS 12
typedef struct {
    dnnl_primitive_t prim;
    int n;
    dnnl_exec_arg_t args[MAX_ARGS];
    int slot[MAX_ARGS];
    char impl[64];
} prim_t;

#define TRY(call, what)                                                                                      \
    do {                                                                                                     \
        dnnl_status_t s_ = (call);                                                                           \
        if (s_ != dnnl_success) { fail(what, s_); goto bad; }                                                \
    } while (0)

static int prim_init(prim_t *p, const_dnnl_primitive_desc_t pd) {
    memset(p, 0, sizeof *p);
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    snprintf(p->impl, sizeof p->impl, "%s", impl);
    dnnl_status_t s = dnnl_primitive_create(&p->prim, pd);
    if (s != dnnl_success) { fail("creating a primitive", s); return -1; }
    return 0;
}

/* A caller-pointer argument: its own memory object whose data handle is set on every run. */
static int prim_user(prim_t *p, int arg, const dnnl_memory_desc_t *md, int slot) {
    dnnl_memory_t m;
    dnnl_status_t s = dnnl_memory_create(&m, md, eng, DNNL_MEMORY_NONE);
    if (s != dnnl_success) { fail("creating a memory object", s); return -1; }
    p->args[p->n].arg = arg;
    p->args[p->n].memory = m;
    p->slot[p->n++] = slot;
    return 0;
}

static void prim_mem(prim_t *p, int arg, dnnl_memory_t m) {
    p->args[p->n].arg = arg;
    p->args[p->n].memory = m;
    p->slot[p->n++] = -1;
}

/* An argument that is a caller pointer when `internal` is NULL, else the internal memory. */
static int prim_arg(prim_t *p, int arg, const dnnl_memory_desc_t *md, int slot, dnnl_memory_t internal) {
    if (internal) { prim_mem(p, arg, internal); return 0; }
    return prim_user(p, arg, md, slot);
}

static void prim_exec(prim_t *p, void *const *slots) {
    for (int i = 0; i < p->n; i++)
        if (p->slot[i] >= 0) dnnl_memory_set_data_handle_v2(p->args[i].memory, slots[p->slot[i]], strm);
    if (probe) probe(1);
    dnnl_status_t s = dnnl_primitive_execute(p->prim, strm, p->n, p->args);
    if (s == dnnl_success) s = dnnl_stream_wait(strm);
    if (probe) probe(0);
    if (s != dnnl_success) {
        fprintf(stderr, "error: oneDNN primitive %s failed to execute (status %d)\n", p->impl, (int)s);
        abort();
    }
}

static void prim_fini(prim_t *p) {
    if (!p->prim) return;
    for (int i = 0; i < p->n; i++)
        if (p->slot[i] >= 0) dnnl_memory_destroy(p->args[i].memory);
    dnnl_primitive_destroy(p->prim);
    p->prim = NULL;
}

static dnnl_data_type_t dtype(int t) { return t == AET_BF16 ? dnnl_bf16 : dnnl_f32; }
static size_t esize(int t) { return t == AET_BF16 ? 2 : 4; }

static dnnl_format_tag_t tag4(int layout) {
    switch (layout) {
    case AET_NHWC: return dnnl_nhwc;
    case AET_BLK16: return dnnl_nChw16c;
    default: return dnnl_nchw;
    }
}

static dnnl_status_t md4(dnnl_memory_desc_t *md, long n, long c, long h, long w, int layout, int type) {
    dnnl_dims_t d = {n, c, h, w};
    return dnnl_memory_desc_init_by_tag(md, 4, d, dtype(type), tag4(layout));
}

static int md_same(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b) { return dnnl_memory_desc_equal(a, b); }

/* Internal memory, allocated (and zeroed) once by oneDNN. */
static dnnl_memory_t mem_new(const dnnl_memory_desc_t *md) {
    dnnl_memory_t m = NULL;
    dnnl_status_t s = dnnl_memory_create(&m, md, eng, DNNL_MEMORY_ALLOCATE);
    if (s != dnnl_success) { fail("allocating a workspace", s); return NULL; }
    void *h = NULL;
    dnnl_memory_get_data_handle(m, &h);
    if (h) memset(h, 0, dnnl_memory_desc_get_size(md));
    return m;
}

static void mem_free(dnnl_memory_t *m) {
    if (*m) dnnl_memory_destroy(*m);
    *m = NULL;
}

static void *mem_ptr(dnnl_memory_t m) {
    void *h = NULL;
    if (m) dnnl_memory_get_data_handle(m, &h);
    return h;
}

/* A reorder from `from` to `to` (layout and/or type), optionally adding into the destination. */
static int reorder_init(prim_t *p, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, int accumulate) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int rc = -1;
    TRY(dnnl_primitive_attr_create(&attr), "creating attributes");
    if (accumulate) {
        TRY(dnnl_post_ops_create(&po), "creating post-ops");
        TRY(dnnl_post_ops_append_sum(po, 1.0f), "adding a sum post-op");
        TRY(dnnl_primitive_attr_set_post_ops(attr, po), "setting post-ops");
    }
    TRY(dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, attr), "creating a reorder");
    rc = prim_init(p, pd);
bad:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return rc;
}

static dnnl_alg_kind_t eltwise_alg(int act, float *alpha) {
    *alpha = 0;
    switch (act) {
    case 0: return dnnl_eltwise_relu;
    case 1: *alpha = AET_LEAKY_SLOPE; return dnnl_eltwise_relu;
    case 2: return dnnl_eltwise_tanh;
    case 3: return dnnl_eltwise_logistic;
    default: return dnnl_alg_kind_undef;
    }
}

/* Attributes with the post-ops: sum (accumulate into the destination), then the activation. */
static int make_attr(dnnl_primitive_attr_t *attr, int act, int accumulate) {
    dnnl_post_ops_t po = NULL;
    *attr = NULL;
    TRY(dnnl_primitive_attr_create(attr), "creating attributes");
    if (accumulate || act >= 0) {
        TRY(dnnl_post_ops_create(&po), "creating post-ops");
        if (accumulate) TRY(dnnl_post_ops_append_sum(po, 1.0f), "adding a sum post-op");
        if (act >= 0) {
            float alpha;
            dnnl_alg_kind_t alg = eltwise_alg(act, &alpha);
            TRY(dnnl_post_ops_append_eltwise(po, 1.0f, alg, alpha, 0.0f), "adding an activation post-op");
        }
        TRY(dnnl_primitive_attr_set_post_ops(*attr, po), "setting post-ops");
        dnnl_post_ops_destroy(po);
    }
    return 0;
bad:
    if (po) dnnl_post_ops_destroy(po);
    if (*attr) dnnl_primitive_attr_destroy(*attr);
    *attr = NULL;
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Matrix product */

struct aet_matmul {
    prim_t p;
};

aet_matmul *aet_matmul_create(long M, long N, long K, long a_rs, long a_cs, int a_type, long b_rs, long b_cs, int b_type,
                              long c_rs, int c_type, int bias, int act, int accumulate) {
    if (aet_dnnl_init()) return NULL;
    aet_matmul *op = calloc(1, sizeof *op);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_desc_t a, b, c, bi;
    dnnl_dims_t da = {M, K}, sa = {a_rs, a_cs}, db = {K, N}, sb = {b_rs, b_cs}, dc = {M, N}, sc = {c_rs, 1};
    dnnl_dims_t dbias = {1, N}, sbias = {N, 1};
    dnnl_matmul_desc_t desc;
    if (!op) { snprintf(err, sizeof err, "out of memory"); return NULL; }
    TRY(dnnl_memory_desc_init_by_strides(&a, 2, da, dtype(a_type), sa), "describing a matrix");
    TRY(dnnl_memory_desc_init_by_strides(&b, 2, db, dtype(b_type), sb), "describing a matrix");
    TRY(dnnl_memory_desc_init_by_strides(&c, 2, dc, dtype(c_type), sc), "describing a matrix");
    TRY(dnnl_memory_desc_init_by_strides(&bi, 2, dbias, dnnl_f32, sbias), "describing a bias");
    TRY(dnnl_matmul_desc_init(&desc, &a, &b, bias ? &bi : NULL, &c), "describing a matrix product");
    if (make_attr(&attr, act, accumulate)) goto bad;
    TRY(dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL), "creating a matrix product");
    if (prim_init(&op->p, pd)) goto bad;
    if (prim_user(&op->p, DNNL_ARG_SRC, &a, 0) || prim_user(&op->p, DNNL_ARG_WEIGHTS, &b, 1) ||
        prim_user(&op->p, DNNL_ARG_DST, &c, 2) || (bias && prim_user(&op->p, DNNL_ARG_BIAS, &bi, 3)))
        goto bad;
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return op;
bad:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    aet_matmul_free(op);
    return NULL;
}

void aet_matmul_run(aet_matmul *op, const void *a, const void *b, void *c, const float *bias) {
    void *slots[4] = {(void *)a, (void *)b, c, (void *)bias};
    prim_exec(&op->p, slots);
}

const char *aet_matmul_impl(const aet_matmul *op) { return op->p.impl; }

void aet_matmul_free(aet_matmul *op) {
    if (!op) return;
    prim_fini(&op->p);
    free(op);
}

/* ---------------------------------------------------------------------------------------- */
/* Convolution */

/* Caller pointer slots of a convolution layer. */
enum { CX, CW, CB, CY, CDZ, CDW, CDB, CDX, CSLOTS };

struct aet_conv {
    long n, ic, oc, h, w, k, kk, P;
    int act, type, x_type, y_type, need_dx, lowered;
    char impl[200];
    /* direct: [x_in] w_fwd fwd [y_out]; [dz_in] bwd_w dw_set|dw_add; [w_bwd] bwd_d [dx_out] */
    prim_t x_in, w_fwd, fwd, y_out, dz_in, bwd_w, dw_set, dw_add, w_bwd, bwd_d, dx_out;
    dnnl_memory_t xn, wf, yn, dzn, dwn, dbn, wb, dxn;
    /* lowered: [x_in] T = X·Wp, shift-add; V = im2col(dz); dWpᵀ = Vᵀ·X; dX = V·Wpᵀ [dx_out] */
    aet_matmul *t_mm, *dw_mm, *dx_mm;
    void *wp, *v;
    float *t, *dwt, *scratch;
};

static void *zalloc(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p) memset(p, 0, bytes);
    return p;
}

void aet_conv_free(aet_conv *c) {
    if (!c) return;
    prim_t *ps[] = {&c->x_in, &c->w_fwd, &c->fwd, &c->y_out, &c->dz_in, &c->bwd_w, &c->dw_set, &c->dw_add, &c->w_bwd,
                    &c->bwd_d, &c->dx_out};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) prim_fini(ps[i]);
    dnnl_memory_t *ms[] = {&c->xn, &c->wf, &c->yn, &c->dzn, &c->dwn, &c->dbn, &c->wb, &c->dxn};
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) mem_free(ms[i]);
    aet_matmul_free(c->t_mm);
    aet_matmul_free(c->dw_mm);
    aet_matmul_free(c->dx_mm);
    free(c->wp);
    free(c->v);
    free(c->t);
    free(c->dwt);
    free(c->scratch);
    free(c);
}

/* The layout the convolution kernels read and write: channels innermost on both sides (oneDNN's
   direct kernels need the same layout for input and output; with mixed layouts only its
   reference code runs). The caller's nhwc or blocked layout is kept; NCHW becomes blocked.
   A single channel is read as NCHW. */
static int native_layout(long ic, int x_layout, int y_layout) {
    if (ic > 1 && x_layout != AET_NCHW) return x_layout;
    if (y_layout != AET_NCHW) return y_layout;
    return channels_innermost();
}

static aet_conv *conv_direct(aet_conv *c, int x_layout, int y_layout) {
    long n = c->n, ic = c->ic, oc = c->oc, h = c->h, w = c->w, k = c->k, pad = k / 2;
    int lay = native_layout(ic, x_layout, y_layout);
    /* One input channel: NCHW and NHWC are the same bytes; the kernels want it as NHWC next to
       an NHWC output, and as NCHW next to a blocked one. */
    int xl = ic == 1 ? (lay == AET_NHWC ? AET_NHWC : AET_NCHW) : lay, yl = lay;
    if (ic == 1) x_layout = xl;
    /* xs: input as the kernels read it (compute type); ysf: output as written (the caller's type);
       dzs: dL/d(pre-activation) as read (compute type); dxs: input gradient as written (the
       caller's type). Reorders only where the caller's layout or type differs. */
    dnnl_memory_desc_t xu, yu, xs, ysf, dzs, dxs, wany, wuser, bmd, dwany;
    dnnl_dims_t dw = {oc, ic, k, k}, dbias = {oc}, strides = {1, 1}, padding = {pad, pad};
    dnnl_convolution_desc_t fd, bd, wd;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL, wpd = NULL;
    TRY(md4(&xu, n, ic, h, w, x_layout, c->x_type), "describing the input");
    TRY(md4(&yu, n, oc, h, w, y_layout, c->y_type), "describing the output");
    TRY(md4(&xs, n, ic, h, w, xl, c->type), "describing the input");
    TRY(md4(&ysf, n, oc, h, w, yl, c->y_type), "describing the output");
    TRY(md4(&dzs, n, oc, h, w, yl, c->type), "describing the output gradient");
    TRY(md4(&dxs, n, ic, h, w, xl, c->x_type), "describing the input gradient");
    TRY(dnnl_memory_desc_init_by_tag(&wany, 4, dw, dtype(c->type), dnnl_format_tag_any), "describing the weights");
    TRY(dnnl_memory_desc_init_by_tag(&wuser, 4, dw, dnnl_f32, dnnl_oihw), "describing the weights");
    TRY(dnnl_memory_desc_init_by_tag(&bmd, 1, dbias, dnnl_f32, dnnl_a), "describing the bias");
    TRY(dnnl_memory_desc_init_by_tag(&dwany, 4, dw, dnnl_f32, dnnl_format_tag_any), "describing the weight gradient");
    /* Direct convolution: Winograd (what dnnl_convolution_auto picks for f32 here) measured slower
       on these shapes and changes the numerics. */
    TRY(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &xs, &wany, &bmd, &ysf, strides,
                                           padding, padding),
        "describing the convolution");
    if (make_attr(&attr, c->act, 0)) goto bad;
    TRY(dnnl_primitive_desc_create(&fpd, &fd, attr, eng, NULL), "creating the convolution");
    const dnnl_memory_desc_t *wf_md = dnnl_primitive_desc_query_md(fpd, dnnl_query_weights_md, 0);
    /* forward */
    if (!md_same(&xu, &xs)) {
        if (!(c->xn = mem_new(&xs)) || reorder_init(&c->x_in, &xu, &xs, 0) || prim_user(&c->x_in, DNNL_ARG_FROM, &xu, CX)) goto bad;
        prim_mem(&c->x_in, DNNL_ARG_TO, c->xn);
    }
    if (!(c->wf = mem_new(wf_md)) || reorder_init(&c->w_fwd, &wuser, wf_md, 0) || prim_user(&c->w_fwd, DNNL_ARG_FROM, &wuser, CW))
        goto bad;
    prim_mem(&c->w_fwd, DNNL_ARG_TO, c->wf);
    if (!md_same(&yu, &ysf)) {
        if (!(c->yn = mem_new(&ysf)) || reorder_init(&c->y_out, &ysf, &yu, 0)) goto bad;
        prim_mem(&c->y_out, DNNL_ARG_FROM, c->yn);
        if (prim_user(&c->y_out, DNNL_ARG_TO, &yu, CY)) goto bad;
    }
    if (prim_init(&c->fwd, fpd) || prim_arg(&c->fwd, DNNL_ARG_SRC, &xs, CX, c->xn)) goto bad;
    prim_mem(&c->fwd, DNNL_ARG_WEIGHTS, c->wf);
    if (prim_user(&c->fwd, DNNL_ARG_BIAS, &bmd, CB) || prim_arg(&c->fwd, DNNL_ARG_DST, &ysf, CY, c->yn)) goto bad;
    /* backward weights */
    if (!md_same(&yu, &dzs)) {
        if (!(c->dzn = mem_new(&dzs)) || reorder_init(&c->dz_in, &yu, &dzs, 0) || prim_user(&c->dz_in, DNNL_ARG_FROM, &yu, CDZ))
            goto bad;
        prim_mem(&c->dz_in, DNNL_ARG_TO, c->dzn);
    }
    TRY(dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &xs, &dwany, &bmd, &dzs, strides, padding, padding),
        "describing the weight gradient");
    TRY(dnnl_primitive_desc_create(&wpd, &wd, NULL, eng, fpd), "creating the weight gradient");
    const dnnl_memory_desc_t *dw_md = dnnl_primitive_desc_query_md(wpd, dnnl_query_diff_weights_md, 0);
    if (!(c->dwn = mem_new(dw_md)) || !(c->dbn = mem_new(&bmd))) goto bad;
    if (prim_init(&c->bwd_w, wpd) || prim_arg(&c->bwd_w, DNNL_ARG_SRC, &xs, CX, c->xn) ||
        prim_arg(&c->bwd_w, DNNL_ARG_DIFF_DST, &dzs, CDZ, c->dzn))
        goto bad;
    prim_mem(&c->bwd_w, DNNL_ARG_DIFF_WEIGHTS, c->dwn);
    prim_mem(&c->bwd_w, DNNL_ARG_DIFF_BIAS, c->dbn);
    if (reorder_init(&c->dw_set, dw_md, &wuser, 0) || reorder_init(&c->dw_add, dw_md, &wuser, 1)) goto bad;
    prim_mem(&c->dw_set, DNNL_ARG_FROM, c->dwn);
    prim_mem(&c->dw_add, DNNL_ARG_FROM, c->dwn);
    if (prim_user(&c->dw_set, DNNL_ARG_TO, &wuser, CDW) || prim_user(&c->dw_add, DNNL_ARG_TO, &wuser, CDW)) goto bad;
    snprintf(c->impl, sizeof c->impl, "fwd %s, bwd_w %s", c->fwd.impl, c->bwd_w.impl);
    /* backward data */
    if (c->need_dx) {
        TRY(dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, &dxs, &wany, &dzs, strides, padding, padding),
            "describing the input gradient");
        TRY(dnnl_primitive_desc_create(&bpd, &bd, NULL, eng, fpd), "creating the input gradient");
        const dnnl_memory_desc_t *wb_md = dnnl_primitive_desc_query_md(bpd, dnnl_query_weights_md, 0);
        dnnl_memory_t wsrc = c->wf;
        if (!md_same(wb_md, wf_md)) {
            if (!(c->wb = mem_new(wb_md)) || reorder_init(&c->w_bwd, &wuser, wb_md, 0) ||
                prim_user(&c->w_bwd, DNNL_ARG_FROM, &wuser, CW))
                goto bad;
            prim_mem(&c->w_bwd, DNNL_ARG_TO, c->wb);
            wsrc = c->wb;
        }
        if (!md_same(&xu, &dxs)) {
            if (!(c->dxn = mem_new(&dxs)) || reorder_init(&c->dx_out, &dxs, &xu, 0)) goto bad;
            prim_mem(&c->dx_out, DNNL_ARG_FROM, c->dxn);
            if (prim_user(&c->dx_out, DNNL_ARG_TO, &xu, CDX)) goto bad;
        }
        if (prim_init(&c->bwd_d, bpd) || prim_arg(&c->bwd_d, DNNL_ARG_DIFF_DST, &dzs, CDZ, c->dzn)) goto bad;
        prim_mem(&c->bwd_d, DNNL_ARG_WEIGHTS, wsrc);
        if (prim_arg(&c->bwd_d, DNNL_ARG_DIFF_SRC, &dxs, CDX, c->dxn)) goto bad;
        snprintf(c->impl + strlen(c->impl), sizeof c->impl - strlen(c->impl), ", bwd_d %s", c->bwd_d.impl);
    }
    dnnl_primitive_desc_destroy(fpd);
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    dnnl_primitive_desc_destroy(wpd);
    dnnl_primitive_attr_destroy(attr);
    return c;
bad:
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    aet_conv_free(c);
    return NULL;
}

/* Few output channels: X[P, ic] (channels last), Wp[ic, kk·oc] with Wp[c, tap·oc + o] = W[o, c, tap]:
   T = X·Wp, y[o, p] = b[o] + Σ_tap T[p + off(tap), tap·oc + o]. Backward: V[p, tap·oc + o] =
   dz[o, p − off(tap)], dWpᵀ = Vᵀ·X, dX = V·Wpᵀ. */
static aet_conv *conv_lowered(aet_conv *c, int x_layout, int y_layout) {
    long n = c->n, ic = c->ic, oc = c->oc, h = c->h, w = c->w, kk = c->kk, P = c->P, q = kk * oc;
    int t = c->type;
    if (c->k > 7) {
        snprintf(err, sizeof err, "a convolution with %ld output channels supports kernels up to 7", oc);
        goto bad;
    }
    if (!(y_layout == AET_NCHW || oc == 1)) {
        snprintf(err, sizeof err, "a convolution with %ld output channels needs its output in NCHW layout", oc);
        goto bad;
    }
    dnnl_memory_desc_t xu, xs;
    TRY(md4(&xu, n, ic, h, w, x_layout, c->x_type), "describing the input");
    TRY(md4(&xs, n, ic, h, w, AET_NHWC, t), "describing the input");
    /* One channel in the caller's type needs no copy (nchw and nhwc agree). */
    int direct_x = (ic == 1 || x_layout == AET_NHWC) && c->x_type == t;
    if (!direct_x) {
        if (!(c->xn = mem_new(&xs)) || reorder_init(&c->x_in, &xu, &xs, 0) || prim_user(&c->x_in, DNNL_ARG_FROM, &xu, CX)) goto bad;
        prim_mem(&c->x_in, DNNL_ARG_TO, c->xn);
    }
    c->wp = zalloc((size_t)ic * q * esize(t));
    c->t = zalloc((size_t)P * q * sizeof(float));
    c->v = zalloc((size_t)P * q * esize(t));
    c->dwt = zalloc((size_t)q * ic * sizeof(float));
    c->scratch = zalloc((size_t)(q + oc) * h * w * sizeof(float));
    if (!c->wp || !c->t || !c->v || !c->dwt || !c->scratch) { snprintf(err, sizeof err, "out of memory"); goto bad; }
    c->t_mm = aet_matmul_create(P, q, ic, ic, 1, t, q, 1, t, q, AET_F32, 0, -1, 0);
    c->dw_mm = aet_matmul_create(q, ic, P, 1, q, t, ic, 1, t, ic, AET_F32, 0, -1, 0);
    if (!c->t_mm || !c->dw_mm) goto bad;
    if (c->need_dx) {
        /* dX [P, ic] channels last in the caller's type: written in place when that is the
           caller's layout, else reordered. */
        int direct_dx = (ic == 1 || x_layout == AET_NHWC);
        dnnl_memory_desc_t dxs;
        TRY(md4(&dxs, n, ic, h, w, AET_NHWC, c->x_type), "describing the input gradient");
        c->dx_mm = aet_matmul_create(P, ic, q, q, 1, t, 1, q, t, ic, c->x_type, 0, -1, 0);
        if (!c->dx_mm) goto bad;
        if (!direct_dx) {
            if (!(c->dxn = mem_new(&dxs)) || reorder_init(&c->dx_out, &dxs, &xu, 0)) goto bad;
            prim_mem(&c->dx_out, DNNL_ARG_FROM, c->dxn);
            if (prim_user(&c->dx_out, DNNL_ARG_TO, &xu, CDX)) goto bad;
        }
    }
    snprintf(c->impl, sizeof c->impl, "matmul lowering (%s)", aet_matmul_impl(c->t_mm));
    return c;
bad:
    aet_conv_free(c);
    return NULL;
}

aet_conv *aet_conv_create(long n, long ic, long oc, long h, long w, long k, int x_layout, int x_type, int y_layout, int y_type,
                          int type, int act, int need_dx) {
    if (aet_dnnl_init()) return NULL;
    if (n <= 0 || ic <= 0 || oc <= 0 || h <= 0 || w <= 0 || k <= 0 || k % 2 == 0) {
        snprintf(err, sizeof err, "convolution: bad shape");
        return NULL;
    }
    aet_conv *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->n = n; c->ic = ic; c->oc = oc; c->h = h; c->w = w; c->k = k; c->kk = k * k; c->P = n * h * w;
    c->act = act; c->type = type; c->x_type = x_type; c->y_type = y_type; c->need_dx = need_dx;
    c->lowered = oc < 16;
    return c->lowered ? conv_lowered(c, x_layout, y_layout) : conv_direct(c, x_layout, y_layout);
}

const char *aet_conv_impl(const aet_conv *c) { return c->impl; }

void aet_conv_forward(aet_conv *c, const void *x, const float *w, const float *b, void *y) {
    void *s[CSLOTS] = {0};
    s[CX] = (void *)x; s[CW] = (void *)w; s[CB] = (void *)b; s[CY] = y;
    if (!c->lowered) {
        if (c->xn) prim_exec(&c->x_in, s);
        prim_exec(&c->w_fwd, s);
        prim_exec(&c->fwd, s);
        if (c->yn) prim_exec(&c->y_out, s);
        return;
    }
    const void *xs = x;
    if (c->xn) { prim_exec(&c->x_in, s); xs = mem_ptr(c->xn); }
    aet_conv_permute_weights(w, c->wp, c->type, c->oc, c->ic, c->kk);
    aet_matmul_run(c->t_mm, xs, c->wp, c->t, NULL);
    aet_conv_shift_add(c->t, c->n, c->oc, c->h, c->w, c->k, b, c->act, y, c->y_type, c->scratch);
}

void aet_conv_backward(aet_conv *c, const void *x, const float *w, const void *dz, float *dw, float *db, int accumulate, void *dx) {
    void *s[CSLOTS] = {0};
    s[CX] = (void *)x; s[CW] = (void *)w; s[CDZ] = (void *)dz; s[CDW] = dw; s[CDB] = db; s[CDX] = dx;
    if (!c->lowered) {
        if (c->dzn) prim_exec(&c->dz_in, s);
        prim_exec(&c->bwd_w, s);
        prim_exec(accumulate ? &c->dw_add : &c->dw_set, s);
        const float *g = mem_ptr(c->dbn);
        for (long o = 0; o < c->oc; o++) db[o] = accumulate ? db[o] + g[o] : g[o];
        if (dx && c->need_dx) {
            if (c->wb) prim_exec(&c->w_bwd, s);
            prim_exec(&c->bwd_d, s);
            if (c->dxn) prim_exec(&c->dx_out, s);
        }
        return;
    }
    const void *xs = c->xn ? mem_ptr(c->xn) : x;  /* the forward's channels-last copy */
    aet_conv_im2col_dz(dz, c->y_type, c->n, c->oc, c->h, c->w, c->k, c->v, c->type, db, accumulate, c->scratch);
    aet_matmul_run(c->dw_mm, c->v, xs, c->dwt, NULL);
    aet_conv_unpermute_grad(c->dwt, dw, c->oc, c->ic, c->kk, accumulate);
    if (dx && c->need_dx) {
        aet_matmul_run(c->dx_mm, c->v, c->wp, c->dxn ? mem_ptr(c->dxn) : dx, NULL);
        if (c->dxn) prim_exec(&c->dx_out, s);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Pooling and upsampling */

enum { SX, SY, SDY, SDX, SSLOTS };

struct aet_spatial {
    prim_t x_in, fwd, y_out, dy_in, bwd, dx_out;
    dnnl_memory_t xn, yn, ws, dyn, dxn;
    char impl[160];
};

void aet_spatial_free(aet_spatial *s) {
    if (!s) return;
    prim_t *ps[] = {&s->x_in, &s->fwd, &s->y_out, &s->dy_in, &s->bwd, &s->dx_out};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) prim_fini(ps[i]);
    dnnl_memory_t *ms[] = {&s->xn, &s->yn, &s->ws, &s->dyn, &s->dxn};
    for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) mem_free(ms[i]);
    free(s);
}

/* pool: 1 (2x2 max, stride 2), else 2x nearest upsampling. */
static aet_spatial *spatial_create(int pool, long n, long c, long h, long w, int x_layout, int x_type, int y_layout, int y_type,
                                   int type) {
    if (aet_dnnl_init()) return NULL;
    aet_spatial *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    long oh = pool ? h / 2 : 2 * h, ow = pool ? w / 2 : 2 * w;
    /* Native layout: channels innermost (the caller's nhwc or blocked, else blocked (AVX-512) or
       nhwc when c % 16 == 0); oneDNN's kernels need the same layout on both sides. */
    int lay = x_layout != AET_NCHW ? x_layout : (c % 16 == 0 ? channels_innermost() : AET_NCHW);
    dnnl_memory_desc_t xu, yu, xs, ys;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    TRY(md4(&xu, n, c, h, w, x_layout, x_type), "describing the input");
    TRY(md4(&yu, n, c, oh, ow, y_layout, y_type), "describing the output");
    TRY(md4(&xs, n, c, h, w, lay, type), "describing the input");
    TRY(md4(&ys, n, c, oh, ow, lay, type), "describing the output");
    if (pool) {
        dnnl_pooling_v2_desc_t fd, bd;
        dnnl_dims_t k = {2, 2}, st = {2, 2}, dil = {0, 0}, pad = {0, 0};
        TRY(dnnl_pooling_v2_forward_desc_init(&fd, dnnl_forward_training, dnnl_pooling_max, &xs, &ys, st, k, dil, pad, pad),
            "describing max pooling");
        TRY(dnnl_primitive_desc_create(&fpd, &fd, NULL, eng, NULL), "creating max pooling");
        TRY(dnnl_pooling_v2_backward_desc_init(&bd, dnnl_pooling_max, &xs, &ys, st, k, dil, pad, pad), "describing max pooling");
        TRY(dnnl_primitive_desc_create(&bpd, &bd, NULL, eng, fpd), "creating max pooling backward");
        if (!(s->ws = mem_new(dnnl_primitive_desc_query_md(fpd, dnnl_query_workspace_md, 0)))) goto bad;
    } else {
        dnnl_resampling_desc_t fd;
        TRY(dnnl_resampling_forward_desc_init(&fd, dnnl_forward_training, dnnl_resampling_nearest, NULL, &xs, &ys),
            "describing upsampling");
        TRY(dnnl_primitive_desc_create(&fpd, &fd, NULL, eng, NULL), "creating upsampling");
        /* Backward of nearest upsampling sums each 2x2 block of dy: 4 x its average, which oneDNN's
           average pooling computes 2-3x faster than its resampling backward (x4 exact in binary). */
        dnnl_pooling_v2_desc_t bd;
        dnnl_dims_t k = {2, 2}, st = {2, 2}, dil = {0, 0}, pad = {0, 0};
        dnnl_primitive_attr_t attr = NULL;
        dnnl_post_ops_t po = NULL;
        TRY(dnnl_pooling_v2_forward_desc_init(&bd, dnnl_forward_inference, dnnl_pooling_avg_exclude_padding, &ys, &xs, st, k, dil, pad, pad),
            "describing upsampling backward");
        TRY(dnnl_primitive_attr_create(&attr), "creating attributes");
        TRY(dnnl_post_ops_create(&po), "creating post-ops");
        TRY(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_linear, 4.0f, 0.0f), "adding a post-op");
        TRY(dnnl_primitive_attr_set_post_ops(attr, po), "setting post-ops");
        dnnl_status_t st_ = dnnl_primitive_desc_create(&bpd, &bd, attr, eng, NULL);
        dnnl_post_ops_destroy(po);
        dnnl_primitive_attr_destroy(attr);
        TRY(st_, "creating upsampling backward");
    }
    if (!md_same(&xu, &xs)) {
        if (!(s->xn = mem_new(&xs)) || !(s->dxn = mem_new(&xs))) goto bad;
        if (reorder_init(&s->x_in, &xu, &xs, 0) || prim_user(&s->x_in, DNNL_ARG_FROM, &xu, SX)) goto bad;
        prim_mem(&s->x_in, DNNL_ARG_TO, s->xn);
        if (reorder_init(&s->dx_out, &xs, &xu, 0)) goto bad;
        prim_mem(&s->dx_out, DNNL_ARG_FROM, s->dxn);
        if (prim_user(&s->dx_out, DNNL_ARG_TO, &xu, SDX)) goto bad;
    }
    if (!md_same(&yu, &ys)) {
        if (!(s->yn = mem_new(&ys)) || !(s->dyn = mem_new(&ys))) goto bad;
        if (reorder_init(&s->y_out, &ys, &yu, 0)) goto bad;
        prim_mem(&s->y_out, DNNL_ARG_FROM, s->yn);
        if (prim_user(&s->y_out, DNNL_ARG_TO, &yu, SY)) goto bad;
        if (reorder_init(&s->dy_in, &yu, &ys, 0) || prim_user(&s->dy_in, DNNL_ARG_FROM, &yu, SDY)) goto bad;
        prim_mem(&s->dy_in, DNNL_ARG_TO, s->dyn);
    }
    if (prim_init(&s->fwd, fpd) || prim_arg(&s->fwd, DNNL_ARG_SRC, &xs, SX, s->xn) || prim_arg(&s->fwd, DNNL_ARG_DST, &ys, SY, s->yn))
        goto bad;
    if (s->ws) prim_mem(&s->fwd, DNNL_ARG_WORKSPACE, s->ws);
    if (prim_init(&s->bwd, bpd) || prim_arg(&s->bwd, pool ? DNNL_ARG_DIFF_DST : DNNL_ARG_SRC, &ys, SDY, s->dyn) ||
        prim_arg(&s->bwd, pool ? DNNL_ARG_DIFF_SRC : DNNL_ARG_DST, &xs, SDX, s->dxn))
        goto bad;
    if (s->ws) prim_mem(&s->bwd, DNNL_ARG_WORKSPACE, s->ws);
    snprintf(s->impl, sizeof s->impl, "fwd %s, bwd %s", s->fwd.impl, s->bwd.impl);
    dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_desc_destroy(bpd);
    return s;
bad:
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    aet_spatial_free(s);
    return NULL;
}

aet_spatial *aet_pool_create(long n, long c, long h, long w, int x_layout, int x_type, int y_layout, int y_type, int type) {
    return spatial_create(1, n, c, h, w, x_layout, x_type, y_layout, y_type, type);
}

aet_spatial *aet_upsample_create(long n, long c, long h, long w, int x_layout, int x_type, int y_layout, int y_type, int type) {
    return spatial_create(0, n, c, h, w, x_layout, x_type, y_layout, y_type, type);
}

void aet_spatial_forward(aet_spatial *s, const void *x, void *y) {
    void *sl[SSLOTS] = {(void *)x, y, NULL, NULL};
    if (s->xn) prim_exec(&s->x_in, sl);
    prim_exec(&s->fwd, sl);
    if (s->yn) prim_exec(&s->y_out, sl);
}

void aet_spatial_backward(aet_spatial *s, const void *dy, void *dx) {
    void *sl[SSLOTS] = {NULL, NULL, (void *)dy, dx};
    if (s->dyn) prim_exec(&s->dy_in, sl);
    prim_exec(&s->bwd, sl);
    if (s->dxn) prim_exec(&s->dx_out, sl);
}

const char *aet_spatial_impl(const aet_spatial *s) { return s->impl; }
