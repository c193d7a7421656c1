// Reading and writing the safetensors format that Hugging Face checkpoints use: an 8-byte
// little-endian header length N, N bytes of JSON mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section that
// follows the header) plus an optional "__metadata__" of string -> string, then the raw
// little-endian data. The reader trusts nothing: every field, size and offset is validated before
// any tensor byte is touched, and a bad file throws engine::Error naming the file and the tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace engine::io {

// Every dtype the format defines, including those the engine never computes in, so that any HF
// file can be opened and listed. F4/F6 types are sub-byte (bits per element 4 and 6).
enum class StDType : uint8_t {
  BOOL, U8, I8, I16, U16, U32, U64, I32, I64, F16, BF16, F32, F64,
  F8_E4M3, F8_E5M2, F8_E8M0, F4, F6_E2M3, F6_E3M2, C64,
};

const char* st_dtype_name(StDType t);  // the spelling in the header: "F32", "BF16", ...
int st_dtype_bits(StDType t);          // bits per element: 32 for F32, 4 for F4, ...
// The engine dtype with the same bytes, for F32/BF16/F16/I32; false for every other dtype.
bool to_engine_dtype(StDType t, DType* out);
StDType from_engine_dtype(DType t);

struct SafetensorsTensor {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the data section
  // The tensor's bytes inside the file's buffer (valid while its SafetensorsFile lives). Only
  // byte-aligned in general: files from other writers need not align tensors to their dtype, so
  // read elements with memcpy.
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  std::string shape_str() const;  // "[2, 3]"
};

class SafetensorsFile {
 public:
  // Maps the file read-only and validates its header (see parse). The mapping is shared by copies.
  static SafetensorsFile open(const std::string& path);
  // Validates a file held in memory; `source` names it in error messages.
  static SafetensorsFile parse(std::string bytes, const std::string& source = "<memory>");

  const std::string& path() const { return path_; }
  // Every tensor, in the order of its data in the file.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const;
  // Throws engine::Error naming the file and the tensor when absent.
  const SafetensorsTensor& get(const std::string& name) const;
  // The tensor's values as float: F32 copied, BF16/F16 widened exactly, F64 rounded to nearest.
  // Any other dtype throws engine::Error naming the tensor and its dtype.
  std::vector<float> to_f32(const std::string& name) const;

 private:
  static SafetensorsFile validate(std::shared_ptr<const uint8_t> storage, size_t size, std::string source);

  std::string path_;
  std::shared_ptr<const uint8_t> storage_;  // the whole file: mmap'ed, or owned heap bytes
  size_t size_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// The header length the reader accepts at most, as in HF's reader: a larger one means a corrupt
// file, and refusing it keeps a hostile length from making us parse gigabytes.
constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

struct SafetensorsWriteEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // numel * dtype_size(dtype) bytes, host memory
};

// The bytes of a safetensors file holding `entries`, laid out exactly as HF's writer does, so a
// file we save is byte-identical to what safetensors.torch.save_file writes for the same tensors
// (one metadata key or none; HF's order among several metadata keys is a hash order): data sorted
// by dtype, widest first (F32, I32, BF16, F16), then by name, which keeps every tensor aligned to
// its element size; contiguous data_offsets; compact JSON with "__metadata__" first and tensors in
// data order; the header padded with spaces to a multiple of 8 bytes. Throws engine::Error on a
// duplicate or reserved name, a negative dimension or a null pointer with nonzero size.
std::string serialize_safetensors(const std::vector<SafetensorsWriteEntry>& entries,
                                  const std::map<std::string, std::string>& metadata = {});

// Writes serialize_safetensors' layout to `path` atomically (write_file_atomic), streaming the
// tensor data instead of building the whole file in memory.
void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteEntry>& entries,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace engine::io
