// The op contract, checked once for every backend (see op_checks.h).
// The OpCheck methods build their messages only on failure: they run on every op of every step.
#include "engine/op_checks.h"

#include <cmath>
#include <string>
#include <utility>

namespace engine {

namespace {

// "CPU" / "CUDA", as the messages name a backend.
const char* backend_label(Device d) { return d == Device::cpu ? "CPU" : "CUDA"; }

// The activation dtypes `backend` runs, for messages: "f32 only", "f32 or bf16".
std::string act_dtypes(const Backend& backend) {
  std::string list;
  int count = 0;
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    if (!backend.supports(t)) continue;
    list += (count++ ? " or " : "") + std::string(dtype_name(t));
  }
  return count == 1 ? list + " only" : list;
}

std::string dims_str(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  bool first = true;
  for (int64_t d : dims) {
    s += (first ? "" : ",") + std::to_string(d);
    first = false;
  }
  return s + "]";
}

}  // namespace

// ---- OpCheck ----

OpCheck::OpCheck(const char* op, const Backend& backend) : op_(op), backend_(backend), device_(backend.device()) {}

void OpCheck::on_device(const char* name, const Tensor& t) const {
  if (t.device != device_)
    fail(op_, ": ", name, " is on ", device_name(t.device), " but this is the ", backend_label(device_), " backend");
  if (t.data == nullptr && t.numel() != 0) fail(op_, ": ", name, " is empty (null data) but required");
}

DType OpCheck::act_of(const char* name, const Tensor& t) const {
  on_device(name, t);
  if (!backend_.supports(t.dtype))
    fail(op_, ": ", name, " is ", t.str(), ": the ", backend_label(device_), " backend runs activations in ",
         act_dtypes(backend_));
  return t.dtype;
}

void OpCheck::act(const char* name, const Tensor& t, DType act) const {
  on_device(name, t);
  if (t.dtype == act) return;
  act_of(name, t);  // a dtype the backend does not run at all gets that message
  fail(op_, ": ", name, " is ", t.str(), ", expected activation dtype ", dtype_name(act));
}

void OpCheck::dtype(const char* name, const Tensor& t, DType want) const {
  on_device(name, t);
  if (t.dtype != want) fail(op_, ": ", name, " is ", t.str(), ", expected dtype ", dtype_name(want));
}

void OpCheck::shape(const char* name, const Tensor& t, std::initializer_list<int64_t> dims) const {
  bool same = t.ndim == int(dims.size());
  int i = 0;
  for (int64_t d : dims) same = same && t.shape[i++] == d;
  if (!same) fail(op_, ": ", name, " is ", t.str(), ", expected shape ", dims_str(dims));
}

void OpCheck::numel(const char* name, const Tensor& t, int64_t n) const {
  if (t.numel() != n) fail(op_, ": ", name, " is ", t.str(), " with ", t.numel(), " elements, expected ", n);
}

void OpCheck::matrix(const char* name, const Tensor& t) const {
  if (t.ndim != 2) fail(op_, ": ", name, " is ", t.str(), ", expected a 2-D tensor");
}

void OpCheck::probability(float p) const {
  that(std::isfinite(p) && p >= 0.f && p < 1.f, "dropout probability ", p, " is outside [0, 1)");
}

void OpCheck::host_indices(const char* name, const Tensor& ids, int64_t limit, const char* what) const {
  const int32_t* v = ids.as<const int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    that(v[i] >= 0 && v[i] < limit, name, "[", i, "] = ", v[i], " is outside ", what, " (", limit, " rows)");
}

// ---- pieces several ops share ----

namespace {

// Per-row layernorm statistics: f32 [T].
void check_stats(const OpCheck& c, Tensor mean, Tensor rstd, int64_t T) {
  for (auto [name, t] : {std::pair{"mean", mean}, {"rstd", rstd}}) {
    c.dtype(name, t, DType::f32);
    c.shape(name, t, {T});
  }
}

// Layernorm parameters: act [H].
void check_ln_params(const OpCheck& c, DType act, Tensor gamma, Tensor beta, int64_t H) {
  for (auto [name, t] : {std::pair{"gamma", gamma}, {"beta", beta}}) {
    c.act(name, t, act);
    c.shape(name, t, {H});
  }
}

// Layernorm parameter gradients: f32 [H].
void check_ln_grads(const OpCheck& c, Tensor dgamma, Tensor dbeta, int64_t H) {
  for (auto [name, t] : {std::pair{"dgamma", dgamma}, {"dbeta", dbeta}}) {
    c.dtype(name, t, DType::f32);
    c.shape(name, t, {H});
  }
}

// The three id tensors of the embeddings: i32 [T]. Their values are not read here.
void check_ids(const OpCheck& c, Tensor ids, Tensor pos_ids, Tensor type_ids, int64_t T) {
  for (auto [name, t] : {std::pair{"ids", ids}, {"pos_ids", pos_ids}, {"type_ids", type_ids}}) {
    c.dtype(name, t, DType::i32);
    c.shape(name, t, {T});
  }
}

// Layernorm divides by sqrt(var + eps): eps must keep that finite for a constant row.
void check_eps(const OpCheck& c, float eps) { c.that(eps > 0.f, "eps ", eps, " must be positive"); }

// An elementwise op's output against its input (dropout, tanh): same activation dtype and size.
DType check_elementwise(const OpCheck& c, const char* out_name, Tensor out, const char* in_name, Tensor in) {
  const DType act = c.act_of(in_name, in);
  c.act(out_name, out, act);
  c.numel(out_name, out, in.numel());
  return act;
}

// qkv, cu_seqlens, the batch and the scalars, which both attention directions take alike.
AttentionShape check_attention_inputs(const OpCheck& c, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch,
                                      int heads, float scale, float p) {
  const DType act = c.act_of("qkv", qkv);
  c.matrix("qkv", qkv);
  const int64_t T = qkv.dim(0);
  c.that(qkv.dim(1) % 3 == 0, "qkv is ", qkv.str(), ": its width must be 3 * hidden");
  const int64_t H = qkv.dim(1) / 3;
  c.that(heads > 0 && H % heads == 0, "hidden size ", H, " is not divisible by heads = ", heads);
  c.that(std::isfinite(scale), "scale ", scale, " is not finite");
  c.that(batch.tokens == T, "batch.tokens = ", batch.tokens, " but qkv has ", T, " rows");
  c.dtype("cu_seqlens", cu_seqlens, DType::i32);
  const int64_t B = batch.sequences;
  c.shape("cu_seqlens", cu_seqlens, {B + 1});
  // The dropout index packs the key position into 16 bits (attention_dropout_index).
  c.that(batch.max_seqlen >= 0 && batch.max_seqlen < 65536, "batch.max_seqlen = ", batch.max_seqlen,
         " (attention dropout indexes keys below 65536)");
  c.probability(p);
  return AttentionShape{act, T, H, B, heads, H / heads};
}

// The log-sum-exp rows attention saves: f32 [T, heads].
void check_lse(const OpCheck& c, Tensor lse, const AttentionShape& a) {
  c.dtype("lse", lse, DType::f32);
  c.shape("lse", lse, {a.T, int64_t(a.heads)});
}

// gather_rows / scatter_add_rows: `small` [B, C] rows of `big` [rows, C], picked by i32 `rows` [B].
GatherShape check_row_pick(const OpCheck& c, const char* small_name, Tensor small, const char* big_name, Tensor big,
                           Tensor rows) {
  const DType act = c.act_of(big_name, big);
  c.matrix(big_name, big);
  c.act(small_name, small, act);
  c.dtype("rows", rows, DType::i32);
  c.matrix(small_name, small);
  const int64_t B = small.dim(0), C = big.dim(1);
  c.shape(small_name, small, {B, C});
  c.shape("rows", rows, {B});
  return GatherShape{act, B, C};
}

}  // namespace

// ---- memory and elementwise helpers ----

void check_copy_from_host(const OpCheck& c, Tensor dst, const void* src) {
  c.on_device("dst", dst);
  c.that(src || dst.bytes() == 0, "null source");
}

void check_copy_to_host(const OpCheck& c, const void* dst, Tensor src) {
  c.on_device("src", src);
  c.that(dst || src.bytes() == 0, "null destination");
}

void check_copy(const OpCheck& c, Tensor dst, Tensor src) {
  c.on_device("dst", dst);
  c.on_device("src", src);
  c.that(dst.dtype == src.dtype, "dst is ", dst.str(), " but src is ", src.str(), " (use cast to change dtype)");
  c.numel("dst", dst, src.numel());
}

void check_fill(const OpCheck& c, Tensor x) { c.on_device("x", x); }

void check_cast(const OpCheck& c, Tensor dst, Tensor src) {
  c.on_device("dst", dst);
  c.on_device("src", src);
  c.numel("dst", dst, src.numel());
  if (dst.dtype == src.dtype) return;  // a plain copy, in place or not
  c.that(dst.dtype != DType::i32 && src.dtype != DType::i32, "cannot cast ", src.str(), " to ", dst.str(),
         " (casts are between f32, bf16 and f16)");
  // Converting element by element in place is right only for some dtype pairs: refuse all.
  c.that(dst.data != src.data || dst.numel() == 0, "dst and src share memory (in-place cast between dtypes)");
}

// ---- embeddings ----

LayerNormShape check_embeddings_forward(const OpCheck& c, Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids,
                                        Tensor pos_ids, Tensor type_ids, Tensor word, Tensor pos, Tensor type,
                                        Tensor gamma, Tensor beta, float eps) {
  const DType act = c.act_of("word", word);
  c.matrix("word", word);
  const int64_t H = word.dim(1);
  c.matrix("y", y);
  const int64_t T = y.dim(0);
  for (auto [name, t] : {std::pair{"y", y}, {"s", s}}) {
    c.act(name, t, act);
    c.shape(name, t, {T, H});
  }
  for (auto [name, t] : {std::pair{"pos", pos}, {"type", type}}) {
    c.act(name, t, act);
    c.matrix(name, t);
    c.that(t.dim(1) == H, name, " is ", t.str(), " but the word table has width ", H);
  }
  check_ln_params(c, act, gamma, beta, H);
  check_stats(c, mean, rstd, T);
  check_ids(c, ids, pos_ids, type_ids, T);
  check_eps(c, eps);
  return LayerNormShape{act, T, H};
}

LayerNormShape check_embeddings_backward(const OpCheck& c, Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma,
                                         Tensor dbeta, Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma,
                                         Tensor ids, Tensor pos_ids, Tensor type_ids) {
  const DType act = c.act_of("dy", dy);
  c.matrix("dy", dy);
  const int64_t T = dy.dim(0), H = dy.dim(1);
  c.act("s", s, act);
  c.shape("s", s, {T, H});
  c.act("gamma", gamma, act);
  c.shape("gamma", gamma, {H});
  for (auto [name, t] : {std::pair{"dword", dword}, {"dpos", dpos}, {"dtype", dtype}}) {
    c.dtype(name, t, DType::f32);
    c.matrix(name, t);
    c.that(t.dim(1) == H, name, " is ", t.str(), " but dy has width ", H);
  }
  check_ln_grads(c, dgamma, dbeta, H);
  check_stats(c, mean, rstd, T);
  check_ids(c, ids, pos_ids, type_ids, T);
  return LayerNormShape{act, T, H};
}

// ---- residual + dropout + layernorm ----

LayerNormShape check_add_dropout_layernorm_forward(const OpCheck& c, Tensor y, Tensor s, Tensor mean, Tensor rstd,
                                                   Tensor branch, Tensor residual, Tensor gamma, Tensor beta, float eps,
                                                   float p) {
  const DType act = c.act_of("branch", branch);
  c.matrix("branch", branch);
  const int64_t T = branch.dim(0), H = branch.dim(1);
  for (auto [name, t] : {std::pair{"y", y}, {"s", s}, {"residual", residual}}) {
    c.act(name, t, act);
    c.shape(name, t, {T, H});
  }
  check_ln_params(c, act, gamma, beta, H);
  check_stats(c, mean, rstd, T);
  c.probability(p);
  check_eps(c, eps);
  return LayerNormShape{act, T, H};
}

LayerNormShape check_add_dropout_layernorm_backward(const OpCheck& c, Tensor d_branch, Tensor d_residual, Tensor dgamma,
                                                    Tensor dbeta, Tensor dy, Tensor s, Tensor mean, Tensor rstd,
                                                    Tensor gamma, float p) {
  const DType act = c.act_of("dy", dy);
  c.matrix("dy", dy);
  const int64_t T = dy.dim(0), H = dy.dim(1);
  for (auto [name, t] : {std::pair{"d_branch", d_branch}, {"d_residual", d_residual}, {"s", s}}) {
    c.act(name, t, act);
    c.shape(name, t, {T, H});
  }
  // Two outputs with different values (d_branch is masked and scaled): one buffer cannot hold both.
  c.that(d_branch.data != d_residual.data || T * H == 0, "d_branch and d_residual must be different buffers");
  c.act("gamma", gamma, act);
  c.shape("gamma", gamma, {H});
  check_ln_grads(c, dgamma, dbeta, H);
  check_stats(c, mean, rstd, T);
  c.probability(p);
  return LayerNormShape{act, T, H};
}

// ---- dropout (y may alias x) ----

DType check_dropout_forward(const OpCheck& c, Tensor y, Tensor x, float p) {
  const DType act = check_elementwise(c, "y", y, "x", x);
  c.probability(p);
  return act;
}

DType check_dropout_backward(const OpCheck& c, Tensor dx, Tensor dy, float p) {
  const DType act = check_elementwise(c, "dx", dx, "dy", dy);
  c.probability(p);
  return act;
}

// ---- linear layers ----

LinearShape check_linear_forward(const OpCheck& c, Tensor y, Tensor x, Tensor w, Tensor b, Activation act_fn,
                                 Tensor pre) {
  const DType act = c.act_of("x", x);
  c.matrix("x", x);
  c.act("w", w, act);
  c.matrix("w", w);
  const int64_t N = x.dim(0), in = x.dim(1), out = w.dim(0);
  c.that(w.dim(1) == in, "w is ", w.str(), " but x is ", x.str(), " (w must be [out, ", in, "])");
  c.act("y", y, act);
  c.shape("y", y, {N, out});
  if (!b.empty()) {
    c.act("b", b, act);
    c.shape("b", b, {out});
  }
  // The product reads x while it writes y (and pre): they must not overlap.
  c.that(y.data != x.data || N == 0, "y and x must be different buffers");
  const LinearShape shape{act, N, in, out};
  if (act_fn == Activation::none) return shape;
  c.that(act_fn == Activation::gelu, "unknown activation ", int(act_fn));
  c.act("pre", pre, act);
  c.shape("pre", pre, {N, out});
  c.that(pre.data != x.data || N == 0, "pre and x must be different buffers");
  return shape;
}

LinearShape check_linear_backward_dx(const OpCheck& c, Tensor dx, Tensor dy, Tensor w, bool accumulate,
                                     Activation act_of_x, Tensor pre_of_x) {
  const DType act = c.act_of("dy", dy);
  c.matrix("dy", dy);
  c.act("w", w, act);
  c.matrix("w", w);
  const int64_t N = dy.dim(0), out = dy.dim(1), in = w.dim(1);
  c.that(w.dim(0) == out, "w is ", w.str(), " but dy is ", dy.str(), " (w must be [", out, ", in])");
  c.act("dx", dx, act);
  c.shape("dx", dx, {N, in});
  c.that(dx.data != dy.data || N == 0, "dx and dy must be different buffers");
  if (act_of_x == Activation::gelu) {
    c.that(!accumulate,
           "accumulate together with a GELU on x is not supported (the GELU derivative would "
           "multiply the gradient already in dx)");
    c.act("pre_of_x", pre_of_x, act);
    c.shape("pre_of_x", pre_of_x, {N, in});
    c.that(pre_of_x.data != dx.data || N == 0, "dx and pre_of_x must be different buffers");
  } else {
    c.that(act_of_x == Activation::none, "unknown activation ", int(act_of_x));
  }
  return LinearShape{act, N, in, out};
}

LinearShape check_linear_backward_dw(const OpCheck& c, Tensor dw, Tensor db, Tensor dy, Tensor x) {
  const DType act = c.act_of("dy", dy);
  c.matrix("dy", dy);
  c.act("x", x, act);
  c.matrix("x", x);
  const int64_t N = dy.dim(0), out = dy.dim(1), in = x.dim(1);
  c.that(x.dim(0) == N, "x is ", x.str(), " but dy is ", dy.str(), " (same number of rows)");
  c.dtype("dw", dw, DType::f32);
  c.shape("dw", dw, {out, in});
  if (!db.empty()) {
    c.dtype("db", db, DType::f32);
    c.shape("db", db, {out});
  }
  return LinearShape{act, N, in, out};
}

// ---- low-rank adapters ----

namespace {
// What both directions share: x, A, B, z, u and the column window [col, col + out) of the
// C-column output (or output gradient) `t`.
LoraShape check_lora_common(const OpCheck& c, const char* t_name, Tensor t, Tensor z, Tensor u, Tensor x, Tensor a,
                            Tensor b, const LoraArgs& args) {
  const DType act = c.act_of("x", x);
  c.matrix("x", x);
  c.act("a", a, act);
  c.matrix("a", a);
  c.act("b", b, act);
  c.matrix("b", b);
  const int64_t N = x.dim(0), in = x.dim(1), r = a.dim(0), out = b.dim(0);
  c.that(r >= 1, "a is ", a.str(), ": rank 0");
  c.that(a.dim(1) == in, "a is ", a.str(), " but x is ", x.str(), " (a must be [r, ", in, "])");
  c.that(b.dim(1) == r, "b is ", b.str(), " but a is ", a.str(), " (b must be [out, ", r, "])");
  c.act(t_name, t, act);
  c.matrix(t_name, t);
  const int64_t C = t.dim(1);
  c.that(t.dim(0) == N, t_name, " is ", t.str(), " but x is ", x.str(), " (same number of rows)");
  c.that(args.col >= 0 && args.col + out <= C, "columns [", args.col, ", ", args.col + out, ") lie outside ", t_name,
         " ", t.str());
  c.act("z", z, act);
  c.shape("z", z, {N, r});
  c.probability(args.p);
  if (args.p > 0.f) {
    c.act("u", u, act);
    c.shape("u", u, {N, in});
    c.that(u.data != x.data || N == 0, "u and x must be different buffers");
  }
  c.that(std::isfinite(args.scale), "scale ", args.scale, " is not finite");
  return LoraShape{act, N, in, r, out, C};
}

void check_gelu_partner(const OpCheck& c, const char* name, Tensor pre, Activation act_fn, DType act,
                        std::initializer_list<int64_t> dims) {
  if (act_fn == Activation::none) return;
  c.that(act_fn == Activation::gelu, "unknown activation ", int(act_fn));
  c.act(name, pre, act);
  c.shape(name, pre, dims);
}
}  // namespace

LoraShape check_lora_forward(const OpCheck& c, Tensor y, Tensor z, Tensor u, Tensor x, Tensor a, Tensor b,
                             const LoraArgs& args, Activation act_fn, Tensor pre) {
  const bool gelu = act_fn == Activation::gelu;
  const LoraShape s = check_lora_common(c, gelu ? "pre" : "y", gelu ? pre : y, z, u, x, a, b, args);
  if (gelu) {
    c.that(args.col == 0 && s.out == s.C, "a GELU after the adapted layer needs the whole output (col 0, ", s.C,
           " columns), got columns [", args.col, ", ", args.col + s.out, ")");
    check_gelu_partner(c, "y", y, act_fn, s.act, {s.N, s.out});
  }
  c.that(y.data != x.data || s.N == 0, "y and x must be different buffers");
  return s;
}

LoraShape check_lora_backward(const OpCheck& c, Tensor dx, Tensor da, Tensor db, Tensor dz, Tensor u, Tensor dy,
                              Tensor x, Tensor z, Tensor a, Tensor b, const LoraArgs& args, Activation act_of_x,
                              Tensor pre_of_x) {
  const LoraShape s = check_lora_common(c, "dy", dy, z, u, x, a, b, args);
  c.act("dz", dz, s.act);
  c.shape("dz", dz, {s.N, s.r});
  c.that(dz.data != z.data || s.N == 0, "dz and z must be different buffers");
  c.dtype("da", da, DType::f32);
  c.shape("da", da, {s.r, s.in});
  c.dtype("db", db, DType::f32);
  c.shape("db", db, {s.out, s.r});
  if (!dx.empty()) {
    c.act("dx", dx, s.act);
    c.shape("dx", dx, {s.N, s.in});
    check_gelu_partner(c, "pre_of_x", pre_of_x, act_of_x, s.act, {s.N, s.in});
  }
  return s;
}

// ---- attention ----

AttentionShape check_attention_forward(const OpCheck& c, Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens,
                                       const BatchShape& batch, int heads, float scale, float p) {
  const AttentionShape a = check_attention_inputs(c, qkv, cu_seqlens, batch, heads, scale, p);
  c.act("out", out, a.act);
  c.shape("out", out, {a.T, a.H});
  check_lse(c, lse, a);
  c.that(out.data != qkv.data || a.T == 0, "out and qkv must be different buffers");
  return a;
}

AttentionShape check_attention_backward(const OpCheck& c, Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                        Tensor cu_seqlens, const BatchShape& batch, int heads, float scale, float p) {
  const AttentionShape a = check_attention_inputs(c, qkv, cu_seqlens, batch, heads, scale, p);
  c.act("dqkv", dqkv, a.act);
  c.shape("dqkv", dqkv, {a.T, 3 * a.H});
  for (auto [name, t] : {std::pair{"dout", dout}, {"out", out}}) {
    c.act(name, t, a.act);
    c.shape(name, t, {a.T, a.H});
  }
  check_lse(c, lse, a);
  c.that(dqkv.data != qkv.data || a.T == 0, "dqkv and qkv must be different buffers");
  return a;
}

// ---- pooler pieces ----

GatherShape check_gather_rows(const OpCheck& c, Tensor out, Tensor x, Tensor rows) {
  return check_row_pick(c, "out", out, "x", x, rows);
}

GatherShape check_scatter_add_rows(const OpCheck& c, Tensor dx, Tensor dout, Tensor rows) {
  return check_row_pick(c, "dout", dout, "dx", dx, rows);
}

DType check_tanh_forward(const OpCheck& c, Tensor y, Tensor x) { return check_elementwise(c, "y", y, "x", x); }

DType check_tanh_backward(const OpCheck& c, Tensor dx, Tensor dy, Tensor y) {
  const DType act = c.act_of("dy", dy);
  c.act("y", y, act);
  c.act("dx", dx, act);
  c.numel("y", y, dy.numel());
  c.numel("dx", dx, dy.numel());
  return act;
}

// ---- losses (the gradient tensor may be empty: losses only) ----

LossShape check_cross_entropy(const OpCheck& c, Tensor losses, Tensor dlogits, Tensor logits, Tensor labels) {
  const DType act = c.act_of("logits", logits);
  c.matrix("logits", logits);
  const int64_t N = logits.dim(0), C = logits.dim(1);
  c.that(C > 0, "logits is ", logits.str(), ": no classes");
  c.dtype("labels", labels, DType::i32);
  c.shape("labels", labels, {N});
  c.dtype("losses", losses, DType::f32);
  c.shape("losses", losses, {N});
  if (!dlogits.empty()) {
    c.act("dlogits", dlogits, act);
    c.shape("dlogits", dlogits, {N, C});
  }
  return LossShape{act, N, C};
}

LossShape check_mse(const OpCheck& c, Tensor losses, Tensor dpred, Tensor pred, Tensor target) {
  const DType act = c.act_of("pred", pred);
  const int64_t N = pred.ndim >= 1 ? pred.dim(0) : 0;
  c.shape("pred", pred, {N, 1});
  c.dtype("target", target, DType::f32);
  c.shape("target", target, {N});
  c.dtype("losses", losses, DType::f32);
  c.shape("losses", losses, {N});
  if (!dpred.empty()) {
    c.act("dpred", dpred, act);
    c.shape("dpred", dpred, {N, 1});
  }
  return LossShape{act, N, 1};
}

SpanLossShape check_span_cross_entropy(const OpCheck& c, Tensor losses, Tensor dlogits, Tensor logits,
                                       Tensor cu_seqlens, Tensor positions, const BatchShape& batch) {
  const DType act = c.act_of("logits", logits);
  c.matrix("logits", logits);
  const int64_t T = logits.dim(0), B = batch.sequences;
  c.shape("logits", logits, {T, 2});
  c.that(batch.tokens == T, "batch.tokens = ", batch.tokens, " but logits has ", T, " rows");
  c.dtype("cu_seqlens", cu_seqlens, DType::i32);
  c.shape("cu_seqlens", cu_seqlens, {B + 1});
  c.dtype("positions", positions, DType::i32);
  c.shape("positions", positions, {B, 2});
  c.dtype("losses", losses, DType::f32);
  c.shape("losses", losses, {B, 2});
  if (!dlogits.empty()) {
    c.act("dlogits", dlogits, act);
    c.shape("dlogits", dlogits, {T, 2});
    c.that(dlogits.data != logits.data || T == 0, "dlogits and logits must be different buffers");
  }
  return SpanLossShape{act, T, B};
}

// ---- optimizer ----

void check_global_norm(const OpCheck& c, Tensor norm, Tensor grads) {
  c.dtype("grads", grads, DType::f32);
  c.dtype("norm", norm, DType::f32);
  c.numel("norm", norm, 1);
}

int64_t check_adamw(const OpCheck& c, Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
                    const AdamWArgs& args) {
  const int64_t n = params.numel();
  for (auto [name, t] : {std::pair{"params", params}, {"grads", grads}, {"m", m}, {"v", v}}) {
    c.dtype(name, t, DType::f32);
    c.numel(name, t, n);
  }
  if (!working.empty()) {
    c.on_device("working", working);
    c.that(working.dtype != DType::i32, "working is ", working.str(), ", expected f32, bf16 or f16");
    c.numel("working", working, n);
  }
  c.that(args.step >= 1, "step ", args.step, " must be >= 1 (bias correction is 1-based)");
  c.that(args.decay_end >= 0 && args.decay_end <= n, "decay_end ", args.decay_end, " is outside [0, ", n, "]");
  c.that(std::isfinite(args.lr) && std::isfinite(args.eps) && std::isfinite(args.weight_decay),
         "lr, eps and weight_decay must be finite");
  c.that(args.beta1 >= 0.f && args.beta1 < 1.f && args.beta2 >= 0.f && args.beta2 < 1.f, "betas (", args.beta1, ", ",
         args.beta2, ") must lie in [0, 1)");
  // The norm is read only when clipping.
  if (args.max_grad_norm > 0.f) {
    c.dtype("norm", norm, DType::f32);
    c.numel("norm", norm, 1);
  }
  return n;
}

}  // namespace engine
