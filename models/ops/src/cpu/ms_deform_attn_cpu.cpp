// CPU kernels of multi-scale deformable attention.
//
// Forward: parallel over (batch, query); every output row accumulates 4 * L * P scaled value rows of D
// channels (a contiguous, vectorisable loop). Backward: parallel over (batch, head, level). A task owns
// the value-gradient rows of its head on its level exclusively (no atomics, no races) and every
// (query, point) gradient of that head and level, so one pass over the samples gives all gradients.
// Reduced-precision inputs (half, bfloat16) accumulate in float.
//
// The library is built without -march=native (the JIT cache may be shared between hosts), so on x86 the
// loops are compiled three times (baseline, AVX2+FMA, AVX-512) and the widest the CPU supports runs.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "bilinear.h"
#include "ms_deform_attn.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MSDA_X86_ISA_DISPATCH 1
#endif

namespace msda {
namespace {

// y += alpha * x over n channels.
template <typename scalar_t, typename acc_t>
C10_ALWAYS_INLINE void scaled_add(acc_t* __restrict y, const scalar_t* __restrict x, acc_t alpha, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    y[i] += alpha * static_cast<acc_t>(x[i]);
  }
}

// Returns sum(g * v) and does y += alpha * g over n channels: one pass gives the sample's gradient
// contributions to its location/weight (through the dot product) and to the value (through y).
template <typename scalar_t, typename acc_t>
C10_ALWAYS_INLINE acc_t dot_and_scaled_add(acc_t* __restrict y, const scalar_t* __restrict v,
                                           const scalar_t* __restrict g, acc_t alpha, int64_t n) {
  acc_t dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int64_t i = 0; i < n; ++i) {
    const acc_t gi = static_cast<acc_t>(g[i]);
    dot += gi * static_cast<acc_t>(v[i]);
    y[i] += alpha * gi;
  }
  return dot;
}

// Forward over output rows [begin, end) of (batch, query).
template <typename scalar_t>
struct ForwardTask {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* value;
  const int64_t* shapes;
  const int64_t* level_start;
  const scalar_t* loc;
  const scalar_t* attn;
  scalar_t* output;
  Dims d;

  C10_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    const int64_t pixel_stride = d.heads * d.channels;
    std::vector<acc_t> acc(d.channels);
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / d.queries;
      for (int64_t m = 0; m < d.heads; ++m) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        const int64_t head_row = nq * d.heads + m;
        for (int64_t l = 0; l < d.levels; ++l) {
          const int64_t height = shapes[2 * l];
          const int64_t width = shapes[2 * l + 1];
          const scalar_t* level_value = value + ((n * d.tokens + level_start[l]) * d.heads + m) * d.channels;
          for (int64_t p = 0; p < d.points; ++p) {
            const int64_t s = (head_row * d.levels + l) * d.points + p;
            Footprint<acc_t> fp;
            if (!sample_footprint(loc, s, height, width, fp)) {
              continue;
            }
            const acc_t a = static_cast<acc_t>(attn[s]);
            for (int k = 0; k < 4; ++k) {
              if (fp.pixel[k] >= 0) {
                scaled_add(acc.data(), level_value + fp.pixel[k] * pixel_stride, a * fp.weight[k], d.channels);
              }
            }
          }
        }
        std::copy(acc.begin(), acc.end(), output + head_row * d.channels);
      }
    }
  }
};

// Backward over tasks [begin, end) of (batch, head, level).
template <typename scalar_t>
struct BackwardTask {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* value;
  const int64_t* shapes;
  const int64_t* level_start;
  const scalar_t* loc;
  const scalar_t* attn;
  const scalar_t* grad_output;
  scalar_t* grad_value;
  scalar_t* grad_loc;
  scalar_t* grad_attn;
  Dims d;

  C10_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    // float/double accumulate straight into the (zeroed) value gradient; reduced precision in a float buffer.
    constexpr bool kDirect = std::is_same_v<scalar_t, acc_t>;
    const int64_t pixel_stride = d.heads * d.channels;
    const int64_t grad_stride = kDirect ? pixel_stride : d.channels;
    std::vector<acc_t> level_grad;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t l = task % d.levels;
      const int64_t m = (task / d.levels) % d.heads;
      const int64_t n = task / (d.levels * d.heads);
      const int64_t height = shapes[2 * l];
      const int64_t width = shapes[2 * l + 1];
      const int64_t value_offset = ((n * d.tokens + level_start[l]) * d.heads + m) * d.channels;
      acc_t* grad_rows;
      if constexpr (kDirect) {
        grad_rows = grad_value + value_offset;
      } else {
        level_grad.assign(height * width * d.channels, acc_t(0));
        grad_rows = level_grad.data();
      }
      for (int64_t q = 0; q < d.queries; ++q) {
        const int64_t head_row = (n * d.queries + q) * d.heads + m;
        const scalar_t* g = grad_output + head_row * d.channels;
        for (int64_t p = 0; p < d.points; ++p) {
          const int64_t s = (head_row * d.levels + l) * d.points + p;
          Footprint<acc_t> fp;
          if (!sample_footprint(loc, s, height, width, fp)) {
            continue;
          }
          const acc_t a = static_cast<acc_t>(attn[s]);
          acc_t sum_w = 0, sum_x = 0, sum_y = 0;
          for (int k = 0; k < 4; ++k) {
            if (fp.pixel[k] < 0) {
              continue;
            }
            const acc_t dot = dot_and_scaled_add(grad_rows + fp.pixel[k] * grad_stride,
                                                 value + value_offset + fp.pixel[k] * pixel_stride, g,
                                                 a * fp.weight[k], d.channels);
            sum_w += fp.weight[k] * dot;
            sum_x += fp.d_x[k] * dot;
            sum_y += fp.d_y[k] * dot;
          }
          grad_attn[s] = static_cast<scalar_t>(sum_w);
          grad_loc[2 * s] = static_cast<scalar_t>(static_cast<acc_t>(width) * a * sum_x);
          grad_loc[2 * s + 1] = static_cast<scalar_t>(static_cast<acc_t>(height) * a * sum_y);
        }
      }
      if constexpr (!kDirect) {
        for (int64_t pixel = 0; pixel < height * width; ++pixel) {
          std::copy_n(level_grad.data() + pixel * d.channels, d.channels,
                      grad_value + value_offset + pixel * pixel_stride);
        }
      }
    }
  }
};

#ifdef MSDA_X86_ISA_DISPATCH
// The task bodies are always inlined into these, so each is compiled for its instruction set.
template <typename Task>
__attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma"))) void run_avx512(const Task& task, int64_t begin,
                                                                               int64_t end) {
  task(begin, end);
}

template <typename Task>
__attribute__((target("avx2,fma"))) void run_avx2(const Task& task, int64_t begin, int64_t end) {
  task(begin, end);
}
#endif

template <typename Task>
void run_baseline(const Task& task, int64_t begin, int64_t end) {
  task(begin, end);
}

// Runs task(begin, end) over [0, n) in parallel with the widest instruction set available.
template <typename Task>
void parallel_run(const Task& task, int64_t n, int64_t work_per_item) {
  constexpr int64_t kWorkPerChunk = 1 << 14;  // enough work per chunk to amortise scheduling
  const int64_t grain = std::max<int64_t>(1, kWorkPerChunk / std::max<int64_t>(1, work_per_item));
  const CpuIsa isa = cpu_isa();
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
#ifdef MSDA_X86_ISA_DISPATCH
    if (isa == CpuIsa::kAvx512) {
      return run_avx512(task, begin, end);
    }
    if (isa == CpuIsa::kAvx2) {
      return run_avx2(task, begin, end);
    }
#endif
    run_baseline(task, begin, end);
  });
}

}  // namespace

CpuIsa cpu_isa() {
#ifdef MSDA_X86_ISA_DISPATCH
  static const CpuIsa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw")) {
      return CpuIsa::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return CpuIsa::kAvx2;
    }
    return CpuIsa::kBaseline;
  }();
  return isa;
#else
  return CpuIsa::kBaseline;
#endif
}

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                       const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const Dims& dims) {
  at::Tensor output = at::empty({dims.batch, dims.queries, dims.heads * dims.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    const ForwardTask<scalar_t> task{value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
                                     level_start_index.const_data_ptr<int64_t>(),
                                     sampling_loc.const_data_ptr<scalar_t>(), attn_weight.const_data_ptr<scalar_t>(),
                                     output.mutable_data_ptr<scalar_t>(), dims};
    parallel_run(task, dims.batch * dims.queries, dims.heads * dims.levels * dims.points * 4 * dims.channels);
  });
  return output;
}

std::vector<at::Tensor> backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                     const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                     const at::Tensor& attn_weight, const at::Tensor& grad_output,
                                     const Dims& dims) {
  // Zero-filled: tokens outside every level and samples outside their map get no gradient.
  at::Tensor grad_value = at::zeros_like(value);
  at::Tensor grad_loc = at::zeros_like(sampling_loc);
  at::Tensor grad_attn = at::zeros_like(attn_weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    const BackwardTask<scalar_t> task{
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_loc.const_data_ptr<scalar_t>(),
        attn_weight.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
        grad_value.mutable_data_ptr<scalar_t>(), grad_loc.mutable_data_ptr<scalar_t>(),
        grad_attn.mutable_data_ptr<scalar_t>(), dims};
    parallel_run(task, dims.batch * dims.heads * dims.levels, dims.queries * dims.points * 4 * dims.channels);
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace msda
