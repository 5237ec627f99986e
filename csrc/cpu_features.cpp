#include "cpu_features.hpp"

#ifdef KEPSPARSE_OPENMP
#include <omp.h>
#endif

namespace kepsparse {

CpuFeatures detect_cpu_features() {
    CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f");
#endif
    return f;
}

int openmp_max_threads() {
#ifdef KEPSPARSE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace kepsparse
