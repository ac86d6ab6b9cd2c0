// Fused float32 CPU kernels for the ops Paddle's CPU build runs as chains of small eager ops.
//
// Each forward has its backward beside it; erniekit/ops/cpu.py compiles this file once per machine
// (OpenMP over rows, vectorised for the CPU it is built on) and admits a kernel only after it matches
// the reference (erniekit/ops/<op>.py) on random inputs, outputs and gradients. Rows are independent,
// so a row is the unit of parallel work; per-row sums accumulate in float like the reference's, sums
// across rows or whole tensors (RMSNorm's weight gradient, square_sums) in double.

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "paddle/extension.h"

namespace {

void check_f32(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu(), name, " must be a CPU tensor");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, name, " must be float32");
}

int64_t last_dim(const paddle::Tensor& t) { return t.shape().back(); }

// exp(x) for the SwiGLU and softmax loops: 2^n * exp(r) with |r| <= ln2/2 and a degree-6 polynomial
// (relative error ~2e-7), branch-free so the compiler vectorises the loops that call it. Below -87.3
// (and at -inf) it returns 0, above 88.3 it saturates at ~2e38; NaN stays NaN.
inline float exp_f32(float x) {
  float c = x < -87.3f ? -87.3f : x;
  c = c > 88.3f ? 88.3f : c;
  const float n = __builtin_floorf(c * 1.44269504088896341f + 0.5f);  // round(c / ln2)
  const float r = c - n * 0.693359375f - n * -2.12194440e-4f;         // c - n ln2, in two parts
  float p = 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  const float y = p * __builtin_bit_cast(float, bits);
  return x < -87.3f ? 0.0f : y;
}

inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

}  // namespace

// ---- RMSNorm: y = w * x / sqrt(mean(x^2) + eps), over the last axis ----------------------------------

std::vector<paddle::Tensor> RmsNormForward(const paddle::Tensor& x, const paddle::Tensor& w, float eps) {
  check_f32(x, "x");
  check_f32(w, "weight");
  const int64_t h = last_dim(x), rows = x.numel() / h;
  PD_CHECK(w.numel() == h, "weight has ", w.numel(), " elements, x's last axis ", h);
  auto y = paddle::empty(x.shape(), x.dtype(), x.place());
  auto rstd = paddle::empty({rows}, paddle::DataType::FLOAT32, x.place());
  const float *px = x.data<float>(), *pw = w.data<float>();
  float *py = y.data<float>(), *pr = rstd.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = px + r * h;
    float* yr = py + r * h;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < h; ++j) ss += xr[j] * xr[j];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(h) + eps);
    pr[r] = inv;
#pragma omp simd
    for (int64_t j = 0; j < h; ++j) yr[j] = pw[j] * (xr[j] * inv);
  }
  return {y, rstd};
}

std::vector<paddle::Tensor> RmsNormBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                            const paddle::Tensor& rstd, const paddle::Tensor& dy,
                                            float eps) {
  check_f32(dy, "dy");
  const int64_t h = last_dim(x), rows = x.numel() / h;
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto dw = paddle::empty({h}, paddle::DataType::FLOAT32, x.place());
  const float *px = x.data<float>(), *pw = w.data<float>(), *pr = rstd.data<float>();
  const float* pdy = dy.data<float>();
  float *pdx = dx.data<float>(), *pdw = dw.data<float>();
  const int threads = omp_get_max_threads();
  // dw per thread in double, then summed: the weight's gradient then does not depend (in float) on how
  // rows are split between threads or micro-batches
  std::vector<double> partial(static_cast<size_t>(threads) * h, 0.0);
#pragma omp parallel
  {
    double* acc = partial.data() + static_cast<size_t>(omp_get_thread_num()) * h;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float *xr = px + r * h, *dyr = pdy + r * h;
      float* dxr = pdx + r * h;
      const float inv = pr[r];
      float dot = 0.0f;  // sum(dy * w * x)
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < h; ++j) dot += dyr[j] * pw[j] * xr[j];
      const float c = inv * inv * dot / static_cast<float>(h);
#pragma omp simd
      for (int64_t j = 0; j < h; ++j) {
        dxr[j] = inv * (dyr[j] * pw[j] - xr[j] * c);
        acc[j] += static_cast<double>(dyr[j] * (xr[j] * inv));
      }
    }
  }
  for (int64_t j = 0; j < h; ++j) {
    double s = 0.0;
    for (int t = 0; t < threads; ++t) s += partial[static_cast<size_t>(t) * h + j];
    pdw[j] = static_cast<float>(s);
  }
  return {dx, dw};
}

PD_BUILD_OP(ek_rms_norm)
    .Inputs({"X", "W"})
    .Outputs({"Y", "Rstd"})
    .Attrs({"eps: float"})
    .SetKernelFn(PD_KERNEL(RmsNormForward));

PD_BUILD_GRAD_OP(ek_rms_norm)
    .Inputs({"X", "W", "Rstd", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W")})
    .Attrs({"eps: float"})
    .SetKernelFn(PD_KERNEL(RmsNormBackward));

// ---- SwiGLU on [gate | up]: y = silu(gate) * up -----------------------------------------------------

std::vector<paddle::Tensor> SwigluForward(const paddle::Tensor& gu) {
  check_f32(gu, "gate_up");
  const int64_t two = last_dim(gu), inner = two / 2, rows = gu.numel() / two;
  std::vector<int64_t> shape = gu.shape();
  shape.back() = inner;
  auto y = paddle::empty(shape, gu.dtype(), gu.place());
  const float* pg = gu.data<float>();
  float* py = y.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float *g = pg + r * two, *u = g + inner;
    float* yr = py + r * inner;
#pragma omp simd
    for (int64_t j = 0; j < inner; ++j) yr[j] = g[j] * sigmoid_f32(g[j]) * u[j];
  }
  return {y};
}

std::vector<paddle::Tensor> SwigluBackward(const paddle::Tensor& gu, const paddle::Tensor& dy) {
  check_f32(dy, "dy");
  const int64_t two = last_dim(gu), inner = two / 2, rows = gu.numel() / two;
  auto dgu = paddle::empty(gu.shape(), gu.dtype(), gu.place());
  const float *pg = gu.data<float>(), *pdy = dy.data<float>();
  float* pd = dgu.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float *g = pg + r * two, *u = g + inner, *d = pdy + r * inner;
    float *dg = pd + r * two, *du = dg + inner;
#pragma omp simd
    for (int64_t j = 0; j < inner; ++j) {
      const float s = sigmoid_f32(g[j]);
      dg[j] = d[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
      du[j] = d[j] * g[j] * s;
    }
  }
  return {dgu};
}

PD_BUILD_OP(ek_swiglu).Inputs({"GateUp"}).Outputs({"Y"}).SetKernelFn(PD_KERNEL(SwigluForward));

PD_BUILD_GRAD_OP(ek_swiglu)
    .Inputs({"GateUp", paddle::Grad("Y")})
    .Outputs({paddle::Grad("GateUp")})
    .SetKernelFn(PD_KERNEL(SwigluBackward));

// ---- Rotary embedding: x [B, S, H, D], cos/sin [B or 1, S, 1, D/2] ---------------------------------
// Pairs are (i, i + D/2) (half) or (2i, 2i + 1) (interleaved). The gradient is the inverse rotation.

namespace {

void rotate(const paddle::Tensor& x, const paddle::Tensor& cos, const paddle::Tensor& sin,
            bool interleaved, float sign, paddle::Tensor* out) {
  const auto& s = x.shape();
  PD_CHECK(s.size() == 4, "rotary expects x [B, S, H, D]");
  const int64_t b = s[0], seq = s[1], heads = s[2], d = s[3], half = d / 2;
  const int64_t cb = cos.shape()[0];
  PD_CHECK(cos.shape()[1] == seq && last_dim(cos) == half, "cos/sin must be [B or 1, S, 1, D/2]");
  const float *px = x.data<float>(), *pc = cos.data<float>(), *ps = sin.data<float>();
  float* po = out->data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t bs = 0; bs < b * seq; ++bs) {
    const int64_t angle = ((cb == 1 ? 0 : bs / seq) * seq + bs % seq) * half;
    const float *c = pc + angle, *sn = ps + angle;
    for (int64_t h = 0; h < heads; ++h) {
      const float* xr = px + (bs * heads + h) * d;
      float* orow = po + (bs * heads + h) * d;
      if (interleaved) {
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = xr[2 * i], x1 = xr[2 * i + 1], si = sign * sn[i];
          orow[2 * i] = x0 * c[i] - x1 * si;
          orow[2 * i + 1] = x1 * c[i] + x0 * si;
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = xr[i], x1 = xr[i + half], si = sign * sn[i];
          orow[i] = x0 * c[i] - x1 * si;
          orow[i + half] = x1 * c[i] + x0 * si;
        }
      }
    }
  }
}

}  // namespace

std::vector<paddle::Tensor> RotaryForward(const paddle::Tensor& x, const paddle::Tensor& cos,
                                          const paddle::Tensor& sin, bool interleaved) {
  check_f32(x, "x");
  check_f32(cos, "cos");
  check_f32(sin, "sin");
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  rotate(x, cos, sin, interleaved, 1.0f, &out);
  return {out};
}

std::vector<paddle::Tensor> RotaryBackward(const paddle::Tensor& cos, const paddle::Tensor& sin,
                                           const paddle::Tensor& dy, bool interleaved) {
  auto dx = paddle::empty(dy.shape(), dy.dtype(), dy.place());
  rotate(dy, cos, sin, interleaved, -1.0f, &dx);
  return {dx};
}

PD_BUILD_OP(ek_rotary)
    .Inputs({"X", "Cos", "Sin"})
    .Outputs({"Y"})
    .Attrs({"interleaved: bool"})
    .SetKernelFn(PD_KERNEL(RotaryForward));

PD_BUILD_GRAD_OP(ek_rotary)
    .Inputs({"Cos", "Sin", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"interleaved: bool"})
    .SetKernelFn(PD_KERNEL(RotaryBackward));

// ---- Attention probabilities: softmax(scores * scale + bias) over the last axis ----------------------
// scores [B, K, M, T], bias [B or 1, 1, M, T] (0 or -inf: the mask), probs float32.

std::vector<paddle::Tensor> MaskedSoftmaxForward(const paddle::Tensor& x, const paddle::Tensor& bias,
                                                 float scale) {
  check_f32(x, "scores");
  check_f32(bias, "bias");
  const auto& s = x.shape();
  PD_CHECK(s.size() == 4, "masked softmax expects scores [B, K, M, T]");
  const int64_t b = s[0], k = s[1], m = s[2], t = s[3], bb = bias.shape()[0];
  PD_CHECK(bias.shape()[2] == m && bias.shape()[3] == t, "bias must be [B or 1, 1, M, T]");
  auto y = paddle::empty(x.shape(), x.dtype(), x.place());
  const float *px = x.data<float>(), *pb = bias.data<float>();
  float* py = y.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < b * k * m; ++row) {
    const int64_t bi = row / (k * m), mi = row % m;
    const float *xr = px + row * t, *br = pb + ((bb == 1 ? 0 : bi) * m + mi) * t;
    float* yr = py + row * t;
    float top = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : top)
    for (int64_t j = 0; j < t; ++j) {
      yr[j] = xr[j] * scale + br[j];
      top = yr[j] > top ? yr[j] : top;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < t; ++j) {
      yr[j] = exp_f32(yr[j] - top);
      sum += yr[j];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < t; ++j) yr[j] *= inv;
  }
  return {y};
}

std::vector<paddle::Tensor> MaskedSoftmaxBackward(const paddle::Tensor& y, const paddle::Tensor& dy,
                                                  float scale) {
  check_f32(dy, "dy");
  const int64_t t = last_dim(y), rows = y.numel() / t;
  auto dx = paddle::empty(y.shape(), y.dtype(), y.place());
  const float *py = y.data<float>(), *pdy = dy.data<float>();
  float* pdx = dx.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const float *yr = py + row * t, *dr = pdy + row * t;
    float* xr = pdx + row * t;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < t; ++j) dot += yr[j] * dr[j];
#pragma omp simd
    for (int64_t j = 0; j < t; ++j) xr[j] = scale * yr[j] * (dr[j] - dot);
  }
  return {dx};
}

PD_BUILD_OP(ek_masked_softmax)
    .Inputs({"X", "Bias"})
    .Outputs({"Y"})
    .Attrs({"scale: float"})
    .SetKernelFn(PD_KERNEL(MaskedSoftmaxForward));

PD_BUILD_GRAD_OP(ek_masked_softmax)
    .Inputs({"Y", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"scale: float"})
    .SetKernelFn(PD_KERNEL(MaskedSoftmaxBackward));

// ---- Sums of squares of many tensors (gradient clipping and the finite check) ------------------------
// One float64 sum per tensor, accumulated in double: finite float32 values cannot overflow it, so a
// sum is finite exactly when its tensor is, and NaN/inf propagate.

std::vector<paddle::Tensor> SquareSums(const std::vector<paddle::Tensor>& xs) {
  const int64_t n = static_cast<int64_t>(xs.size());
  PD_CHECK(n > 0, "square_sums needs at least one tensor");
  auto out = paddle::empty({n}, paddle::DataType::FLOAT64, xs[0].place());
  double* po = out.data<double>();
  for (int64_t i = 0; i < n; ++i) {
    check_f32(xs[i], "tensor");
    const float* p = xs[i].data<float>();
    const int64_t size = xs[i].numel();
    double s = 0.0;
#pragma omp parallel for simd reduction(+ : s) schedule(static) if (size > 65536)
    for (int64_t j = 0; j < size; ++j) s += static_cast<double>(p[j]) * p[j];
    po[i] = s;
  }
  return {out};
}

PD_BUILD_OP(ek_square_sums).Inputs({paddle::Vec("X")}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(SquareSums));
