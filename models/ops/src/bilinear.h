// Bilinear footprint of one sampling point, shared by the CPU and CUDA kernels so both compute the
// exact same samples and gradients.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace msda {

// The 4 neighbouring pixels of a sample (flat index y * W + x, or -1 when outside the map, where the
// zero padding contributes nothing), their interpolation weights, and the derivatives of those weights
// with respect to the sample's y and x in pixel units.
template <typename acc_t>
struct Footprint {
  int64_t pixel[4];
  acc_t weight[4];
  acc_t d_y[4];
  acc_t d_x[4];
};

template <typename acc_t>
C10_HOST_DEVICE inline acc_t floor_value(acc_t v) {
#if defined(__CUDA_ARCH__)
  return floor(v);
#else
  return std::floor(v);
#endif
}

// Fills `fp` for the normalised location (loc_x, loc_y) on a height x width map, with pixel centres at
// (i + 0.5) / size (grid_sample with align_corners=False). Returns false when the sample lies entirely
// outside (-1, height) x (-1, width) (or is NaN) and therefore contributes nothing.
template <typename acc_t>
C10_HOST_DEVICE inline bool bilinear_footprint(acc_t loc_x, acc_t loc_y, int64_t height, int64_t width,
                                               Footprint<acc_t>& fp) {
  const acc_t y = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
  const acc_t x = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  if (!(y > acc_t(-1) && x > acc_t(-1) && y < static_cast<acc_t>(height) && x < static_cast<acc_t>(width))) {
    return false;
  }
  const acc_t y0f = floor_value(y);
  const acc_t x0f = floor_value(x);
  const int64_t y0 = static_cast<int64_t>(y0f);
  const int64_t x0 = static_cast<int64_t>(x0f);
  const acc_t ly = y - y0f;
  const acc_t lx = x - x0f;
  const acc_t hy = acc_t(1) - ly;
  const acc_t hx = acc_t(1) - lx;
  const bool top = y0 >= 0;
  const bool bottom = y0 + 1 < height;
  const bool left = x0 >= 0;
  const bool right = x0 + 1 < width;

  fp.pixel[0] = (top && left) ? y0 * width + x0 : -1;
  fp.weight[0] = hy * hx;
  fp.d_y[0] = -hx;
  fp.d_x[0] = -hy;

  fp.pixel[1] = (top && right) ? y0 * width + x0 + 1 : -1;
  fp.weight[1] = hy * lx;
  fp.d_y[1] = -lx;
  fp.d_x[1] = hy;

  fp.pixel[2] = (bottom && left) ? (y0 + 1) * width + x0 : -1;
  fp.weight[2] = ly * hx;
  fp.d_y[2] = hx;
  fp.d_x[2] = -ly;

  fp.pixel[3] = (bottom && right) ? (y0 + 1) * width + x0 + 1 : -1;
  fp.weight[3] = ly * lx;
  fp.d_y[3] = lx;
  fp.d_x[3] = ly;
  return true;
}

// Footprint of sample `s` of a contiguous (x, y) location array, computed in acc_t.
template <typename acc_t, typename scalar_t>
C10_HOST_DEVICE inline bool sample_footprint(const scalar_t* loc, int64_t s, int64_t height, int64_t width,
                                             Footprint<acc_t>& fp) {
  return bilinear_footprint<acc_t>(static_cast<acc_t>(loc[2 * s]), static_cast<acc_t>(loc[2 * s + 1]), height, width,
                                   fp);
}

}  // namespace msda
