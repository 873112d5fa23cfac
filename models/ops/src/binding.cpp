// Python binding: validates inputs once, then dispatches to the CPU or CUDA kernels by device.
#include <ATen/core/Tensor.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "ms_deform_attn.h"

#define MSDA_STRINGIFY_IMPL(x) #x
#define MSDA_STRINGIFY(x) MSDA_STRINGIFY_IMPL(x)
#ifndef MSDA_SOURCES_HASH
#define MSDA_SOURCES_HASH unknown
#endif

namespace msda {
namespace {

Dims check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  TORCH_CHECK(value.dim() == 4, "value must be [N, S, M, D], got ", value.sizes());
  TORCH_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
              "sampling_loc must be [N, Lq, M, L, P, 2], got ", sampling_loc.sizes());
  TORCH_CHECK(attn_weight.dim() == 5, "attn_weight must be [N, Lq, M, L, P], got ", attn_weight.sizes());
  const Dims dims{value.size(0), value.size(1), value.size(2), value.size(3),
                  sampling_loc.size(1), sampling_loc.size(3), sampling_loc.size(4)};
  TORCH_CHECK(sampling_loc.size(0) == dims.batch && sampling_loc.size(2) == dims.heads,
              "sampling_loc ", sampling_loc.sizes(), " does not match value ", value.sizes(), " in N or M");
  TORCH_CHECK(attn_weight.sizes() == sampling_loc.sizes().slice(0, 5),
              "attn_weight ", attn_weight.sizes(), " must equal sampling_loc's first 5 sizes ", sampling_loc.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == dims.levels && spatial_shapes.size(1) == 2,
              "spatial_shapes must be [L, 2] with L = ", dims.levels, ", got ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == dims.levels,
              "level_start_index must be [L] with L = ", dims.levels, ", got ", level_start_index.sizes());
  TORCH_CHECK(at::isFloatingType(value.scalar_type()), "value must be floating point, got ", value.scalar_type());
  TORCH_CHECK(sampling_loc.scalar_type() == value.scalar_type() && attn_weight.scalar_type() == value.scalar_type(),
              "value, sampling_loc and attn_weight must share a dtype, got ", value.scalar_type(), ", ",
              sampling_loc.scalar_type(), ", ", attn_weight.scalar_type());
  TORCH_CHECK(sampling_loc.device() == value.device() && attn_weight.device() == value.device(),
              "value, sampling_loc and attn_weight must be on one device");
  return dims;
}

// The CPU backward gives each (n, m, level) task exclusive ownership of that level's value rows, so the
// levels' token ranges must lie inside [0, S) and must not overlap.
void check_level_ranges_cpu(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                            const Dims& dims) {
  const int64_t* shapes = spatial_shapes.data_ptr<int64_t>();
  const int64_t* starts = level_start_index.data_ptr<int64_t>();
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (int64_t l = 0; l < dims.levels; ++l) {
    TORCH_CHECK(shapes[2 * l] >= 0 && shapes[2 * l + 1] >= 0, "spatial_shapes[", l, "] must be >= 0, got (",
                shapes[2 * l], ", ", shapes[2 * l + 1], ")");
    const int64_t end = starts[l] + shapes[2 * l] * shapes[2 * l + 1];
    TORCH_CHECK(starts[l] >= 0 && end <= dims.tokens, "level ", l, " covers tokens [", starts[l], ", ", end,
                ") outside value's S = ", dims.tokens);
    ranges.emplace_back(starts[l], end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    TORCH_CHECK(ranges[i].first >= ranges[i - 1].second, "levels overlap in value's token dimension: [",
                ranges[i - 1].first, ", ", ranges[i - 1].second, ") and [", ranges[i].first, ", ",
                ranges[i].second, ")");
  }
}

struct Prepared {
  at::Tensor value, spatial_shapes, level_start_index, sampling_loc, attn_weight;
  Dims dims;
};

Prepared prepare(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                 const at::Tensor& sampling_loc, const at::Tensor& attn_weight, int64_t im2col_step) {
  TORCH_CHECK(im2col_step > 0, "im2col_step must be positive, got ", im2col_step);
  const Dims dims = check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  Prepared p{value.contiguous(), spatial_shapes.to(value.device(), at::kLong).contiguous(),
             level_start_index.to(value.device(), at::kLong).contiguous(), sampling_loc.contiguous(),
             attn_weight.contiguous(), dims};
  if (!value.is_cuda()) {
    TORCH_CHECK(value.is_cpu(), "deformable attention supports CPU and CUDA tensors, got ", value.device());
    check_level_ranges_cpu(p.spatial_shapes, p.level_start_index, dims);
  }
  return p;
}

#ifndef MSDA_WITH_CUDA
[[noreturn]] void fail_without_cuda() {
  TORCH_CHECK(false, "this deformable attention build has no CUDA kernel; rebuild with a CUDA toolkit "
                     "(MSDA_IMPL=cuda) or use MSDA_IMPL=pytorch");
}
#endif

// im2col_step is kept for signature compatibility with the original op; the kernels need no chunking.
at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_loc, const at::Tensor& attn_weight, int64_t im2col_step) {
  const Prepared p = prepare(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  if (value.is_cuda()) {
#ifdef MSDA_WITH_CUDA
    return forward_cuda(p.value, p.spatial_shapes, p.level_start_index, p.sampling_loc, p.attn_weight, p.dims);
#else
    fail_without_cuda();
#endif
  }
  return forward_cpu(p.value, p.spatial_shapes, p.level_start_index, p.sampling_loc, p.attn_weight, p.dims);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                 const at::Tensor& attn_weight, const at::Tensor& grad_output,
                                 int64_t im2col_step) {
  const Prepared p = prepare(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step);
  const Dims& d = p.dims;
  TORCH_CHECK(grad_output.numel() == d.batch * d.queries * d.heads * d.channels && grad_output.size(0) == d.batch,
              "grad_output must be [N, Lq, M * D] = [", d.batch, ", ", d.queries, ", ", d.heads * d.channels,
              "], got ", grad_output.sizes());
  TORCH_CHECK(grad_output.device() == value.device(), "grad_output must be on value's device");
  const at::Tensor grad = grad_output.to(value.scalar_type()).contiguous();
  if (value.is_cuda()) {
#ifdef MSDA_WITH_CUDA
    return backward_cuda(p.value, p.spatial_shapes, p.level_start_index, p.sampling_loc, p.attn_weight, grad, d);
#else
    fail_without_cuda();
#endif
  }
  return backward_cpu(p.value, p.spatial_shapes, p.level_start_index, p.sampling_loc, p.attn_weight, grad, d);
}

pybind11::dict build_info() {
  pybind11::dict info;
  info["sources_hash"] = MSDA_STRINGIFY(MSDA_SOURCES_HASH);
#ifdef MSDA_WITH_CUDA
  info["with_cuda"] = true;
#else
  info["with_cuda"] = false;
#endif
  const CpuIsa isa = cpu_isa();
  info["cpu_isa"] = isa == CpuIsa::kAvx512 ? "avx512" : isa == CpuIsa::kAvx2 ? "avx2" : "baseline";
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  return info;
}

}  // namespace
}  // namespace msda

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multi-scale deformable attention kernels (CPU and, when built with it, CUDA)";
  m.def("ms_deform_attn_forward", &msda::forward, "forward -> output [N, Lq, M*D]", pybind11::arg("value"),
        pybind11::arg("spatial_shapes"), pybind11::arg("level_start_index"), pybind11::arg("sampling_loc"),
        pybind11::arg("attn_weight"), pybind11::arg("im2col_step"));
  m.def("ms_deform_attn_backward", &msda::backward,
        "backward -> [grad_value, grad_sampling_loc, grad_attn_weight]", pybind11::arg("value"),
        pybind11::arg("spatial_shapes"), pybind11::arg("level_start_index"), pybind11::arg("sampling_loc"),
        pybind11::arg("attn_weight"), pybind11::arg("grad_output"), pybind11::arg("im2col_step"));
  m.def("build_info", &msda::build_info, "sources hash and compiled features of this build");
}
