// Bound conv calls and the graph step runner (kepsparse._core.SpconvCall / StepRunner).
#pragma once

#include <pybind11/pybind11.h>

namespace kepsparse {

// Adds SpconvCall and StepRunner to the extension module.
void register_runner(pybind11::module_& m);

}  // namespace kepsparse
