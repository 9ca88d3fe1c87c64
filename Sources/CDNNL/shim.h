#ifndef AETRAIN_CDNNL_SHIM_H
#define AETRAIN_CDNNL_SHIM_H
/* oneDNN's C API (Debian libdnnl-dev, 2.6; OpenMP runtime). aetrain calls it through the small
   wrapper in CKernels (dnnl_ops.h); Swift imports this module only for version and ISA queries. */
#include <oneapi/dnnl/dnnl.h>
#endif
