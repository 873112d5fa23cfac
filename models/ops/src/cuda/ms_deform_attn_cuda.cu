// CUDA kernels of multi-scale deformable attention.
//
// Forward: one thread per output element (n, q, m, d). Backward: one warp per (n, q, m); lanes stride
// over the D channels, so any D works without specialised templates. The value gradient is scattered
// with atomics into a float (or double) buffer; the location and weight gradients of each sample are
// reduced across the warp with shuffles and written by lane 0. The whole batch is one launch (no
// im2col_step chunking, so no N % im2col_step restriction), indices are 64-bit, and launch errors raise.
// Only ATen and c10 headers are used (not ATen/cuda/CUDAContext.h), so the CUDA toolkit needs no
// cuBLAS or cuSPARSE headers.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <vector>

#include "bilinear.h"
#include "ms_deform_attn.h"

namespace msda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

int64_t blocks_for(int64_t threads_needed) {
  return std::min<int64_t>(kMaxBlocks, std::max<int64_t>(1, (threads_needed + kThreads - 1) / kThreads));
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ level_start, const scalar_t* __restrict__ loc,
                               const scalar_t* __restrict__ attn, scalar_t* __restrict__ output, Dims d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = d.batch * d.queries * d.heads * d.channels;
  const int64_t pixel_stride = d.heads * d.channels;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % d.channels;
    const int64_t head_row = i / d.channels;  // (n * Lq + q) * M + m
    const int64_t m = head_row % d.heads;
    const int64_t n = head_row / (d.heads * d.queries);
    acc_t acc = 0;
    for (int64_t l = 0; l < d.levels; ++l) {
      const int64_t height = shapes[2 * l];
      const int64_t width = shapes[2 * l + 1];
      const scalar_t* level_value = value + ((n * d.tokens + level_start[l]) * d.heads + m) * d.channels + c;
      for (int64_t p = 0; p < d.points; ++p) {
        const int64_t s = (head_row * d.levels + l) * d.points + p;
        Footprint<acc_t> fp;
        if (!sample_footprint(loc, s, height, width, fp)) {
          continue;
        }
        const acc_t a = static_cast<acc_t>(attn[s]);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (fp.pixel[k] >= 0) {
            acc += a * fp.weight[k] * static_cast<acc_t>(level_value[fp.pixel[k] * pixel_stride]);
          }
        }
      }
    }
    output[i] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ level_start, const scalar_t* __restrict__ loc,
                                const scalar_t* __restrict__ attn, const scalar_t* __restrict__ grad_output,
                                acc_t* __restrict__ grad_value, scalar_t* __restrict__ grad_loc,
                                scalar_t* __restrict__ grad_attn, Dims d) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t head_rows = d.batch * d.queries * d.heads;
  const int64_t warp_stride = int64_t(gridDim.x) * blockDim.x / kWarpSize;
  const int64_t pixel_stride = d.heads * d.channels;
  // All lanes of a warp share head_row, so the loop and the early `continue`s are warp-uniform.
  for (int64_t head_row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarpSize; head_row < head_rows;
       head_row += warp_stride) {
    const int64_t m = head_row % d.heads;
    const int64_t n = head_row / (d.heads * d.queries);
    const scalar_t* g = grad_output + head_row * d.channels;
    for (int64_t l = 0; l < d.levels; ++l) {
      const int64_t height = shapes[2 * l];
      const int64_t width = shapes[2 * l + 1];
      const int64_t value_offset = ((n * d.tokens + level_start[l]) * d.heads + m) * d.channels;
      for (int64_t p = 0; p < d.points; ++p) {
        const int64_t s = (head_row * d.levels + l) * d.points + p;
        Footprint<acc_t> fp;
        if (!sample_footprint(loc, s, height, width, fp)) {
          continue;
        }
        const acc_t a = static_cast<acc_t>(attn[s]);
        acc_t sum_w = 0, sum_x = 0, sum_y = 0;
        for (int64_t c = lane; c < d.channels; c += kWarpSize) {
          const acc_t gc = static_cast<acc_t>(g[c]);
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (fp.pixel[k] < 0) {
              continue;
            }
            const int64_t idx = value_offset + fp.pixel[k] * pixel_stride + c;
            const acc_t dot = gc * static_cast<acc_t>(value[idx]);
            sum_w += fp.weight[k] * dot;
            sum_x += fp.d_x[k] * dot;
            sum_y += fp.d_y[k] * dot;
            gpuAtomicAdd(grad_value + idx, a * fp.weight[k] * gc);
          }
        }
        sum_w = warp_sum(sum_w);
        sum_x = warp_sum(sum_x);
        sum_y = warp_sum(sum_y);
        if (lane == 0) {
          grad_attn[s] = static_cast<scalar_t>(sum_w);
          grad_loc[2 * s] = static_cast<scalar_t>(static_cast<acc_t>(width) * a * sum_x);
          grad_loc[2 * s + 1] = static_cast<scalar_t>(static_cast<acc_t>(height) * a * sum_y);
        }
      }
    }
  }
}

}  // namespace

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                        const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const Dims& dims) {
  const c10::cuda::OptionalCUDAGuard device_guard(value.device());
  at::Tensor output = at::empty({dims.batch, dims.queries, dims.heads * dims.channels}, value.options());
  const int64_t total = output.numel();
  if (total == 0) {
    return output;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_loc.const_data_ptr<scalar_t>(),
        attn_weight.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), dims);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::vector<at::Tensor> backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight, const at::Tensor& grad_output,
                                      const Dims& dims) {
  const c10::cuda::OptionalCUDAGuard device_guard(value.device());
  // Atomics accumulate in float for half/bfloat16 inputs (in half they would lose most of the sum).
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(at::toOpMathType(value.scalar_type())));
  at::Tensor grad_loc = at::zeros_like(sampling_loc);
  at::Tensor grad_attn = at::zeros_like(attn_weight);
  const int64_t head_rows = dims.batch * dims.queries * dims.heads;
  if (head_rows > 0 && dims.channels > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t, acc_t><<<blocks_for(head_rows * kWarpSize), kThreads, 0, stream>>>(
          value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
          level_start_index.const_data_ptr<int64_t>(), sampling_loc.const_data_ptr<scalar_t>(),
          attn_weight.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
          grad_value_acc.mutable_data_ptr<acc_t>(), grad_loc.mutable_data_ptr<scalar_t>(),
          grad_attn.mutable_data_ptr<scalar_t>(), dims);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_value_acc.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace msda
