#ifndef AETRAIN_CMPI_SHIM_H
#define AETRAIN_CMPI_SHIM_H
/* Open MPI defines its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE) as macros that
   Swift cannot import, so they are exposed here through static inline functions. Only
   Communicator.swift imports this module. */
#include <mpi.h>

static inline int aet_mpi_initialized(void) { int f = 0; MPI_Initialized(&f); return f; }
static inline int aet_mpi_finalized(void) { int f = 0; MPI_Finalized(&f); return f; }
static inline int aet_mpi_init(void) {
    int provided = 0;
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
}
static inline int aet_mpi_rank(void) { int r = 0; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
static inline int aet_mpi_size(void) { int s = 1; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }
static inline int aet_mpi_allreduce_float(float *buf, int n) {
    return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
static inline int aet_mpi_allreduce_double(double *buf, int n) {
    return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}
static inline int aet_mpi_allreduce_max_double(double *buf, int n) {
    return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
}
static inline int aet_mpi_iallreduce_float(float *buf, int n, MPI_Request *req) {
    return MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, req);
}
static inline int aet_mpi_test(MPI_Request *req) {
    int flag = 0; MPI_Test(req, &flag, MPI_STATUS_IGNORE); return flag;
}
static inline int aet_mpi_wait(MPI_Request *req) { return MPI_Wait(req, MPI_STATUS_IGNORE); }
static inline MPI_Request aet_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline int aet_mpi_bcast_bytes(void *buf, int n, int root) {
    return MPI_Bcast(buf, n, MPI_BYTE, root, MPI_COMM_WORLD);
}
static inline int aet_mpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }
static inline int aet_mpi_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }
static inline int aet_mpi_finalize(void) { return MPI_Finalize(); }
#endif
