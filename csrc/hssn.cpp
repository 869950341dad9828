// The Python module hssn_kernels._C (build info as constants), whose import registers the hssn ops: each
// op's schema (TORCH_LIBRARY_FRAGMENT), CPU kernel and CUDA launcher live in its csrc/ops/<op>.cpp, its CUDA
// kernel in csrc/cuda/<op>.cu. Autograd and fake kernels: hssn_kernels/native.py. Names starting with
// "triton_" belong to the Triton backend (Python fragments of the same namespace).
#include <Python.h>

#ifndef HSSN_TORCH_VERSION
#define HSSN_TORCH_VERSION "unknown"
#endif
#ifndef HSSN_CUDA_VERSION
#define HSSN_CUDA_VERSION ""
#endif
#ifndef HSSN_CUDA_ARCHS
#define HSSN_CUDA_ARCHS ""
#endif

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "hssn native kernels: importing registers the hssn:: ops (see torch.ops.hssn).",
      -1,
      nullptr,
  };
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
  if (PyModule_AddStringConstant(m, "torch_version", HSSN_TORCH_VERSION) < 0 ||
      PyModule_AddStringConstant(m, "cuda_version", HSSN_CUDA_VERSION) < 0 ||
      PyModule_AddStringConstant(m, "cuda_archs", HSSN_CUDA_ARCHS) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
}
