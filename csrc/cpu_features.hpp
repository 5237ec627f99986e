// Run-time CPU feature detection: the wheel is built for baseline x86-64 and picks
// AVX-512 / AVX2 / portable code paths by asking the CPU, never by -march=native.
#pragma once

namespace kepsparse {

struct CpuFeatures {
    bool avx2 = false;
    bool fma = false;
    bool avx512f = false;
};

CpuFeatures detect_cpu_features();
int openmp_max_threads();

}  // namespace kepsparse
