#ifndef AETRAIN_CBLAS_SHIM_H
#define AETRAIN_CBLAS_SHIM_H
/* OpenBLAS's CBLAS interface (Debian libopenblas-dev), plus the LAPACK routine used by PCA. */
#include <cblas.h>

/* LAPACK symmetric eigensolver, divide and conquer (Fortran ABI, in libopenblas). */
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a, const int *lda,
             float *w, float *work, const int *lwork, int *iwork, const int *liwork, int *info);
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
             double *w, double *work, const int *lwork, int *iwork, const int *liwork, int *info);
#endif
