// Loops of the fused attention pooling; included by attention_pool.cpp once
// per instruction set (inside a namespace and a `#pragma GCC target`), so it
// has no include guard and includes nothing.  See attention_pool.cpp.
//
// Every loop is over a chunk of positions p of one sample: a (C, P) slice of
// the (C, HW) feature matrix, rows `stride` apart, each row P contiguous
// values.  P is chosen so that the slice (about 1 MiB) stays in cache: the
// chunk is read once from memory (rows prefetched a few ahead) and once more
// from cache.

// One 32-byte vector of T (8 floats or 4 doubles): GCC/Clang vector
// extensions, lowered to AVX2 in the avx2 copy and to SSE2 pairs otherwise.
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 32 / sizeof(T);
};

template <typename T>
inline typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store(T* p, typename Vec<T>::type v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

template <typename T>
inline T hsum(typename Vec<T>::type v) {
  T s = 0;
  for (int64_t j = 0; j < Vec<T>::lanes; ++j) s += v[j];
  return s;
}

// Prefetch the n values of row r (the next rows to read from memory: rows
// are `stride` apart, so the hardware prefetchers do not see the pattern).
template <typename T>
inline void prefetch_row(const T* r, int64_t n) {
  const char* p = reinterpret_cast<const char*>(r);
  for (int64_t b = 0; b < int64_t(n * sizeof(T)); b += 64) {
    __builtin_prefetch(p + b, 0, 3);
  }
}

constexpr int64_t kPrefetchRows = 8;

// out[p] = sum_c v[c] x[c, p] for the chunk's n positions; x from memory.
template <typename T>
inline void vec_mat(T* __restrict__ out, const T* __restrict__ v,
                    const T* __restrict__ x, int64_t rows, int64_t stride,
                    int64_t n) {
  typedef typename Vec<T>::type V;
  constexpr int64_t L = Vec<T>::lanes;
  const int64_t nv = n / L * L;
  for (int64_t c = 0; c < kPrefetchRows && c < rows; ++c) {
    prefetch_row(x + c * stride, n);
  }
  for (int64_t p = 0; p < n; ++p) out[p] = 0;
  int64_t c = 0;
  for (; c + 4 <= rows; c += 4) {
    for (int64_t k = c + kPrefetchRows; k < c + kPrefetchRows + 4; ++k) {
      if (k < rows) prefetch_row(x + k * stride, n);
    }
    const T* __restrict__ r0 = x + c * stride;
    const T* __restrict__ r1 = r0 + stride;
    const T* __restrict__ r2 = r1 + stride;
    const T* __restrict__ r3 = r2 + stride;
    const T v0 = v[c], v1 = v[c + 1], v2 = v[c + 2], v3 = v[c + 3];
    int64_t p = 0;
    for (; p < nv; p += L) {
      V o = load(out + p);
      o += v0 * load(r0 + p) + v1 * load(r1 + p);
      o += v2 * load(r2 + p) + v3 * load(r3 + p);
      store(out + p, o);
    }
    for (; p < n; ++p) {
      out[p] += v0 * r0[p] + v1 * r1[p] + v2 * r2[p] + v3 * r3[p];
    }
  }
  for (; c < rows; ++c) {
    const T* __restrict__ r = x + c * stride;
    for (int64_t p = 0; p < n; ++p) out[p] += v[c] * r[p];
  }
}

// out_j[c] = sum_p x[c, p] v_j[p] for J = 1 or 2 vectors v_j, four rows at
// a time (independent accumulators); x from cache.
template <typename T, int J>
inline void mat_vecs(T* __restrict__ out0, T* __restrict__ out1,
                     const T* __restrict__ x, const T* __restrict__ v0,
                     const T* __restrict__ v1, int64_t rows, int64_t stride,
                     int64_t n) {
  typedef typename Vec<T>::type V;
  constexpr int64_t L = Vec<T>::lanes;
  const int64_t nv = n / L * L;
  int64_t c = 0;
  for (; c + 4 <= rows; c += 4) {
    const T* __restrict__ r[4] = {x + c * stride, x + (c + 1) * stride,
                                  x + (c + 2) * stride, x + (c + 3) * stride};
    V a0[4] = {}, a1[4] = {};
    int64_t p = 0;
    for (; p < nv; p += L) {
      const V e0 = load(v0 + p);
      const V e1 = J == 2 ? load(v1 + p) : e0;
      for (int i = 0; i < 4; ++i) {
        const V xv = load(r[i] + p);
        a0[i] += xv * e0;
        if (J == 2) a1[i] += xv * e1;
      }
    }
    for (int i = 0; i < 4; ++i) {
      T s0 = hsum<T>(a0[i]), s1 = J == 2 ? hsum<T>(a1[i]) : T(0);
      for (int64_t q = p; q < n; ++q) {
        s0 += r[i][q] * v0[q];
        if (J == 2) s1 += r[i][q] * v1[q];
      }
      out0[c + i] = s0;
      if (J == 2) out1[c + i] = s1;
    }
  }
  for (; c < rows; ++c) {
    const T* __restrict__ r = x + c * stride;
    T s0 = 0, s1 = 0;
    for (int64_t p = 0; p < n; ++p) {
      s0 += r[p] * v0[p];
      if (J == 2) s1 += r[p] * v1[p];
    }
    out0[c] = s0;
    if (J == 2) out1[c] = s1;
  }
}

// out[c, p] = g[c, p] + u[c] a[p] + w[c] l[p]  (g may be null).
template <typename T>
inline void rank2_update(T* __restrict__ out, const T* __restrict__ g,
                         const T* __restrict__ u, const T* __restrict__ a,
                         const T* __restrict__ w, const T* __restrict__ l,
                         int64_t c0, int64_t c1, int64_t n) {
  for (int64_t c = c0; c < c1; ++c) {
    T* __restrict__ o = out + c * n;
    const T uc = u[c], wc = w[c];
    if (g != nullptr) {
      const T* __restrict__ gr = g + c * n;
      for (int64_t p = 0; p < n; ++p) o[p] = gr[p] + uc * a[p] + wc * l[p];
    } else {
      for (int64_t p = 0; p < n; ++p) o[p] = uc * a[p] + wc * l[p];
    }
  }
}

// Forward over one chunk: logits l = w . x, then in place e = exp(l - m)
// with m the chunk's largest logit, and ctx = x @ e; returns m and sum(e)
// through m_out / s_out.
template <typename T>
inline void forward_chunk(const T* __restrict__ x, int64_t rows,
                          int64_t stride, int64_t n, const T* __restrict__ w,
                          T* __restrict__ e, T* __restrict__ ctx, T* m_out,
                          T* s_out) {
  vec_mat(e, w, x, rows, stride, n);
  T m = e[0];
  for (int64_t p = 1; p < n; ++p) m = e[p] > m ? e[p] : m;
  T s = 0;
  for (int64_t p = 0; p < n; ++p) {
    e[p] = std::exp(e[p] - m);
    s += e[p];
  }
  mat_vecs<T, 1>(ctx, nullptr, x, e, nullptr, rows, stride, n);
  *m_out = m;
  *s_out = s;
}

// Backward over one chunk: da = u . x; with the chunk's attention mass
// A = sum(a) and mean mu = sum(a da) / A, q = a (da - mu) and
// pw = x @ q, qa = x @ a (when pw is not null).  Returns A and sum(a da).
template <typename T>
inline void backward_chunk(const T* __restrict__ x, int64_t rows,
                           int64_t stride, int64_t n, const T* __restrict__ u,
                           const T* __restrict__ a, T* __restrict__ da,
                           T* __restrict__ q, T* __restrict__ pw,
                           T* __restrict__ qa, T* mass_out, T* ad_out) {
  vec_mat(da, u, x, rows, stride, n);
  T mass = 0, ad = 0;
  for (int64_t p = 0; p < n; ++p) {
    mass += a[p];
    ad += a[p] * da[p];
  }
  *mass_out = mass;
  *ad_out = ad;
  if (pw == nullptr) return;
  const T mu = mass > 0 ? ad / mass : T(0);
  for (int64_t p = 0; p < n; ++p) q[p] = a[p] * (da[p] - mu);
  mat_vecs<T, 2>(pw, qa, x, q, a, rows, stride, n);
}
