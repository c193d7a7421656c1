#include "engine/model/params.h"

#include <cstring>

#include "engine/bf16.h"

namespace engine {

void ParamStore::add(const std::string& name, std::vector<int64_t> shape, bool follows_previous) {
  ENGINE_CHECK(master_.empty(), "parameter '", name, "' added after the store was planned");
  ENGINE_CHECK(!index_.count(name), "parameter '", name, "' added twice");
  ParamInfo p;
  p.name = name;
  p.shape = std::move(shape);
  p.numel = 1;
  for (int64_t d : p.shape) p.numel *= d;
  p.decay = !no_decay_;
  ENGINE_CHECK(!follows_previous || !params_.empty(), "parameter '", name, "' follows no previous parameter");
  p.follows_previous = follows_previous;
  index_[name] = params_.size();
  params_.push_back(std::move(p));
}

void ParamStore::begin_no_decay() {
  ENGINE_CHECK(!no_decay_, "begin_no_decay() called twice");
  no_decay_ = true;
}

void ParamStore::add_decayed(const std::string& name, std::vector<int64_t> shape) {
  add(name, std::move(shape));
  params_.back().decay = true;
}

void ParamStore::freeze(const std::string& name) {
  ENGINE_CHECK(master_.empty(), "parameter '", name, "' frozen after the store was planned");
  get(name);  // a clear error for an unknown name
  params_[index_.at(name)].trainable = false;
}

namespace {
int64_t align_up(int64_t n) { return (n + ParamStore::kAlign - 1) / ParamStore::kAlign * ParamStore::kAlign; }
}  // namespace

void ParamStore::plan(Arena& arena, DType working_dtype) {
  // Offsets group by group, in registration order inside each group, so a follows_previous chain
  // stays contiguous as long as its members share a group (checked).
  for (size_t i = 1; i < params_.size(); ++i) {
    const ParamInfo &p = params_[i], &prev = params_[i - 1];
    ENGINE_CHECK(!p.follows_previous || (p.trainable == prev.trainable && p.decay == prev.decay), "parameter '",
                 p.name, "' must be frozen (and decayed) together with '", prev.name, "', which it follows");
  }
  int64_t end = 0;
  auto place = [&](bool trainable, bool decay) {
    for (ParamInfo& p : params_) {
      if (p.trainable != trainable || (trainable && p.decay != decay)) continue;
      p.offset = p.follows_previous ? end : align_up(end);
      end = p.offset + p.numel;
    }
    end = align_up(end);
  };
  place(true, true);
  decay_end_ = end;
  place(true, false);
  trainable_end_ = end;
  place(false, false);
  total_ = end;
  ENGINE_CHECK(trainable_end_ > 0, "a model with no trainable parameter");
  arena.plan(&master_, DType::f32, {total_}, "params.master");
  arena.plan(&grads_, DType::f32, {trainable_end_}, "params.grads");
  arena.plan(&m_, DType::f32, {trainable_end_}, "params.adam_m");
  arena.plan(&v_, DType::f32, {trainable_end_}, "params.adam_v");
  if (working_dtype != DType::f32) arena.plan(&working_, working_dtype, {total_}, "params.working");
}

Tensor ParamStore::grad(const std::string& name) const {
  const ParamInfo& p = get(name);
  return p.trainable ? view(grads_, p) : Tensor{};
}

const ParamInfo* ParamStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}

const ParamInfo& ParamStore::get(const std::string& name) const {
  const ParamInfo* p = find(name);
  ENGINE_CHECK(p, "no parameter named '", name, "'");
  return *p;
}

int64_t ParamStore::count() const {
  int64_t n = 0;
  for (const ParamInfo& p : params_) n += p.numel;
  return n;
}

int64_t ParamStore::trainable_count() const {
  int64_t n = 0;
  for (const ParamInfo& p : params_) n += p.trainable ? p.numel : 0;
  return n;
}

Tensor ParamStore::view(Tensor flat, const ParamInfo& p) {
  Tensor t = flat;
  t.data = static_cast<char*>(flat.data) + size_t(p.offset) * dtype_size(flat.dtype);
  t.ndim = int(p.shape.size());
  for (int i = 0; i < t.ndim; ++i) t.shape[i] = p.shape[i];
  return t;
}

Tensor ParamStore::span(Tensor flat, const ParamInfo& first, std::initializer_list<int64_t> dims) {
  Tensor t(static_cast<char*>(flat.data) + size_t(first.offset) * dtype_size(flat.dtype), flat.dtype, flat.device,
           dims);
  ENGINE_CHECK(first.offset + t.numel() <= flat.numel(), "span past the end of the parameter buffer");
  return t;
}

std::vector<float> ParamStore::get_host(Backend& backend, const std::string& name) const {
  const ParamInfo& p = get(name);
  std::vector<float> out(size_t(p.numel));
  backend.copy_to_host(out.data(), view(master_, p));
  return out;
}

std::vector<float> ParamStore::grad_host(Backend& backend, const std::string& name) const {
  const ParamInfo& p = get(name);
  ENGINE_CHECK(p.trainable, "parameter '", name, "' is frozen: it has no gradient");
  std::vector<float> out(size_t(p.numel));
  backend.copy_to_host(out.data(), view(grads_, p));
  return out;
}

void ParamStore::set_host(Backend& backend, const std::string& name, const std::vector<float>& values) {
  const ParamInfo& p = get(name);
  ENGINE_CHECK(int64_t(values.size()) == p.numel, "parameter '", name, "' has ", p.numel, " elements, got ",
               values.size());
  backend.copy_from_host(view(master_, p), values.data());
  if (!working_.empty()) backend.cast(view(working_, p), view(master_, p));
}

std::vector<float> ParamStore::master_host(Backend& backend) const {
  std::vector<float> out(size_t(master_.numel()));
  backend.copy_to_host(out.data(), master_);
  return out;
}

void ParamStore::sync_working(Backend& backend) {
  if (!working_.empty()) backend.cast(working_, master_);
}

}  // namespace engine
