// Fused attention pooling of a GC block on the CPU (gcnet_mm._ext).
//
// GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond,
// https://arxiv.org/abs/1904.11492.  The arithmetic of
// gcnet_mm/ops/attention_pool.py (and of mmcv's ContextBlock with
// pooling_type='att'), with fewer passes over the (B, C, HW) feature map:
//
//   forward    ctx = x @ softmax(w . x)         one read of x
//   backward   da = u . x, dw = x @ (a (da - <a, da>))
//                                               one read of x
//              dx = g + dctx a^T + w dl^T       read g, write dx
//
// where the PyTorch ops of the reference path read x twice in each pass, and
// for dx read and write twice.
//
// Both reductions over x work on chunks of positions small enough to stay in
// cache, each chunk read once from memory and once from cache:
//   * the softmax is merged across chunks from each chunk's largest logit
//     and sum of exponentials (as in a streaming softmax);
//   * dw uses each chunk's own attention-weighted mean of da, corrected by
//     the global mean afterwards (sum_k (mu_k - mu) x_k @ a_k), which keeps
//     the cancellation of the two terms as small as in the two-pass form.
// Float32 and float64, inputs (B, C, HW) with unit stride along HW; the
// Python side takes its other path for everything else.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

namespace gcnet_mm {
namespace generic {
#include "attention_pool_kernels.h"
}  // namespace generic

#if defined(__GNUC__) && !defined(__clang__) && \
    (defined(__x86_64__) || defined(_M_X64))
#define GCNET_MM_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "attention_pool_kernels.h"
}  // namespace avx2
#pragma GCC pop_options
#endif

namespace {

// The AVX2 + FMA copy of the loops where the CPU has them, unless
// GCNET_MM_EXT_ISA=generic asks for the portable copy (tests run both).
bool use_avx2() {
#ifdef GCNET_MM_HAVE_AVX2
  static const bool cpu_has =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* isa = std::getenv("GCNET_MM_EXT_ISA");
  return cpu_has && !(isa != nullptr && std::string(isa) == "generic");
#else
  return false;
#endif
}

template <typename T>
struct Kernels {
  decltype(&generic::forward_chunk<T>) forward_chunk;
  decltype(&generic::backward_chunk<T>) backward_chunk;
  decltype(&generic::rank2_update<T>) rank2_update;
};

template <typename T>
Kernels<T> kernels() {
#ifdef GCNET_MM_HAVE_AVX2
  if (use_avx2()) {
    return {&avx2::forward_chunk<T>, &avx2::backward_chunk<T>,
            &avx2::rank2_update<T>};
  }
#endif
  return {&generic::forward_chunk<T>, &generic::backward_chunk<T>,
          &generic::rank2_update<T>};
}

// Positions per chunk: a (C, P) slice of about 1 MiB (a core's L2 on recent
// x86; longer rows cost less per row than a smaller slice saves), a multiple
// of 16, at least 16.  GCNET_MM_CHUNK_BYTES overrides the 1 MiB.
int64_t chunk_len(int64_t channels, int64_t positions, int64_t elsize) {
  int64_t budget = 1024 * 1024;
  if (const char* env = std::getenv("GCNET_MM_CHUNK_BYTES")) {
    budget = std::max<int64_t>(1024, std::atoll(env));
  }
  int64_t p = budget / std::max<int64_t>(1, channels * elsize);
  p = std::max<int64_t>(16, p / 16 * 16);
  return std::min(p, positions);
}

void check_matrix(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got ",
              t.device());
  TORCH_CHECK(t.dim() == 3, name, " must be (B, C, HW), got shape ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              name, " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.size(2) <= 1 || t.stride(2) == 1, name,
              " must have unit stride along HW, got strides ", t.strides());
}

void check_like(const at::Tensor& t, const char* name, at::IntArrayRef shape,
                at::ScalarType dtype) {
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
}

// How a (B, C, HW) matrix splits into (sample, chunk) tasks.
struct Chunks {
  int64_t batch, channels, positions;
  int64_t len;         // positions per chunk (the last may have fewer)
  int64_t per_sample;  // chunks per sample
  int64_t tasks;       // batch * per_sample; task t = (t / per_sample, ...)

  explicit Chunks(const at::Tensor& m)
      : batch(m.size(0)),
        channels(m.size(1)),
        positions(m.size(2)),
        len(chunk_len(channels, positions, m.element_size())),
        per_sample((positions + len - 1) / len),
        tasks(batch * per_sample) {}

  // Positions in chunk i of a sample.
  int64_t size(int64_t i) const { return std::min(len, positions - i * len); }

  // Parallel over the tasks; fn(task, b, p0, n) for each.
  template <typename F>
  void for_each(const F& fn) const {
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / per_sample, i = t % per_sample;
        fn(t, b, i * len, size(i));
      }
    });
  }
};

}  // namespace

// (context (B, C), attention (B, HW)) of x_mat (B, C, HW) under logits w . x.
std::vector<at::Tensor> attention_pool_forward(const at::Tensor& x_mat,
                                               const at::Tensor& weight) {
  check_matrix(x_mat, "x");
  TORCH_CHECK(x_mat.size(1) > 0 && x_mat.size(2) > 0,
              "x must not be empty, got ", x_mat.sizes());
  const Chunks ch(x_mat);
  const int64_t batch = ch.batch, channels = ch.channels,
                positions = ch.positions, per_sample = ch.per_sample;
  check_like(weight, "weight", {channels}, x_mat.scalar_type());
  auto opts = x_mat.options();
  at::Tensor part_ctx = at::empty({ch.tasks, channels}, opts);
  at::Tensor part_max = at::empty({ch.tasks}, opts);
  at::Tensor part_sum = at::empty({ch.tasks}, opts);
  at::Tensor context = at::empty({batch, channels}, opts);
  at::Tensor attn = at::empty({batch, positions}, opts);
  const auto dtype = x_mat.scalar_type();
  AT_DISPATCH_FLOATING_TYPES(dtype, "attention_pool_forward", [&] {
    using T = scalar_t;
    const Kernels<T> k = kernels<T>();
    const T* x = x_mat.data_ptr<T>();
    const T* w = weight.data_ptr<T>();
    T* a = attn.data_ptr<T>();  // each chunk's exp(l - m_k) first
    T* pc = part_ctx.data_ptr<T>();
    T* pm = part_max.data_ptr<T>();
    T* ps = part_sum.data_ptr<T>();
    const int64_t sb = x_mat.stride(0), sc = x_mat.stride(1);
    ch.for_each([&](int64_t t, int64_t b, int64_t p0, int64_t n) {
      k.forward_chunk(x + b * sb + p0, channels, sc, n, w,
                      a + b * positions + p0, pc + t * channels, pm + t,
                      ps + t);
    });
    // Merge the chunks: softmax = exp(l - m_k) exp(m_k - M) / S with M the
    // sample's largest logit and S its sum of exp(l - M).  The merges are
    // small, (B, C) and (B, HW), and run on one thread: a parallel region
    // costs more than they do.
    std::vector<double> scale(ch.tasks);
    T* ctx = context.data_ptr<T>();
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t t0 = b * per_sample;
      double m = pm[t0], s = 0;
      for (int64_t i = 1; i < per_sample; ++i) {
        m = std::max(m, double(pm[t0 + i]));
      }
      for (int64_t i = 0; i < per_sample; ++i) {
        scale[t0 + i] = std::exp(double(pm[t0 + i]) - m);
        s += double(ps[t0 + i]) * scale[t0 + i];
      }
      for (int64_t i = 0; i < per_sample; ++i) scale[t0 + i] /= s;
      for (int64_t c = 0; c < channels; ++c) {
        double v = 0;
        for (int64_t i = 0; i < per_sample; ++i) {
          v += double(pc[(t0 + i) * channels + c]) * scale[t0 + i];
        }
        ctx[b * channels + c] = T(v);
      }
      for (int64_t i = 0; i < per_sample; ++i) {
        const T f = T(scale[t0 + i]);
        T* ai = a + b * positions + i * ch.len;
        for (int64_t p = 0; p < ch.size(i); ++p) ai[p] *= f;
      }
    }
  });
  return {context, attn};
}

// (dx (B, C, HW) or undefined, dw (C,) or undefined).
//   src_mat  (B, C, HW) the pooled tensor, or an input it is a per-channel
//            affine map of (then u = dcontext * alpha and the caller scales
//            dw);
//   attn     (B, HW) the forward's attention; u, dctx (B, C); weight (C,);
//   g_mat    (B, C, HW) contiguous gradient of the block output, or None.
std::vector<at::Tensor> attention_pool_backward(
    const at::Tensor& src_mat, const at::Tensor& attn, const at::Tensor& u,
    const at::Tensor& dctx, const at::Tensor& weight,
    const c10::optional<at::Tensor>& g_mat, bool need_x, bool need_w) {
  check_matrix(src_mat, "source");
  const Chunks ch(src_mat);
  const int64_t batch = ch.batch, channels = ch.channels,
                positions = ch.positions, per_sample = ch.per_sample,
                tasks = ch.tasks;
  const auto dtype = src_mat.scalar_type();
  check_like(attn, "attn", {batch, positions}, dtype);
  check_like(u, "u", {batch, channels}, dtype);
  check_like(dctx, "dcontext", {batch, channels}, dtype);
  check_like(weight, "weight", {channels}, dtype);
  const bool has_g = g_mat.has_value() && g_mat->defined();
  if (has_g) check_like(*g_mat, "grad", src_mat.sizes(), dtype);
  auto opts = src_mat.options();
  at::Tensor da = at::empty({batch, positions}, opts);
  at::Tensor part_mass = at::empty({tasks}, opts);
  at::Tensor part_ad = at::empty({tasks}, opts);
  at::Tensor part_w, part_a, dw, dx;
  if (need_w) {
    part_w = at::empty({tasks, channels}, opts);
    part_a = at::empty({tasks, channels}, opts);
    dw = at::empty({channels}, opts);
  }
  if (need_x) dx = at::empty({batch, channels, positions}, opts);
  AT_DISPATCH_FLOATING_TYPES(dtype, "attention_pool_backward", [&] {
    using T = scalar_t;
    const Kernels<T> k = kernels<T>();
    const T* x = src_mat.data_ptr<T>();
    const T* a = attn.data_ptr<T>();
    const T* up = u.data_ptr<T>();
    T* dap = da.data_ptr<T>();
    T* pmass = part_mass.data_ptr<T>();
    T* pad = part_ad.data_ptr<T>();
    T* pw = need_w ? part_w.data_ptr<T>() : nullptr;
    T* pa = need_w ? part_a.data_ptr<T>() : nullptr;
    const int64_t sb = src_mat.stride(0), sc = src_mat.stride(1);
    ch.for_each([&](int64_t t, int64_t b, int64_t p0, int64_t n) {
      std::vector<T> q(need_w ? n : 0);
      k.backward_chunk(x + b * sb + p0, channels, sc, n, up + b * channels,
                       a + b * positions + p0, dap + b * positions + p0,
                       q.data(), pw ? pw + t * channels : nullptr,
                       pa ? pa + t * channels : nullptr, pmass + t, pad + t);
    });
    // <a, da> per sample, and each chunk's offset from it.
    std::vector<double> mean(batch), shift(tasks);
    for (int64_t b = 0; b < batch; ++b) {
      double s = 0;
      for (int64_t j = 0; j < per_sample; ++j) s += pad[b * per_sample + j];
      mean[b] = s;
      for (int64_t j = 0; j < per_sample; ++j) {
        const int64_t t = b * per_sample + j;
        const double mu = pmass[t] > 0 ? double(pad[t]) / pmass[t] : 0.0;
        shift[t] = mu - s;
      }
    }
    // dl = a (da - <a, da>), in place of da, and dw: small, on one thread
    // (as the forward's merges).
    for (int64_t i = 0; i < batch * positions; ++i) {
      dap[i] = T(a[i] * (double(dap[i]) - mean[i / positions]));
    }
    if (need_w) {
      std::vector<double> acc(channels, 0.0);
      for (int64_t t = 0; t < tasks; ++t) {
        const T* pwt = pw + t * channels;
        const T* pat = pa + t * channels;
        for (int64_t c = 0; c < channels; ++c) {
          acc[c] += double(pwt[c]) + shift[t] * double(pat[c]);
        }
      }
      T* dwp = dw.data_ptr<T>();
      for (int64_t c = 0; c < channels; ++c) dwp[c] = T(acc[c]);
    }
    if (need_x) {
      T* out = dx.data_ptr<T>();
      const T* gp = has_g ? g_mat->data_ptr<T>() : nullptr;
      const T* dc = dctx.data_ptr<T>();
      const T* w = weight.data_ptr<T>();
      const int64_t grain = std::max<int64_t>(1, 16384 / positions);
      at::parallel_for(0, batch * channels, grain, [&](int64_t begin,
                                                       int64_t end) {
        for (int64_t i = begin; i < end;) {
          const int64_t b = i / channels, c0 = i % channels;
          const int64_t c1 = std::min(channels, c0 + (end - i));
          const int64_t off = b * channels * positions;
          k.rank2_update(out + off, gp ? gp + off : nullptr,
                         dc + b * channels, a + b * positions, w,
                         dap + b * positions, c0, c1, positions);
          i += c1 - c0;
        }
      });
    }
  });
  return {dx, dw};
}

std::string isa() { return use_avx2() ? "avx2" : "generic"; }

}  // namespace gcnet_mm

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gcnet_mm: fused attention pooling of the GC block (CPU)";
  m.def("attention_pool_forward", &gcnet_mm::attention_pool_forward,
        "(context, attn) of x (B, C, HW) under logits weight . x");
  m.def("attention_pool_backward", &gcnet_mm::attention_pool_backward,
        "(dx, dw) of the attention pooling");
  m.def("isa", &gcnet_mm::isa, "instruction set of the loops in use");
}
