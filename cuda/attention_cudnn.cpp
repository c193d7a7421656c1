// "cudnn": the same attention op through cuDNN's fused scaled-dot-product attention, a baseline for
// the hand-written kernel and a fallback. Built on the cuDNN backend graph API (cudnn_graph.h; the
// C++ frontend is not a dependency) with the native SDPA operations of cuDNN 9
// (CUDNN_BACKEND_OPERATION_SDPA_FWD/BWD_DESCRIPTOR).
//
// Layout: the packed qkv [T, 3H] is described to cuDNN as ragged (THD) tensors: dims [B, heads, S, d]
// with strides [-, d, 3H, 1] and a ragged offset tensor holding cu_seqlens[b] * 3H (elements), so
// nothing is copied or padded; out/dout likewise with cu_seqlens[b] * H. Sequence lengths go in as
// seq_len_q/kv tensors [B, 1, 1, 1], which mask keys and queries past each sequence's end.
// cuDNN's softmax stats (natural-log log-sum-exp, f32) are padded [B, heads, S, 1]: they live in the
// workspace and are converted to/from the interface's packed lse [T, heads] by small kernels in
// attention_flash.cu. bf16 only, head dim <= 128; compute in fp32 inside cuDNN.
//
// Dropout: the native SDPA operations have no dropout attribute, and cuDNN's own dropout (in the
// pattern-graph form) draws from its own Philox layout, not attention_dropout_index(). This path
// therefore runs with p == 0 only and says so; comparisons with "flash" are made with dropout 0.
//
// Plans are built once per (B, S, heads, d, direction) and cached for the process (shapes only: data
// pointers, lengths and offsets are bound at execution), with one cuDNN handle per device.
#include <cudnn.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "cuda/attention.h"
#include "engine/error.h"

namespace engine::cuda {

// Defined in attention_flash.cu.
void attention_cudnn_prepare(const int32_t* cu_seqlens, int sequences, int32_t qkv_row, int32_t o_row,
                             int32_t* seqlen, int32_t* off_qkv, int32_t* off_o, cudaStream_t stream);
void attention_cudnn_stats(float* stats, float* lse, const int32_t* cu_seqlens, int sequences, int heads,
                           int max_seqlen, bool to_packed, cudaStream_t stream);

namespace {

using Desc = std::shared_ptr<void>;  // an owned cudnnBackendDescriptor_t

void check(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) fail("attention_cudnn: ", what, ": ", cudnnGetErrorString(s));
}

Desc make(cudnnBackendDescriptorType_t type, const char* what) {
  cudnnBackendDescriptor_t d = nullptr;
  check(cudnnBackendCreateDescriptor(type, &d), what);
  return Desc(d, [](void* p) { cudnnBackendDestroyDescriptor(static_cast<cudnnBackendDescriptor_t>(p)); });
}

void set(const Desc& d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
         const void* values, const char* what) {
  check(cudnnBackendSetAttribute(d.get(), name, type, count, values), what);
}
void set_desc(const Desc& d, cudnnBackendAttributeName_t name, const Desc& value, const char* what) {
  cudnnBackendDescriptor_t v = value.get();
  set(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v, what);
}
void finalize(const Desc& d, const char* what) { check(cudnnBackendFinalize(d.get()), what); }

// Unique ids of the tensors in the graphs (what the variant pack binds pointers to).
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kSeqQ, kSeqKV, kDO, kDQ, kDK, kDV,
  kOffQ = 20, kOffK, kOffV, kOffO, kOffDO, kOffDQ, kOffDK, kOffDV,
};

struct Builder {
  std::vector<Desc> keep;  // every descriptor the graph refers to stays alive with the plan

  Desc tensor(int64_t uid, cudnnDataType_t type, std::vector<int64_t> dims, std::vector<int64_t> strides,
              bool by_value = false, const Desc& ragged = nullptr) {
    Desc t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor descriptor");
    const int64_t align = 16;
    const bool is_virtual = false;
    set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor data type");
    set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, int64_t(dims.size()), dims.data(), "tensor dims");
    set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, int64_t(strides.size()), strides.data(), "tensor strides");
    set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
    set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, "tensor alignment");
    set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "tensor virtual flag");
    if (by_value) set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "tensor by-value flag");
    if (ragged) set_desc(t, CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, ragged, "tensor ragged offsets");
    finalize(t, "tensor descriptor finalize");
    keep.push_back(t);
    return t;
  }
  // A [B, heads, S, d] view of packed rows `row` elements apart, ragged by offsets tensor `off_uid`.
  Desc ragged(int64_t uid, int64_t off_uid, int64_t B, int64_t heads, int64_t S, int64_t d, int64_t row) {
    Desc off = tensor(off_uid, CUDNN_DATA_INT32, {B + 1, 1, 1, 1}, {1, 1, 1, 1});
    return tensor(uid, CUDNN_DATA_BFLOAT16, {B, heads, S, d}, {S * row, d, row, 1}, false, off);
  }
};

struct Plan {
  std::vector<Desc> keep;
  Desc plan;
  int64_t workspace = 0;
};

struct Key {
  int B, S, heads, d;
  bool backward;
  bool operator<(const Key& o) const {
    return std::tie(B, S, heads, d, backward) < std::tie(o.B, o.S, o.heads, o.d, o.backward);
  }
};

std::mutex g_mutex;

cudnnHandle_t handle_for_current_device() {
  static std::map<int, cudnnHandle_t> handles;  // process lifetime, one per device
  int dev = 0;
  const cudaError_t e = cudaGetDevice(&dev);
  ENGINE_CHECK(e == cudaSuccess, "attention_cudnn: cudaGetDevice: ", cudaGetErrorString(e));
  auto it = handles.find(dev);
  if (it != handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  check(cudnnCreate(&h), "cudnnCreate (is libcudnn present and matching the headers?)");
  handles[dev] = h;
  return h;
}

// Finalizes the graph of one operation and picks the first engine config the heuristics offer that
// builds into an execution plan.
Plan build_plan(cudnnHandle_t handle, Builder& b, const Desc& op, const char* what) {
  Plan p;
  Desc graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
  set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "graph handle");
  cudnnBackendDescriptor_t op_raw = op.get();
  set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op_raw, "graph ops");
  finalize(graph, what);

  Desc heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "engine heuristics");
  set_desc(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "heuristics graph");
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
  finalize(heur, "engine heuristics finalize");
  int64_t count = 0;
  check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                 nullptr),
        "heuristics result count");
  ENGINE_CHECK(count > 0, "attention_cudnn: ", what, ": cuDNN offers no engine for this attention shape");
  std::vector<Desc> cfgs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    cfgs.push_back(make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config"));
    raw.push_back(cfgs.back().get());
  }
  check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                 &count, raw.data()),
        "heuristics results");
  cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
  for (int64_t i = 0; i < count; ++i) {
    Desc plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan");
    set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "plan handle");
    set_desc(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfgs[size_t(i)], "plan engine config");
    last = cudnnBackendFinalize(plan.get());
    if (last != CUDNN_STATUS_SUCCESS) continue;
    int64_t n = 0;
    check(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                   &p.workspace),
          "plan workspace size");
    p.plan = plan;
    p.keep = b.keep;
    p.keep.push_back(op);
    p.keep.push_back(graph);
    p.keep.push_back(cfgs[size_t(i)]);
    return p;
  }
  fail("attention_cudnn: ", what, ": none of cuDNN's ", count, " engine configs builds a plan (last status: ",
       cudnnGetErrorString(last), ")");
}

const Plan& get_plan(const AttentionArgs& a, bool backward) {
  const Key key{a.sequences, a.max_seqlen, a.heads, a.head_dim, backward};
  static std::map<Key, Plan> cache;
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  cudnnHandle_t handle = handle_for_current_device();
  const int64_t B = a.sequences, S = a.max_seqlen, N = a.heads, d = a.head_dim, H = N * d;
  Builder b;
  Desc q = b.ragged(kQ, kOffQ, B, N, S, d, 3 * H);
  Desc k = b.ragged(kK, kOffK, B, N, S, d, 3 * H);
  Desc v = b.ragged(kV, kOffV, B, N, S, d, 3 * H);
  Desc o = b.ragged(kO, kOffO, B, N, S, d, H);
  Desc stats = b.tensor(kStats, CUDNN_DATA_FLOAT, {B, N, S, 1}, {N * S, S, 1, 1});
  Desc scale = b.tensor(kScale, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, true);
  Desc seq_q = b.tensor(kSeqQ, CUDNN_DATA_INT32, {B, 1, 1, 1}, {1, 1, 1, 1});
  Desc seq_kv = b.tensor(kSeqKV, CUDNN_DATA_INT32, {B, 1, 1, 1}, {1, 1, 1, 1});

  Desc op;
  if (!backward) {
    op = make(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, "SDPA forward operation");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, q, "SDPA fwd Q");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, k, "SDPA fwd K");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, v, "SDPA fwd V");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, o, "SDPA fwd O");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, stats, "SDPA fwd stats");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, scale, "SDPA fwd scale");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_SEQ_LEN_QDESC, seq_q, "SDPA fwd seq_len_q");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_FWD_SEQ_LEN_KVDESC, seq_kv, "SDPA fwd seq_len_kv");
    finalize(op, "SDPA forward operation finalize (is this cuDNN older than the headers, or the shape unsupported?)");
  } else {
    Desc dout = b.ragged(kDO, kOffDO, B, N, S, d, H);
    Desc dq = b.ragged(kDQ, kOffDQ, B, N, S, d, 3 * H);
    Desc dk = b.ragged(kDK, kOffDK, B, N, S, d, 3 * H);
    Desc dv = b.ragged(kDV, kOffDV, B, N, S, d, 3 * H);
    op = make(CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR, "SDPA backward operation");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC, q, "SDPA bwd Q");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC, k, "SDPA bwd K");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC, v, "SDPA bwd V");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC, o, "SDPA bwd O");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC, stats, "SDPA bwd stats");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC, scale, "SDPA bwd scale");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_SEQ_LEN_QDESC, seq_q, "SDPA bwd seq_len_q");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_SEQ_LEN_KVDESC, seq_kv, "SDPA bwd seq_len_kv");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC, dq, "SDPA bwd dQ");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC, dk, "SDPA bwd dK");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC, dv, "SDPA bwd dV");
    set_desc(op, CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC, dout, "SDPA bwd dO");
    finalize(op, "SDPA backward operation finalize (is this cuDNN older than the headers, or the shape unsupported?)");
  }
  Plan plan = build_plan(handle, b, op, backward ? "SDPA backward graph" : "SDPA forward graph");
  return cache.emplace(key, std::move(plan)).first->second;
}

// Workspace layout: [seqlen i32 B][off_qkv i32 B+1][off_o i32 B+1][stats f32 B*heads*S][cuDNN's].
struct Layout {
  size_t seqlen, off_qkv, off_o, stats, cudnn, total;
};
size_t align256(size_t n) { return (n + 255) / 256 * 256; }
Layout layout(const AttentionArgs& a, int64_t cudnn_bytes) {
  Layout l{};
  l.seqlen = 0;
  l.off_qkv = l.seqlen + align256(size_t(a.sequences) * 4);
  l.off_o = l.off_qkv + align256(size_t(a.sequences + 1) * 4);
  l.stats = l.off_o + align256(size_t(a.sequences + 1) * 4);
  l.cudnn = l.stats + align256(size_t(a.sequences) * a.heads * a.max_seqlen * sizeof(float));
  l.total = l.cudnn + align256(size_t(cudnn_bytes));
  return l;
}

void check_args(const AttentionArgs& a, const char* what) {
  ENGINE_CHECK(a.bf16, what, ": the cuDNN attention path needs bf16 activations");
  ENGINE_CHECK(a.head_dim % 8 == 0 && a.head_dim <= 128, what, ": head dim ", a.head_dim,
               " (cuDNN fused attention needs a multiple of 8, at most 128)");
  ENGINE_CHECK(a.dropout_p == 0.f, what, ": dropout ", a.dropout_p,
               " is not available in the cuDNN path (cuDNN's SDPA operation has no dropout matching "
               "attention_dropout_index); use --attention flash, or p = 0");
  ENGINE_CHECK(a.tokens * 3 * a.heads * int64_t(a.head_dim) < (int64_t(1) << 31), what,
               ": batch too large for 32-bit ragged offsets");
  ENGINE_CHECK(a.qkv && a.cu_seqlens && a.lse, what, ": null qkv, cu_seqlens or lse");
  ENGINE_CHECK(a.sequences <= 65535, what, ": ", a.sequences,
               " sequences (the stats conversion puts sequences on grid.y, at most 65535)");
}

void execute(const AttentionArgs& a, bool backward, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const Plan& fwd = get_plan(a, false);
  const Plan& plan = backward ? get_plan(a, true) : fwd;
  const Layout l = layout(a, plan.workspace);
  ENGINE_CHECK(a.workspace && a.workspace_bytes >= l.total, "attention_cudnn: workspace of ", a.workspace_bytes,
               " bytes, needs ", l.total);
  char* ws = static_cast<char*>(a.workspace);
  auto* seqlen = reinterpret_cast<int32_t*>(ws + l.seqlen);
  auto* off_qkv = reinterpret_cast<int32_t*>(ws + l.off_qkv);
  auto* off_o = reinterpret_cast<int32_t*>(ws + l.off_o);
  auto* stats = reinterpret_cast<float*>(ws + l.stats);
  const int H = a.heads * a.head_dim;
  attention_cudnn_prepare(a.cu_seqlens, a.sequences, 3 * H, H, seqlen, off_qkv, off_o, stream);
  if (backward) {
    // Padded rows of the stats are masked by cuDNN; zero them anyway so nothing reads garbage.
    const cudaError_t e = cudaMemsetAsync(stats, 0, l.cudnn - l.stats, stream);
    ENGINE_CHECK(e == cudaSuccess, "attention_cudnn: cudaMemsetAsync: ", cudaGetErrorString(e));
    attention_cudnn_stats(stats, a.lse, a.cu_seqlens, a.sequences, a.heads, a.max_seqlen, false, stream);
  }

  cudnnHandle_t handle = handle_for_current_device();
  check(cudnnSetStream(handle, stream), "cudnnSetStream");
  float scale = a.scale;
  const char* qkv = static_cast<const char*>(a.qkv);
  const size_t part = size_t(H) * 2;  // bytes from q to k (and k to v) inside a row
  std::vector<int64_t> uids = {kQ, kK, kV, kO, kStats, kScale, kSeqQ, kSeqKV, kOffQ, kOffK, kOffV, kOffO};
  std::vector<void*> ptrs = {const_cast<char*>(qkv), const_cast<char*>(qkv + part), const_cast<char*>(qkv + 2 * part),
                             a.out, stats, &scale, seqlen, seqlen, off_qkv, off_qkv, off_qkv, off_o};
  if (backward) {
    char* dqkv = static_cast<char*>(a.dqkv);
    const std::vector<int64_t> more = {kDO, kDQ, kDK, kDV, kOffDO, kOffDQ, kOffDK, kOffDV};
    const std::vector<void*> more_ptrs = {const_cast<void*>(a.dout), dqkv, dqkv + part, dqkv + 2 * part,
                                          off_o, off_qkv, off_qkv, off_qkv};
    uids.insert(uids.end(), more.begin(), more.end());
    ptrs.insert(ptrs.end(), more_ptrs.begin(), more_ptrs.end());
  }
  Desc pack = make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "variant pack");
  set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids.size()), uids.data(), "pack uids");
  set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, int64_t(ptrs.size()), ptrs.data(),
      "pack pointers");
  void* cudnn_ws = ws + l.cudnn;
  set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &cudnn_ws, "pack workspace");
  finalize(pack, "variant pack finalize");
  check(cudnnBackendExecute(handle, plan.plan.get(), pack.get()), backward ? "SDPA backward" : "SDPA forward");
  if (!backward) attention_cudnn_stats(stats, a.lse, a.cu_seqlens, a.sequences, a.heads, a.max_seqlen, true, stream);
}

}  // namespace

size_t attention_cudnn_workspace_bytes(const AttentionArgs& a) {
  if (a.tokens == 0 || a.sequences == 0 || a.max_seqlen == 0) return 0;
  check_args(a, "attention_cudnn_workspace_bytes");
  std::lock_guard<std::mutex> lock(g_mutex);
  const int64_t fwd = get_plan(a, false).workspace, bwd = get_plan(a, true).workspace;
  return layout(a, fwd > bwd ? fwd : bwd).total;
}

void attention_cudnn_forward(const AttentionArgs& a, cudaStream_t stream) {
  check_args(a, "attention_cudnn_forward");
  ENGINE_CHECK(a.out, "attention_cudnn_forward: null out");
  if (a.tokens == 0 || a.sequences == 0 || a.max_seqlen == 0) return;
  execute(a, false, stream);
}

void attention_cudnn_backward(const AttentionArgs& a, cudaStream_t stream) {
  check_args(a, "attention_cudnn_backward");
  ENGINE_CHECK(a.out && a.dout && a.dqkv, "attention_cudnn_backward: null out, dout or dqkv");
  if (a.tokens == 0 || a.sequences == 0 || a.max_seqlen == 0) return;
  execute(a, true, stream);
}

}  // namespace engine::cuda
