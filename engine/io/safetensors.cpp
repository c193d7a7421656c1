// safetensors reader (mmap + full validation of the header against the file) and writer (HF's
// exact layout, written atomically). The reader's rule: nothing in the file is trusted until the
// header has been checked against the file's size, so no input can make us read out of bounds.
#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/bf16.h"
#include "engine/error.h"
#include "engine/io/atomic_file.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; so must the host be");

namespace engine::io {

namespace {

using json = nlohmann::json;

struct DTypeInfo {
  StDType type;
  const char* name;
  int bits;
};

constexpr DTypeInfo kDTypes[] = {
    {StDType::BOOL, "BOOL", 8},      {StDType::U8, "U8", 8},           {StDType::I8, "I8", 8},
    {StDType::I16, "I16", 16},       {StDType::U16, "U16", 16},        {StDType::U32, "U32", 32},
    {StDType::U64, "U64", 64},       {StDType::I32, "I32", 32},        {StDType::I64, "I64", 64},
    {StDType::F16, "F16", 16},       {StDType::BF16, "BF16", 16},      {StDType::F32, "F32", 32},
    {StDType::F64, "F64", 64},       {StDType::F8_E4M3, "F8_E4M3", 8}, {StDType::F8_E5M2, "F8_E5M2", 8},
    {StDType::F8_E8M0, "F8_E8M0", 8}, {StDType::F4, "F4", 4},          {StDType::F6_E2M3, "F6_E2M3", 6},
    {StDType::F6_E3M2, "F6_E3M2", 6}, {StDType::C64, "C64", 64},
};

const DTypeInfo& info_of(StDType t) {
  for (const DTypeInfo& d : kDTypes) {
    if (d.type == t) return d;
  }
  fail("safetensors: invalid dtype value ", int(t));
}

const DTypeInfo* find_dtype(const std::string& name) {
  for (const DTypeInfo& d : kDTypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

// Reads a JSON number that must be a non-negative integer: the only kind of number the header has.
// Floats (2.0, 1e3), negative values and integers too large for 64 bits (nlohmann turns those into
// floats) are all refused.
bool as_non_negative_integer(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    *out = uint64_t(s);
    return true;
  }
  return false;
}

// Parses the header, refusing duplicate top-level keys: nlohmann would silently keep the last one,
// which would hide a tensor.
json parse_header(const char* begin, const char* end, const std::string& where) {
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, on_event);
  } catch (const json::exception& e) {
    fail(where, "header is not valid JSON: ", e.what());
  }
  ENGINE_CHECK(header.is_object(), where, "header is not a JSON object");
  ENGINE_CHECK(duplicate.empty(), where, "duplicate entry '", duplicate, "' in the header");
  return header;
}

std::map<std::string, std::string> parse_metadata(const json& m, const std::string& where) {
  ENGINE_CHECK(m.is_object(), where, "\"__metadata__\" is not a JSON object");
  std::map<std::string, std::string> out;
  for (auto it = m.begin(); it != m.end(); ++it) {
    ENGINE_CHECK(it.value().is_string(), where, "\"__metadata__\" value of '", it.key(), "' is not a string");
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

// One header entry checked on its own: types of every field, dtype known, dims non-negative
// integers, offsets inside the data section, byte count equal to what dtype and shape need.
SafetensorsTensor parse_entry(const std::string& name, const json& e, uint64_t data_size, const std::string& where) {
  const std::string at = where + "tensor '" + name + "': ";
  ENGINE_CHECK(e.is_object(), at, "entry is not a JSON object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    ENGINE_CHECK(e.contains(field), at, "missing \"", field, "\"");
  }
  SafetensorsTensor t;
  t.name = name;

  const json& dt = e["dtype"];
  ENGINE_CHECK(dt.is_string(), at, "\"dtype\" is not a string");
  const DTypeInfo* info = find_dtype(dt.get<std::string>());
  ENGINE_CHECK(info, at, "unknown dtype \"", dt.get<std::string>(), "\"");
  t.dtype = info->type;

  const json& shape = e["shape"];
  ENGINE_CHECK(shape.is_array(), at, "\"shape\" is not an array");
  // Element count in 64 bits with an overflow check at each step; bounded by 2^62 so that
  // numel * bits (at most 64) cannot overflow below.
  uint64_t numel = 1;
  constexpr uint64_t kMaxNumel = uint64_t(1) << 56;
  for (const json& d : shape) {
    uint64_t dim = 0;
    if (!as_non_negative_integer(d, &dim)) {
      ENGINE_CHECK(!(d.is_number_integer() && d.get<int64_t>() < 0), at, "negative dimension ", d.dump(),
                   " in shape ", shape.dump());
      fail(at, "dimension ", d.dump(), " in shape ", shape.dump(), " is not an integer");
    }
    ENGINE_CHECK(dim <= kMaxNumel && (dim == 0 || numel <= kMaxNumel / dim), at, "element count of shape ",
                 shape.dump(), " overflows");
    numel *= dim;
    t.shape.push_back(int64_t(dim));
  }

  const json& off = e["data_offsets"];
  uint64_t begin = 0, end = 0;
  ENGINE_CHECK(off.is_array() && off.size() == 2 && as_non_negative_integer(off[0], &begin) &&
                   as_non_negative_integer(off[1], &end),
               at, "\"data_offsets\" must be two non-negative integers, got ", off.dump());
  ENGINE_CHECK(begin <= end, at, "data_offsets ", off.dump(), " decrease");
  ENGINE_CHECK(end <= data_size, at, "data_offsets ", off.dump(), " end past the end of the data section (",
               data_size, " bytes)");
  t.begin = begin;
  t.end = end;

  uint64_t bits = numel * uint64_t(info->bits);
  ENGINE_CHECK(bits % 8 == 0, at, numel, " elements of ", info->name, " are not a whole number of bytes");
  ENGINE_CHECK(end - begin == bits / 8, at, "size mismatch: data_offsets ", off.dump(), " hold ", end - begin,
               " bytes but ", info->name, " ", t.shape_str(), " needs ", bits / 8);
  t.nbytes = size_t(end - begin);
  return t;
}

// Tensors sorted by offset must tile the data section exactly: each begins where the previous one
// ended, the first at 0 and the last ends at the end. An overlap means two tensors share bytes; a
// gap (a hole, or trailing bytes) means bytes that belong to no tensor, which HF's writer never
// produces and HF's reader also rejects: it is a corrupt or tampered file, not a format variant.
void check_tiling(std::vector<SafetensorsTensor>& tensors, uint64_t data_size, const std::string& where) {
  std::sort(tensors.begin(), tensors.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  const SafetensorsTensor* prev = nullptr;
  for (const SafetensorsTensor& t : tensors) {
    ENGINE_CHECK(t.begin >= pos, where, "tensor '", t.name, "' [", t.begin, ", ", t.end, ") overlaps tensor '",
                 prev ? prev->name : "", "' [", prev ? prev->begin : 0, ", ", pos, ")");
    ENGINE_CHECK(t.begin == pos, where, "gap of ", t.begin - pos, " bytes in the data section before tensor '",
                 t.name, "' (bytes belonging to no tensor: the file is corrupt)");
    pos = t.end;
    prev = &t;
  }
  ENGINE_CHECK(pos == data_size, where, "gap of ", data_size - pos,
               " trailing bytes at the end of the data section that belong to no tensor (the file is corrupt)");
}

}  // namespace

const char* st_dtype_name(StDType t) { return info_of(t).name; }
int st_dtype_bits(StDType t) { return info_of(t).bits; }

bool to_engine_dtype(StDType t, DType* out) {
  switch (t) {
    case StDType::F32: *out = DType::f32; return true;
    case StDType::BF16: *out = DType::bf16; return true;
    case StDType::F16: *out = DType::f16; return true;
    case StDType::I32: *out = DType::i32; return true;
    default: return false;
  }
}

StDType from_engine_dtype(DType t) {
  switch (t) {
    case DType::f32: return StDType::F32;
    case DType::bf16: return StDType::BF16;
    case DType::f16: return StDType::F16;
    case DType::i32: return StDType::I32;
  }
  fail("safetensors: invalid engine dtype ", int(t));
}

int64_t SafetensorsTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string SafetensorsTensor::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafetensorsFile SafetensorsFile::validate(std::shared_ptr<const uint8_t> storage, size_t size, std::string source) {
  const std::string where = "safetensors file '" + source + "': ";
  ENGINE_CHECK(size > 0, where, "file is empty");
  ENGINE_CHECK(size >= 8, where, "file is too short (", size, " bytes) to hold the 8-byte header length");
  const uint8_t* base = storage.get();
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);
  ENGINE_CHECK(header_len <= kMaxSafetensorsHeader, where, "header length ", header_len, " exceeds the limit of ",
               kMaxSafetensorsHeader, " bytes");
  ENGINE_CHECK(header_len <= size - 8, where, "header length ", header_len, " runs past the end of the file (",
               size, " bytes)");
  const char* header_begin = reinterpret_cast<const char*>(base + 8);
  json header = parse_header(header_begin, header_begin + header_len, where);

  SafetensorsFile f;
  f.path_ = std::move(source);
  const uint64_t data_size = size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      f.metadata_ = parse_metadata(it.value(), where);
    } else {
      f.tensors_.push_back(parse_entry(it.key(), it.value(), data_size, where));
    }
  }
  check_tiling(f.tensors_, data_size, where);

  const uint8_t* data = base + 8 + header_len;
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    f.tensors_[i].data = data + f.tensors_[i].begin;
    f.index_[f.tensors_[i].name] = i;
  }
  f.storage_ = std::move(storage);
  f.size_ = size;
  return f;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open safetensors file '", path, "': ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail("cannot stat safetensors file '", path, "': ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("cannot open safetensors file '", path, "': not a regular file");
  }
  size_t size = size_t(st.st_size);
  std::shared_ptr<const uint8_t> storage;
  if (size > 0) {  // mmap of length 0 is an error; validate reports the empty file
    // MAP_PRIVATE read-only: checkpoints are replaced by rename, never truncated in place, so the
    // mapping stays valid for as long as we hold it.
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail("cannot mmap safetensors file '", path, "': ", std::strerror(err));
    }
    storage = std::shared_ptr<const uint8_t>(static_cast<const uint8_t*>(p),
                                             [size](const uint8_t* q) { ::munmap(const_cast<uint8_t*>(q), size); });
  }
  ::close(fd);  // the mapping keeps the file alive
  return validate(std::move(storage), size, path);
}

SafetensorsFile SafetensorsFile::parse(std::string bytes, const std::string& source) {
  // Copied into an allocation of exactly the file's size (a std::string has spare capacity and a
  // NUL after its end), so that a sanitizer flags any read past the end of the file.
  std::shared_ptr<uint8_t> storage(new uint8_t[bytes.size() ? bytes.size() : 1], std::default_delete<uint8_t[]>());
  if (!bytes.empty()) std::memcpy(storage.get(), bytes.data(), bytes.size());
  return validate(std::move(storage), bytes.size(), source);
}

bool SafetensorsFile::has(const std::string& name) const { return index_.count(name) != 0; }

const SafetensorsTensor& SafetensorsFile::get(const std::string& name) const {
  auto it = index_.find(name);
  ENGINE_CHECK(it != index_.end(), "safetensors file '", path_, "': no tensor named '", name, "'");
  return tensors_[it->second];
}

std::vector<float> SafetensorsFile::to_f32(const std::string& name) const {
  const SafetensorsTensor& t = get(name);
  const size_t n = size_t(t.numel());
  std::vector<float> out(n);
  switch (t.dtype) {
    case StDType::F32:
      if (n) std::memcpy(out.data(), t.data, n * 4);
      break;
    case StDType::BF16:
    case StDType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = t.dtype == StDType::BF16 ? bf16_to_float(h) : fp16_to_float(h);
      }
      break;
    case StDType::F64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, t.data + 8 * i, 8);
        out[i] = float(d);
      }
      break;
    default:
      fail("safetensors file '", path_, "': tensor '", name, "' has dtype ", st_dtype_name(t.dtype),
           ", which cannot be converted to F32 (only F32, BF16, F16 and F64 can)");
  }
  return out;
}

namespace {

// A tensor placed in the data section: where its bytes go and where they come from.
struct Placed {
  const SafetensorsWriteEntry* entry;
  uint64_t begin, nbytes;
};

// HF's writer orders data by dtype, widest first, then by name (safetensors' Rust `prepare` sorts
// by its Dtype enum descending, which for our four dtypes is F32, I32, BF16, F16). Matching it
// makes our files byte-identical to HF's, and widest-first keeps every tensor aligned to its
// element size within the data section.
int write_rank(DType t) {
  switch (t) {
    case DType::f32: return 0;
    case DType::i32: return 1;
    case DType::bf16: return 2;
    case DType::f16: return 3;
  }
  return 4;
}

// Validates the entries, lays them out and returns the padded header; *placed gets the data order.
std::string plan_file(const std::vector<SafetensorsWriteEntry>& entries,
                      const std::map<std::string, std::string>& metadata, std::vector<Placed>* placed) {
  std::set<std::string> names;
  std::vector<const SafetensorsWriteEntry*> order;
  for (const SafetensorsWriteEntry& e : entries) {
    ENGINE_CHECK(!e.name.empty(), "write_safetensors: a tensor has an empty name");
    ENGINE_CHECK(e.name != "__metadata__", "write_safetensors: '__metadata__' is reserved, not a tensor name");
    ENGINE_CHECK(names.insert(e.name).second, "write_safetensors: duplicate tensor name '", e.name, "'");
    order.push_back(&e);
  }
  std::sort(order.begin(), order.end(), [](const SafetensorsWriteEntry* a, const SafetensorsWriteEntry* b) {
    int ra = write_rank(a->dtype), rb = write_rank(b->dtype);
    return ra != rb ? ra < rb : a->name < b->name;
  });

  // ordered_json keeps insertion order: "__metadata__" first, then tensors in data order, as HF.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (const SafetensorsWriteEntry* e : order) {
    uint64_t numel = 1;
    for (int64_t d : e->shape) {
      ENGINE_CHECK(d >= 0, "write_safetensors: tensor '", e->name, "' has negative dimension ", d);
      ENGINE_CHECK(d == 0 || numel <= (uint64_t(1) << 56) / uint64_t(d), "write_safetensors: tensor '", e->name,
                   "' is too large");
      numel *= uint64_t(d);
    }
    uint64_t nbytes = numel * dtype_size(e->dtype);
    ENGINE_CHECK(nbytes == 0 || e->data, "write_safetensors: tensor '", e->name, "' has no data pointer");
    header[e->name] = {{"dtype", st_dtype_name(from_engine_dtype(e->dtype))},
                       {"shape", e->shape},
                       {"data_offsets", {offset, offset + nbytes}}};
    placed->push_back({e, offset, nbytes});
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& ex) {  // a name or metadata string that is not UTF-8
    fail("write_safetensors: cannot encode the header: ", ex.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // pad as HF does, so the data starts 8-aligned
  return text;
}

std::string length_prefix(uint64_t n) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &n, 8);
  return s;
}

}  // namespace

std::string serialize_safetensors(const std::vector<SafetensorsWriteEntry>& entries,
                                  const std::map<std::string, std::string>& metadata) {
  std::vector<Placed> placed;
  std::string header = plan_file(entries, metadata, &placed);
  std::string out = length_prefix(header.size()) + header;
  for (const Placed& p : placed) {
    if (p.nbytes) out.append(static_cast<const char*>(p.entry->data), p.nbytes);
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteEntry>& entries,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<Placed> placed;
  std::string header = plan_file(entries, metadata, &placed);  // validate before creating any file
  write_file_atomic(path, [&](FileSink& sink) {
    sink.write(length_prefix(header.size()));
    sink.write(header);
    for (const Placed& p : placed) sink.write(p.entry->data, p.nbytes);
  });
}

}  // namespace engine::io
