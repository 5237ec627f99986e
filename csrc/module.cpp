// pybind11 bindings of kepsparse._core. Kernel families live in their own files
// (one per family) and register their functions through the declarations in kernels.hpp.
#include <pybind11/pybind11.h>

#include "cpu_features.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
    m.doc() = "kepsparse native kernels (C++, OpenMP, run-time ISA dispatch)";
    m.def("cpu_features", []() {
        py::dict d;
        const kepsparse::CpuFeatures f = kepsparse::detect_cpu_features();
        d["avx2"] = f.avx2;
        d["fma"] = f.fma;
        d["avx512f"] = f.avx512f;
        return d;
    }, "ISA extensions this CPU supports (detected at run time)");
    m.def("openmp_max_threads", &kepsparse::openmp_max_threads,
          "OpenMP's default thread count (1 when built without OpenMP)");
}
