#include "engine/arena.h"

namespace engine {

Arena::~Arena() {
  if (base_) backend_.release(base_);
}

void Arena::plan(Tensor* slot, DType dtype, std::initializer_list<int64_t> dims, std::string label) {
  ENGINE_CHECK(!base_, "arena '", name_, "': cannot plan '", label, "' after allocation");
  Tensor t(nullptr, dtype, backend_.device(), dims);
  size_t offset = (bytes_ + kAlignment - 1) / kAlignment * kAlignment;
  bytes_ = offset + t.bytes();
  entries_.push_back(Entry{slot, t, offset, std::move(label)});
  *slot = t;
}

void Arena::allocate() {
  ENGINE_CHECK(!base_, "arena '", name_, "' allocated twice");
  base_ = backend_.allocate(bytes_ ? bytes_ : kAlignment);
  ENGINE_CHECK(base_, "arena '", name_, "': could not allocate ", bytes_, " bytes on ", backend_.name());
  for (Entry& e : entries_) {
    *e.slot = e.shape;
    e.slot->data = static_cast<char*>(base_) + e.offset;
  }
}

}  // namespace engine
