// 3x3 'SAME' stride-1 convolution for XLA:CPU through oneDNN, as an XLA FFI custom call.
//
// x (..., H, W, Cin) cross-correlated with w (..., 3, 3, Cin, Cout) -> y (..., H, W, Cout), all
// float32 or all bfloat16 (accumulated in float32 by oneDNN). The leading dimensions of x are the
// batch (vmap adds them); w's leading dimensions, if any, must multiply to 1. oneDNN picks its
// kernel for the CPU it runs on: on a CPU with AMX tiles (amx_bf16), bfloat16 runs on them.
// Primitives are made once per shape and kept; the weights are reordered into the primitive's
// layout on every call (a few MB at most: small beside the convolution itself). XLA may run the
// call on several threads at once (one per device of a sharded program): each call brings its own
// scratchpad (user mode; oneDNN's library-managed one is shared between threads in this build,
// and AMX kernels keep their tile configuration there), and calls run one at a time: each
// already spreads over every core through OpenMP. The reordered weights and the scratchpads live
// in buffers kept across calls (grown, never shrunk): fresh allocations of a few MB cost page
// faults on every call.
#include <cstdint>
#include <cstdlib>
#include <new>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

namespace {

struct Prim {
  dnnl::convolution_forward conv;
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::reorder wreorder;
  dnnl::reorder::primitive_desc rpd;
  dnnl::memory::desc wuser;
};

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int>;

// A 64-byte-aligned buffer that grows to the largest size asked; used under the call lock only.
class Buffer {
 public:
  ~Buffer() { std::free(data_); }
  void* get(size_t bytes) {
    if (bytes > size_) {
      std::free(data_);
      size_ = (bytes + 63) / 64 * 64;
      data_ = std::aligned_alloc(64, size_);
      if (data_ == nullptr) {
        size_ = 0;
        throw std::bad_alloc();
      }
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

dnnl::engine& Engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

Prim& Get(const Key& k) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Prim>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(k);
  if (it != cache.end()) return *it->second;
  auto [n, h, w, c, o, is_bf16] = k;
  dt d = is_bf16 ? dt::bf16 : dt::f32;
  auto& eng = Engine();
  dnnl::memory::desc src({n, c, h, w}, d, tag::nhwc);
  dnnl::memory::desc dst({n, o, h, w}, d, tag::nhwc);
  dnnl::memory::desc wany({o, c, 3, 3}, d, tag::any);
  dnnl::memory::desc wuser({o, c, 3, 3}, d, tag::hwio);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto pd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, wany,
      dst, {1, 1}, {1, 1}, {1, 1}, attr);
  auto rpd = dnnl::reorder::primitive_desc(eng, wuser, eng, pd.weights_desc(), attr);
  auto p = std::unique_ptr<Prim>(
      new Prim{dnnl::convolution_forward(pd), pd, dnnl::reorder(rpd), rpd, wuser});
  return *cache.emplace(k, std::move(p)).first->second;
}

ffi::Error Conv3x3Impl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y) {
  auto xd = x.dimensions();
  auto wd = w.dimensions();
  if (xd.size() < 3 || wd.size() < 4) {
    return ffi::Error::InvalidArgument("conv3x3: x must be (..., H, W, Cin), w (3, 3, Cin, Cout)");
  }
  if (x.element_type() != w.element_type() || x.element_type() != y->element_type()) {
    return ffi::Error::InvalidArgument("conv3x3: x, w and y must have one dtype");
  }
  bool bf16 = x.element_type() == ffi::DataType::BF16;
  if (!bf16 && x.element_type() != ffi::DataType::F32) {
    return ffi::Error::InvalidArgument("conv3x3: float32 or bfloat16 only");
  }
  size_t xr = xd.size(), wr = wd.size();
  int64_t h = xd[xr - 3], wi = xd[xr - 2], c = xd[xr - 1];
  int64_t n = 1;
  for (size_t i = 0; i + 3 < xr; ++i) n *= xd[i];
  int64_t wlead = 1;
  for (size_t i = 0; i + 4 < wr; ++i) wlead *= wd[i];
  if (wlead != 1 || wd[wr - 4] != 3 || wd[wr - 3] != 3 || wd[wr - 2] != c) {
    return ffi::Error::InvalidArgument("conv3x3: w must be one (3, 3, Cin, Cout) kernel");
  }
  int64_t o = wd[wr - 1];
  if (n == 0) return ffi::Error::Success();
  static std::mutex running;
  static Buffer weights, scratch, reorder_scratch;
  std::lock_guard<std::mutex> one_at_a_time(running);
  try {
    Prim& p = Get(Key{n, h, wi, c, o, bf16 ? 1 : 0});
    auto& eng = Engine();
    dnnl::stream s(eng);
    dnnl::memory src(p.pd.src_desc(), eng, x.untyped_data());
    dnnl::memory dst(p.pd.dst_desc(), eng, y->untyped_data());
    dnnl::memory wuser(p.wuser, eng, w.untyped_data());
    auto wd = p.pd.weights_desc(), sd = p.pd.scratchpad_desc(), rd = p.rpd.scratchpad_desc();
    dnnl::memory wmem(wd, eng, weights.get(wd.get_size()));
    dnnl::memory rscratch(rd, eng, reorder_scratch.get(rd.get_size()));
    dnnl::memory scratch_mem(sd, eng, scratch.get(sd.get_size()));
    p.wreorder.execute(
        s, {{DNNL_ARG_FROM, wuser}, {DNNL_ARG_TO, wmem}, {DNNL_ARG_SCRATCHPAD, rscratch}});
    p.conv.execute(s, {{DNNL_ARG_SRC, src},
                       {DNNL_ARG_WEIGHTS, wmem},
                       {DNNL_ARG_DST, dst},
                       {DNNL_ARG_SCRATCHPAD, scratch_mem}});
    s.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("conv3x3: oneDNN: ") + e.what());
  } catch (const std::bad_alloc&) {
    return ffi::Error::Internal("conv3x3: out of memory for oneDNN's buffers");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VizjaxConv3x3, Conv3x3Impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
