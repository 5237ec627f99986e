"""Convolution kernels: the registry and one module per backend."""
from .registry import (BACKENDS, Kernel, all_kernels, backend_status, get, register, select,
                       select_for)

__all__ = ["BACKENDS", "Kernel", "all_kernels", "backend_status", "get", "register", "select",
           "select_for"]
