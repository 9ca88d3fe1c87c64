#ifndef AETRAIN_CMPI_SHIM_H
#define AETRAIN_CMPI_SHIM_H
/* Open MPI defines its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE) as macros that
   Swift cannot import, so they are exposed here through static inline functions. Only
   MPICommunicator.swift and SharedWindow.swift import this module. */
#include <mpi.h>

static inline int aet_mpi_initialized(void) { int f = 0; MPI_Initialized(&f); return f; }
static inline int aet_mpi_finalized(void) { int f = 0; MPI_Finalized(&f); return f; }
static inline int aet_mpi_init(void) {
    int provided = 0;
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
}
/* Every collective takes the communicator: MPI_COMM_WORLD, or one split from it. */
static inline MPI_Comm aet_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline int aet_mpi_comm_rank(MPI_Comm c) { int r = 0; MPI_Comm_rank(c, &r); return r; }
static inline int aet_mpi_comm_size(MPI_Comm c) { int s = 1; MPI_Comm_size(c, &s); return s; }
/* The ranks passing the same color, ordered by key. A rank passing color < 0 joins none
   (MPI_UNDEFINED) and gets MPI_COMM_NULL: aet_mpi_comm_is_null tells. */
static inline int aet_mpi_comm_split(MPI_Comm c, int color, int key, MPI_Comm *out) {
    return MPI_Comm_split(c, color < 0 ? MPI_UNDEFINED : color, key, out);
}
static inline int aet_mpi_comm_is_null(MPI_Comm c) { return c == MPI_COMM_NULL; }
/* The ranks that share this rank's node (shared memory), in c's rank order. */
static inline int aet_mpi_comm_split_node(MPI_Comm c, MPI_Comm *out) {
    int r = 0;
    MPI_Comm_rank(c, &r);
    return MPI_Comm_split_type(c, MPI_COMM_TYPE_SHARED, r, MPI_INFO_NULL, out);
}
static inline int aet_mpi_allreduce_float(float *buf, int n, MPI_Comm c) {
    return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, c);
}
static inline int aet_mpi_allreduce_double(double *buf, int n, MPI_Comm c) {
    return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, c);
}
static inline int aet_mpi_allreduce_max_double(double *buf, int n, MPI_Comm c) {
    return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_MAX, c);
}
static inline int aet_mpi_iallreduce_float(float *buf, int n, MPI_Request *req, MPI_Comm c) {
    return MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, c, req);
}
static inline int aet_mpi_test(MPI_Request *req) {
    int flag = 0; MPI_Test(req, &flag, MPI_STATUS_IGNORE); return flag;
}
static inline int aet_mpi_wait(MPI_Request *req) { return MPI_Wait(req, MPI_STATUS_IGNORE); }
static inline MPI_Request aet_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline int aet_mpi_bcast_bytes(void *buf, int n, int root, MPI_Comm c) {
    return MPI_Bcast(buf, n, MPI_BYTE, root, c);
}
static inline int aet_mpi_barrier(MPI_Comm c) { return MPI_Barrier(c); }
/* Send `sn` floats to `dest` while receiving `rn` floats from `src` (one ring step). Point-to-point
   messages allocate nothing per call in Open MPI (its collectives malloc a scratch buffer each). */
static inline int aet_mpi_sendrecv_float(const float *sbuf, int sn, int dest, float *rbuf, int rn, int src, MPI_Comm c) {
    return MPI_Sendrecv(sbuf, sn, MPI_FLOAT, dest, 71, rbuf, rn, MPI_FLOAT, src, 71, c, MPI_STATUS_IGNORE);
}

/* Node-shared memory (MPI-3 shared windows, osc/sm): one allocation that every rank of a
   communicator maps, when all its ranks share a node. Returns how many of c's ranks share this
   rank's node. */
static inline int aet_mpi_node_size(MPI_Comm c) {
    MPI_Comm node;
    if (MPI_Comm_split_type(c, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS) return 0;
    int s = 0;
    MPI_Comm_size(node, &s);
    MPI_Comm_free(&node);
    return s;
}
/* Collective over c (every rank on one node): c's rank 0 allocates `bytes`, every rank gets the
   base address in *base and opens a passive epoch (lock_all) for the window's lifetime. */
static inline int aet_mpi_shared_alloc(long bytes, void **base, MPI_Win *win, MPI_Comm c) {
    int r = 0;
    MPI_Comm_rank(c, &r);
    void *mine = NULL;
    /* Errors stay fatal: Open MPI's osc/sm does not fail collectively (a rank whose backing file
       cannot be created returns while the others wait), so the caller checks the backing
       directory first. */
    int rc = MPI_Win_allocate_shared(r == 0 ? (MPI_Aint)bytes : 0, 1, MPI_INFO_NULL, c, &mine, win);
    if (rc != MPI_SUCCESS) return rc;
    MPI_Aint size = 0;
    int disp = 0;
    rc = MPI_Win_shared_query(*win, 0, &size, &disp, base);
    if (rc != MPI_SUCCESS) return rc;
    return MPI_Win_lock_all(MPI_MODE_NOCHECK, *win);
}
/* A synchronisation point for the shared memory: memory barrier, rank barrier, memory barrier. */
static inline int aet_mpi_shared_sync(MPI_Win win, MPI_Comm c) {
    MPI_Win_sync(win);
    int rc = MPI_Barrier(c);
    MPI_Win_sync(win);
    return rc;
}
static inline int aet_mpi_shared_release(MPI_Win win) { return MPI_Win_unlock_all(win); }
static inline int aet_mpi_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }
static inline int aet_mpi_finalize(void) { return MPI_Finalize(); }
#endif
