// The hssn op schemas (TORCH_LIBRARY) and the Python module hssn_kernels._C, whose import registers
// the CPU (csrc/cpu) and CUDA (csrc/cuda) kernels. Autograd and fake kernels: hssn_kernels/native.py.
// Names starting with "triton_" belong to the Triton backend (a fragment of the same namespace).
#include <Python.h>
#include <torch/library.h>

#ifndef HSSN_TORCH_VERSION
#define HSSN_TORCH_VERSION "unknown"
#endif
#ifndef HSSN_CUDA_VERSION
#define HSSN_CUDA_VERSION ""
#endif
#ifndef HSSN_CUDA_ARCHS
#define HSSN_CUDA_ARCHS ""
#endif

TORCH_LIBRARY(hssn, m) {
  m.def("ftm_forward(Tensor logits, Tensor target, Tensor parent, Tensor bottom_up, Tensor ancestors, float gamma, "
        "int ignore_index, int reduction, bool compute_grad, bool partial=False) -> (Tensor loss, Tensor grad)");
  m.def("ftm_backward(Tensor grad_loss, Tensor logits, Tensor target, Tensor parent, Tensor bottom_up, "
        "Tensor ancestors, float gamma, int ignore_index, bool partial=False) -> Tensor");
  m.def("path_argmax(Tensor logits, Tensor parent, Tensor bottom_up, Tensor leaves) -> Tensor leaf_map");
  m.def("sample_triplets(Tensor target, Tensor leaf_index, Tensor tree_distance, int num_triplets, int seed, "
        "int ignore_index, int mode) -> (Tensor triplets, Tensor count)");
  m.def("triplet_forward(Tensor embeddings, Tensor target, Tensor triplets, Tensor count, Tensor leaf_index, "
        "Tensor tree_distance, float margin_eps, float margin_scale, int height, bool hierarchy_margin, "
        "int distance, bool compute_grad) -> (Tensor loss, Tensor grad)");
}

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
