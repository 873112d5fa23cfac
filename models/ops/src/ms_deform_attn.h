// Entry points of the multi-scale deformable attention kernels.
//
// Layouts (all contiguous): value [N, S, M, D]; spatial_shapes [L, 2] int64 (H, W); level_start_index
// [L] int64; sampling_loc [N, Lq, M, L, P, 2] as (x, y) in [0, 1]; attn_weight [N, Lq, M, L, P];
// output and grad_output [N, Lq, M * D]. Inputs are validated by the binding before these are called.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace msda {

struct Dims {
  int64_t batch;     // N
  int64_t tokens;    // S
  int64_t heads;     // M
  int64_t channels;  // D
  int64_t queries;   // Lq
  int64_t levels;    // L
  int64_t points;    // P
};

// Instruction set the CPU kernels run with (chosen once at run time on x86, baseline elsewhere).
enum class CpuIsa { kBaseline, kAvx2, kAvx512 };
CpuIsa cpu_isa();

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                       const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                       const at::Tensor& attn_weight, const Dims& dims);

// Returns {grad_value, grad_sampling_loc, grad_attn_weight}.
std::vector<at::Tensor> backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                     const at::Tensor& attn_weight, const at::Tensor& grad_output,
                                     const Dims& dims);

#ifdef MSDA_WITH_CUDA
at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                        const at::Tensor& attn_weight, const Dims& dims);

std::vector<at::Tensor> backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight, const at::Tensor& grad_output,
                                      const Dims& dims);
#endif

}  // namespace msda
