// Tests of engine/io: safetensors round trips on fresh random data, parity with files made by
// Hugging Face `safetensors` (fixtures from tools/check_safetensors.py), rejection of every kind of
// malformed file with a message that says why, byte-flip fuzzing, and the atomic file and
// directory operations checkpoints rely on.
#include <gtest/gtest.h>

#include "test_seed.h"
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/bf16.h"
#include "engine/error.h"
#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"

namespace fs = std::filesystem;
using engine::DType;
using engine::Error;
using namespace engine::io;
using json = nlohmann::json;

namespace {

const std::string kFixtures = std::string(ENGINE_SOURCE_DIR) + "/tests/fixtures/safetensors/";

// Seeds differ on every run (fresh random data); each test prints its seed when it fails.

// A clean directory per test (tests may run in parallel under ctest), removed afterwards.
class IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(ENGINE_BINARY_DIR) + "/test_tmp/safetensors/" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name() + "." + std::to_string(::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::vector<std::string> listing(const std::string& d) const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(d)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  std::string dir_;
};

// Runs f and expects engine::Error whose message contains every one of `words`.
void expect_error(const std::function<void()>& f, std::initializer_list<std::string> words) {
  try {
    f();
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const std::string& w : words) EXPECT_TRUE(msg.find(w) != std::string::npos) << "'" << w << "' not in: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-engine exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "did not throw (expected an error mentioning '" << *words.begin() << "')";
}

// A file from a literal header and data section: the 8-byte length, the header, the data.
std::string make_file(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

void expect_rejected(const std::string& header, size_t data_bytes, std::initializer_list<std::string> words) {
  SCOPED_TRACE(header);
  std::string bytes = make_file(header, std::string(data_bytes, '\x11'));
  expect_error([&] { SafetensorsFile::parse(bytes, "bad.safetensors"); }, words);
}

struct RandomTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

RandomTensor random_tensor(std::mt19937_64& rng, const std::string& name) {
  static const DType kTypes[] = {DType::f32, DType::bf16, DType::f16, DType::i32};
  RandomTensor t;
  t.name = name;
  t.dtype = kTypes[rng() % 4];
  int ndim = int(rng() % 5);  // 0 (a scalar) to 4
  int64_t numel = 1;
  for (int d = 0; d < ndim; ++d) {
    int64_t dim = rng() % 8 == 0 ? 0 : int64_t(1 + rng() % 6);
    t.shape.push_back(dim);
    numel *= dim;
  }
  // Random bit patterns, NaNs and all: the round trip must be bitwise.
  t.bytes.resize(size_t(numel) * engine::dtype_size(t.dtype));
  for (uint8_t& b : t.bytes) b = uint8_t(rng());
  return t;
}

std::vector<SafetensorsWriteEntry> entries_of(const std::vector<RandomTensor>& ts) {
  std::vector<SafetensorsWriteEntry> out;
  for (const RandomTensor& t : ts) out.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
  return out;
}

// A small valid file: two tensors and metadata, for truncation and fuzzing.
std::string small_valid_file() {
  static const float a[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
  static const uint16_t b[3] = {engine::float_to_bf16(1.f), engine::float_to_bf16(-0.5f), 0x7F80};
  static const int32_t c[2] = {-7, 1 << 30};
  return serialize_safetensors({{"enc.a", DType::f32, {2, 3}, a}, {"enc.b", DType::bf16, {3}, b},
                                {"ids", DType::i32, {2}, c}},
                               {{"format", "pt"}});
}

// Reads every byte of every tensor and converts the float ones: what a loader would do.
void touch_everything(const SafetensorsFile& f) {
  volatile uint32_t sum = 0;
  for (const SafetensorsTensor& t : f.tensors()) {
    for (size_t i = 0; i < t.nbytes; ++i) sum = sum + t.data[i];
    if (t.dtype == StDType::F32 || t.dtype == StDType::BF16 || t.dtype == StDType::F16 || t.dtype == StDType::F64) {
      EXPECT_EQ(f.to_f32(t.name).size(), size_t(t.numel()));
    }
  }
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

}  // namespace

// ---------------------------------------------------------------- round trips

TEST_F(IoTest, RoundTripRandomTensorsBitwise) {
  uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 25; ++iter) {
    std::vector<RandomTensor> ts;
    int count = 1 + int(rng() % 7);
    for (int i = 0; i < count; ++i) ts.push_back(random_tensor(rng, "layer." + std::to_string(rng() % 1000) + "." + std::to_string(i)));
    std::map<std::string, std::string> meta;
    if (rng() % 2) meta["format"] = "pt";
    if (rng() % 2) meta["note " + std::to_string(rng() % 100)] = "\"quoted\" \\ ünïcode";
    const std::string file = path("rt.safetensors");
    write_safetensors(file, entries_of(ts), meta);

    SafetensorsFile f = SafetensorsFile::open(file);
    ASSERT_EQ(f.tensors().size(), ts.size());
    EXPECT_EQ(f.metadata(), meta);
    for (const RandomTensor& t : ts) {
      ASSERT_TRUE(f.has(t.name));
      const SafetensorsTensor& got = f.get(t.name);
      EXPECT_EQ(got.dtype, from_engine_dtype(t.dtype));
      EXPECT_EQ(got.shape, t.shape);
      ASSERT_EQ(got.nbytes, t.bytes.size());
      EXPECT_TRUE(t.bytes.empty() || std::memcmp(got.data, t.bytes.data(), t.bytes.size()) == 0) << t.name;
    }
    EXPECT_FALSE(f.has("no.such.tensor"));
    // Data order is widest dtype first, so every tensor is aligned to its element size; the data
    // section starts at a multiple of 8 because the header is padded.
    uint64_t header_len = 0;
    std::string bytes = read_file(file);
    std::memcpy(&header_len, bytes.data(), 8);
    EXPECT_EQ(header_len % 8, 0u);
    for (const SafetensorsTensor& t : f.tensors()) EXPECT_EQ(t.begin % (st_dtype_bits(t.dtype) / 8), 0u) << t.name;
    // The streaming writer and the in-memory serializer agree byte for byte.
    EXPECT_EQ(bytes, serialize_safetensors(entries_of(ts), meta));
    EXPECT_EQ(listing(dir_), std::vector<std::string>{"rt.safetensors"});  // no temp file left
  }
}

TEST(Safetensors, ToF32MatchesBf16HelpersAndSpecialValues) {
  uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 10.f);
  std::vector<float> src = {0.f, -0.f, 1.f, -1.f, 65504.f, 1e-8f, -3e-5f, 1e30f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::denorm_min()};
  for (int i = 0; i < 200; ++i) src.push_back(normal(rng));
  std::vector<uint16_t> bf(src.size()), hf(src.size());
  std::vector<double> f64(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    bf[i] = engine::float_to_bf16(src[i]);
    hf[i] = engine::float_to_fp16(src[i]);
    f64[i] = double(src[i]) * (1.0 + 1e-12);  // not exactly a float: to_f32 must round it
  }
  const int64_t n = int64_t(src.size());
  std::string file = serialize_safetensors(
      {{"f32", DType::f32, {n}, src.data()}, {"bf16", DType::bf16, {n}, bf.data()}, {"f16", DType::f16, {n}, hf.data()}});
  SafetensorsFile f = SafetensorsFile::parse(file);
  std::vector<float> got32 = f.to_f32("f32"), got_bf = f.to_f32("bf16"), got_hf = f.to_f32("f16");
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(bits_of(got32[i]), bits_of(src[i])) << i;
    EXPECT_EQ(bits_of(got_bf[i]), bits_of(engine::bf16_to_float(bf[i]))) << i;
    EXPECT_EQ(bits_of(got_hf[i]), bits_of(engine::fp16_to_float(hf[i]))) << i;
  }

  // F64 (our writer does not write it; build the file by hand) rounds to the nearest float.
  json header = {{"x", {{"dtype", "F64"}, {"shape", {n}}, {"data_offsets", {0, 8 * n}}}}};
  std::string data(reinterpret_cast<const char*>(f64.data()), size_t(8 * n));
  SafetensorsFile g = SafetensorsFile::parse(make_file(header.dump(), data));
  std::vector<float> got64 = g.to_f32("x");
  for (size_t i = 0; i < src.size(); ++i) {
    if (std::isnan(f64[i])) {
      EXPECT_TRUE(std::isnan(got64[i]));
    } else {
      EXPECT_EQ(bits_of(got64[i]), bits_of(float(f64[i]))) << i;
    }
  }

  int32_t ids[2] = {1, 2};
  SafetensorsFile h = SafetensorsFile::parse(serialize_safetensors({{"ids", DType::i32, {2}, ids}}), "ids.st");
  expect_error([&] { h.to_f32("ids"); }, {"ids.st", "'ids'", "I32", "cannot be converted"});
  expect_error([&] { h.to_f32("nope"); }, {"no tensor named 'nope'"});
}

// ---------------------------------------------------------------- parity with Python safetensors

TEST(Safetensors, ReadsFileWrittenByPythonSafetensors) {
  SafetensorsFile f = SafetensorsFile::open(kFixtures + "python_mixed.safetensors");
  json want = json::parse(read_file(kFixtures + "python_mixed.json"));
  auto want_meta = want["metadata"].get<std::map<std::string, std::string>>();
  EXPECT_EQ(f.metadata(), want_meta);
  ASSERT_EQ(f.tensors().size(), want["tensors"].size());
  for (auto& [name, w] : want["tensors"].items()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(f.has(name));
    const SafetensorsTensor& t = f.get(name);
    EXPECT_EQ(st_dtype_name(t.dtype), w["dtype"].get<std::string>());
    EXPECT_EQ(t.shape, w["shape"].get<std::vector<int64_t>>());
    const json& values = w["values"];
    ASSERT_EQ(size_t(t.numel()), values.size());
    std::string dt = w["dtype"];
    if (dt == "F32" || dt == "BF16" || dt == "F16" || dt == "F64") {
      std::vector<float> got = f.to_f32(name);
      for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], float(values[i].get<double>())) << i;
    } else {
      for (size_t i = 0; i < values.size(); ++i) {
        int64_t v = 0;
        if (dt == "I64") std::memcpy(&v, t.data + 8 * i, 8);
        if (dt == "I32") {
          int32_t x;
          std::memcpy(&x, t.data + 4 * i, 4);
          v = x;
        }
        if (dt == "U8" || dt == "BOOL") v = t.data[i];
        EXPECT_EQ(v, values[i].get<int64_t>()) << dt << " " << i;
      }
    }
  }
  EXPECT_EQ(f.get("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(f.to_f32("scalar"), std::vector<float>{2.5f});
  EXPECT_EQ(f.get("empty").nbytes, 0u);
}

// Our writer reproduces Python's file byte for byte from the same tensors: same data order, header
// key order, JSON spelling and padding.
TEST(Safetensors, WriterIsByteIdenticalToPythonSafetensors) {
  const std::string file = kFixtures + "python_engine_dtypes.safetensors";
  SafetensorsFile f = SafetensorsFile::open(file);
  std::vector<SafetensorsWriteEntry> entries;
  for (const SafetensorsTensor& t : f.tensors()) {
    DType dt;
    ASSERT_TRUE(to_engine_dtype(t.dtype, &dt)) << t.name;
    entries.push_back({t.name, dt, t.shape, t.data});
  }
  std::reverse(entries.begin(), entries.end());  // the input order must not matter
  EXPECT_EQ(serialize_safetensors(entries, f.metadata()), read_file(file));
}

// Writes a file with random values and its JSON description for Python to check, from the build
// directory: python tools/check_safetensors.py verify test_outputs/safetensors/engine_written.{safetensors,json}
TEST(Safetensors, WritesFileForPythonCrossCheck) {
  uint64_t seed = pick_seed();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 2.f);
  std::vector<float> w(12);
  std::vector<uint16_t> bf(5), hf(7);
  std::vector<int32_t> ids(4);
  for (float& x : w) x = normal(rng);
  for (uint16_t& x : bf) x = engine::float_to_bf16(normal(rng));
  for (uint16_t& x : hf) x = engine::float_to_fp16(normal(rng));
  for (int32_t& x : ids) x = int32_t(rng());
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"seed", std::to_string(seed)}};
  std::vector<SafetensorsWriteEntry> entries = {{"classifier.weight", DType::f32, {3, 4}, w.data()},
                                                {"bf", DType::bf16, {5}, bf.data()},
                                                {"half", DType::f16, {7, 1}, hf.data()},
                                                {"ids", DType::i32, {2, 2}, ids.data()},
                                                {"empty", DType::f32, {0}, nullptr}};
  json desc = {{"metadata", meta}, {"tensors", json::object()}};
  auto add = [&](const std::string& name, const char* dt, std::vector<int64_t> shape, json values) {
    desc["tensors"][name] = {{"dtype", dt}, {"shape", shape}, {"values", values}};
  };
  json vw = json::array(), vbf = json::array(), vhf = json::array();
  for (float x : w) vw.push_back(double(x));
  for (uint16_t x : bf) vbf.push_back(double(engine::bf16_to_float(x)));
  for (uint16_t x : hf) vhf.push_back(double(engine::fp16_to_float(x)));
  add("classifier.weight", "F32", {3, 4}, vw);
  add("bf", "BF16", {5}, vbf);
  add("half", "F16", {7, 1}, vhf);
  add("ids", "I32", {2, 2}, ids);
  add("empty", "F32", {0}, json::array());

  const std::string out = std::string(ENGINE_BINARY_DIR) + "/test_outputs/safetensors";
  fs::create_directories(out);
  write_safetensors(out + "/engine_written.safetensors", entries, meta);
  write_file_atomic(out + "/engine_written.json", desc.dump(1) + "\n");
  SafetensorsFile f = SafetensorsFile::open(out + "/engine_written.safetensors");
  EXPECT_EQ(f.to_f32("classifier.weight"), w);
  EXPECT_EQ(f.metadata(), meta);
}

// ---------------------------------------------------------------- rejection of bad files

TEST_F(IoTest, RejectsEmptyFile) {
  expect_error([] { SafetensorsFile::parse("", "e.st"); }, {"e.st", "empty"});
  std::ofstream(path("empty.safetensors")).close();
  expect_error([&] { SafetensorsFile::open(path("empty.safetensors")); }, {"empty.safetensors", "empty"});
  expect_error([&] { SafetensorsFile::open(path("missing.safetensors")); },
               {"cannot open", "missing.safetensors", "No such file"});
  expect_error([&] { SafetensorsFile::open(dir_); }, {"not a regular file"});
}

TEST(Safetensors, RejectsEveryTruncation) {
  const std::string good = small_valid_file();
  ASSERT_NO_THROW(SafetensorsFile::parse(good));
  for (size_t len = 0; len < good.size(); ++len) {
    SCOPED_TRACE("length " + std::to_string(len));
    EXPECT_THROW(SafetensorsFile::parse(good.substr(0, len), "t.st"), Error);
  }
  expect_error([&] { SafetensorsFile::parse(good.substr(0, 5), "t.st"); }, {"t.st", "too short"});
  expect_error([&] { SafetensorsFile::parse(good.substr(0, 40), "t.st"); }, {"header length", "past the end"});
  expect_error([&] { SafetensorsFile::parse(good.substr(0, good.size() - 1), "t.st"); },
               {"'enc.b'", "past the end of the data section"});
}

TEST(Safetensors, RejectsBadHeaderLength) {
  std::string f = make_file("{}", "");
  uint64_t n = 1000;  // past the end of a 10-byte file
  std::memcpy(f.data(), &n, 8);
  expect_error([&] { SafetensorsFile::parse(f, "h.st"); }, {"h.st", "header length 1000", "past the end"});
  for (uint64_t absurd : {uint64_t(kMaxSafetensorsHeader) + 1, uint64_t(1) << 40, ~uint64_t(0)}) {
    std::memcpy(f.data(), &absurd, 8);
    expect_error([&] { SafetensorsFile::parse(f, "h.st"); }, {"exceeds the limit"});
  }
  EXPECT_NO_THROW(SafetensorsFile::parse(make_file("{}", "")));  // no tensors at all is a valid file
}

TEST(Safetensors, RejectsInvalidJson) {
  expect_rejected(R"({"a": )", 0, {"bad.safetensors", "not valid JSON"});
  expect_rejected("{} trailing", 0, {"not valid JSON"});
  expect_rejected("\xff\xfe", 0, {"not valid JSON"});
  expect_rejected(R"({"\xc3": 1})", 0, {"not valid JSON"});  // invalid UTF-8 in a string
  expect_rejected("[1, 2]", 0, {"not a JSON object"});
  expect_rejected("17", 0, {"not a JSON object"});
}

TEST(Safetensors, RejectsOverlappingOffsets) {
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                  12, {"'b'", "overlaps", "'a'"});
  // The same range twice is an overlap too.
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}})",
                  8, {"overlaps"});
  // An empty tensor placed inside another one.
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
                  8, {"overlaps"});
}

TEST(Safetensors, RejectsOffsetsPastData) {
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8,
                  {"tensor 'a'", "past the end of the data section"});
  expect_rejected(R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [9, 9]}})", 8, {"past the end"});
  expect_rejected(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551615, 18446744073709551615]}})",
                  8, {"past the end"});
}

TEST(Safetensors, RejectsGapsInData) {
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                      "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                  12, {"gap of 4 bytes", "'b'", "corrupt"});
  expect_rejected(R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8, {"gap", "'b'"});
  expect_rejected(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 8, {"gap", "trailing"});
  expect_rejected("{}", 3, {"gap", "trailing"});
}

TEST(Safetensors, RejectsUnknownDtype) {
  expect_rejected(R"({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}})", 16,
                  {"tensor 'w'", "unknown dtype \"F128\""});
  expect_rejected(R"({"w": {"dtype": "f32", "shape": [1], "data_offsets": [0, 4]}})", 4, {"unknown dtype"});
}

TEST(Safetensors, RejectsShapeSizeMismatch) {
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8,
                  {"tensor 'w'", "size mismatch", "needs 12"});
  expect_rejected(R"({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}})", 16, {"size mismatch"});
  expect_rejected(R"({"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}})", 2, {"whole number of bytes"});
  // Sub-byte dtypes are sized in bits: four F4 values are two bytes.
  EXPECT_NO_THROW(SafetensorsFile::parse(
      make_file(R"({"w": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}})", "ab")));
}

TEST(Safetensors, RejectsBadDimensions) {
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4,
                  {"tensor 'w'", "negative dimension -1"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 4]}})", 4, {"not an integer"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}})", 4, {"not an integer"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]}})", 4, {"not an integer"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 4]}})",
                  4, {"overflows"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296, 0], "data_offsets": [0, 0]}})",
                  0, {"overflows"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}})", 4, {"JSON"});
}

TEST(Safetensors, RejectsBadOffsets) {
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4]}})", 4,
                  {"tensor 'w'", "data_offsets", "non-negative integers"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}})", 4, {"data_offsets"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 4, {"data_offsets"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", 8, {"data_offsets"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4, {"data_offsets"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": {"a": 0}}})", 4, {"data_offsets"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8, {"decrease"});
}

TEST(Safetensors, RejectsMissingOrMistypedFields) {
  expect_rejected(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 4, {"tensor 'w'", "missing \"dtype\""});
  expect_rejected(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4, {"missing \"shape\""});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1]}})", 4, {"missing \"data_offsets\""});
  expect_rejected(R"({"w": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}})", 4, {"\"dtype\" is not a string"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})", 4, {"\"shape\" is not an array"});
  expect_rejected(R"({"w": [1, 2]})", 4, {"tensor 'w'", "not a JSON object"});
  expect_rejected(R"({"__metadata__": {"format": 1}})", 0, {"__metadata__", "'format'", "not a string"});
  expect_rejected(R"({"__metadata__": "pt"})", 0, {"__metadata__", "not a JSON object"});
  expect_rejected(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                      "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                  8, {"duplicate", "'w'"});
}

TEST(Safetensors, WriterRejectsBadEntries) {
  float x[2] = {1, 2};
  expect_error([&] { serialize_safetensors({{"a", DType::f32, {2}, x}, {"a", DType::f32, {2}, x}}); }, {"duplicate", "'a'"});
  expect_error([&] { serialize_safetensors({{"__metadata__", DType::f32, {2}, x}}); }, {"reserved"});
  expect_error([&] { serialize_safetensors({{"", DType::f32, {2}, x}}); }, {"empty name"});
  expect_error([&] { serialize_safetensors({{"a", DType::f32, {-2}, x}}); }, {"'a'", "negative"});
  expect_error([&] { serialize_safetensors({{"a", DType::f32, {2}, nullptr}}); }, {"'a'", "no data"});
  expect_error([&] { serialize_safetensors({{"a\xff", DType::f32, {2}, x}}); }, {"header"});
}

// Random byte flips of a valid file: each mutant either loads (and then every byte of it can be
// read) or throws engine::Error. Run under AddressSanitizer to catch out-of-bounds reads.
TEST(Safetensors, FuzzByteFlipsLoadOrThrow) {
  uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::string good = small_valid_file();
  uint64_t header_len;
  std::memcpy(&header_len, good.data(), 8);
  static const char kInteresting[] = {'0', '9', '-', '.', 'e', '"', ',', ']', '}', '[', '{', ':', ' ', '\0', '\xff'};
  int loaded = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string bad = good;
    int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly the header (where parsing happens), sometimes the length or the data.
      size_t pos = rng() % 4 == 0 ? rng() % bad.size() : 8 + rng() % header_len;
      switch (rng() % 3) {
        case 0: bad[pos] ^= char(1u << (rng() % 8)); break;
        case 1: bad[pos] = kInteresting[rng() % sizeof kInteresting]; break;
        default: bad[pos] = char(rng()); break;
      }
    }
    if (rng() % 10 == 0) bad.resize(rng() % bad.size());
    try {
      SafetensorsFile f = SafetensorsFile::parse(bad, "fuzz");
      touch_everything(f);
      ++loaded;
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << iter << ": non-engine exception " << e.what();
    }
  }
  EXPECT_GT(rejected, 0);
  RecordProperty("loaded", loaded);
  RecordProperty("rejected", rejected);
}

// ---------------------------------------------------------------- atomic files

TEST_F(IoTest, WriteFileAtomicWritesAndLeavesNoTemp) {
  write_file_atomic(path("a.bin"), std::string("first version"));
  EXPECT_EQ(read_file(path("a.bin")), "first version");
  std::string big(300000, '\0');
  std::mt19937_64 rng(pick_seed());
  for (char& c : big) c = char(rng());
  write_file_atomic(path("a.bin"), [&](FileSink& s) {
    s.write(big.data(), 1000);
    s.write(big.data() + 1000, big.size() - 1000);
    EXPECT_EQ(s.bytes_written(), big.size());
  });
  EXPECT_EQ(read_file(path("a.bin")), big);
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"a.bin"});
  EXPECT_EQ(temp_path_for(path("a.bin")), path("a.bin") + ".tmp." + std::to_string(::getpid()));
}

TEST_F(IoTest, FailedWriteKeepsPreviousFile) {
  const std::string file = path("keep.bin");
  write_file_atomic(file, std::string("good"));
  // The callback fails half-way: its exception comes through unchanged, the old file stays.
  EXPECT_THROW(write_file_atomic(file,
                                 [](FileSink& s) {
                                   s.write(std::string("partial"));
                                   throw std::runtime_error("disk full (simulated)");
                                 }),
               std::runtime_error);
  EXPECT_EQ(read_file(file), "good");
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"keep.bin"});

  // A directory that does not exist.
  expect_error([&] { write_file_atomic(path("nodir/x.bin"), std::string("x")); },
               {"cannot create", "nodir/x.bin", "No such file or directory"});
  // A parent that is a file.
  expect_error([&] { write_file_atomic(file + "/x.bin", std::string("x")); }, {"keep.bin/x.bin", "Not a directory"});
  // The target is a directory: the rename fails and the temp file is removed.
  fs::create_directory(path("adir"));
  expect_error([&] { write_file_atomic(path("adir"), std::string("x")); }, {"cannot rename", "adir"});
  // A directory we may not write to (root ignores permissions, so only as another user).
  if (::geteuid() != 0) {
    fs::create_directory(path("ro"));
    write_file_atomic(path("ro/f"), std::string("old"));
    ::chmod(path("ro").c_str(), 0555);
    expect_error([&] { write_file_atomic(path("ro/f"), std::string("new")); }, {"ro/f", "Permission denied"});
    ::chmod(path("ro").c_str(), 0755);
    EXPECT_EQ(read_file(path("ro/f")), "old");
    EXPECT_EQ(listing(path("ro")), std::vector<std::string>{"f"});
  }
  // A safetensors write that fails validation leaves the previous checkpoint alone.
  float x = 1;
  write_safetensors(path("m.safetensors"), {{"w", DType::f32, {1}, &x}});
  std::string before = read_file(path("m.safetensors"));
  EXPECT_THROW(write_safetensors(path("m.safetensors"), {{"w", DType::f32, {1}, &x}, {"w", DType::f32, {1}, &x}}), Error);
  EXPECT_EQ(read_file(path("m.safetensors")), before);
  std::vector<std::string> expected = {"adir", "keep.bin", "m.safetensors"};
  if (::geteuid() != 0) expected.push_back("ro");
  EXPECT_EQ(listing(dir_), expected);  // no temp file survived any of the failures
  EXPECT_TRUE(fs::is_empty(path("adir")));
}

TEST_F(IoTest, ReadFileErrors) {
  expect_error([&] { read_file(path("missing")); }, {"cannot open", "missing", "No such file"});
  expect_error([&] { read_file(dir_); }, {"directory"});
  write_file_atomic(path("empty"), std::string());
  EXPECT_EQ(read_file(path("empty")), "");
}

// ---------------------------------------------------------------- checkpoint directories

namespace {
void write_dir(const std::string& dir, const std::string& content) {
  fs::create_directories(dir);
  write_file_atomic(dir + "/model.safetensors", content);
  write_file_atomic(dir + "/config.json", "{\"v\": \"" + content + "\"}");
}
}  // namespace

TEST_F(IoTest, ReplaceDirectorySwapsInPlace) {
  const std::string final_dir = path("ckpt");
  // First save: nothing to replace.
  std::string staged = temp_path_for(final_dir);
  write_dir(staged, "v1");
  replace_directory_atomic(final_dir, staged);
  EXPECT_EQ(read_file(final_dir + "/model.safetensors"), "v1");
  // Second save replaces it; no staging or old directory is left behind.
  write_dir(staged, "v2");
  replace_directory_atomic(final_dir + "/", staged);
  EXPECT_EQ(read_file(final_dir + "/model.safetensors"), "v2");
  EXPECT_EQ(read_file(final_dir + "/config.json"), "{\"v\": \"v2\"}");
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"ckpt"});
  EXPECT_EQ(recover_directory(final_dir), Recovery::nothing);

  expect_error([&] { replace_directory_atomic(final_dir, path("no_such_staging")); }, {"no_such_staging", "does not exist"});
  write_file_atomic(path("file"), std::string("x"));
  write_dir(staged, "v3");
  expect_error([&] { replace_directory_atomic(path("file"), staged); }, {"not a directory"});
  EXPECT_EQ(read_file(path("file")), "x");
}

TEST_F(IoTest, RecoverAfterCrashBetweenRenames) {
  const std::string final_dir = path("ckpt");
  // The state a crash between steps 1 and 2 leaves: final renamed away, staging complete.
  write_dir(final_dir + ".old.900000001", "old");
  write_dir(final_dir + ".tmp.900000001", "new");
  fs::create_directory(path("ckpt.old.backup"));  // a user's directory: never touched
  EXPECT_EQ(recover_directory(final_dir), Recovery::restored_old);
  EXPECT_EQ(read_file(final_dir + "/model.safetensors"), "old");
  EXPECT_EQ(listing(dir_), (std::vector<std::string>{"ckpt", "ckpt.old.backup"}));
  EXPECT_EQ(recover_directory(final_dir), Recovery::nothing);
}

TEST_F(IoTest, RecoverAfterCrashBeforeRemovingOld) {
  const std::string final_dir = path("ckpt");
  // Crash after step 2 (or during step 3): the new directory is in place, the old one lingers.
  write_dir(final_dir, "new");
  write_dir(final_dir + ".old.900000002", "old");
  fs::create_directory(final_dir + ".tmp.900000003");  // an interrupted staging directory
  EXPECT_EQ(recover_directory(final_dir), Recovery::removed_leftovers);
  EXPECT_EQ(read_file(final_dir + "/model.safetensors"), "new");
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"ckpt"});
}

// Siblings named after a running process of this program belong to a save in progress: recovery
// leaves them (and everything else) alone, however it looks. Pids like 900000001 above are beyond
// any pid_max.
TEST_F(IoTest, RecoverLeavesSavesInProgressAlone) {
  const std::string final_dir = path("ckpt");
  // A live process of this program: a child that waits (killed at the end of the test).
  const pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_GT(child, 0);
  struct KillChild {
    pid_t pid;
    ~KillChild() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } kill_child{child};
  const std::string live = std::to_string(child);
  write_dir(final_dir + ".old." + live, "old");
  write_dir(final_dir + ".tmp." + live, "new");
  EXPECT_EQ(recover_directory(final_dir), Recovery::nothing);
  EXPECT_EQ(listing(dir_), (std::vector<std::string>{"ckpt.old." + live, "ckpt.tmp." + live}));
  fs::rename(final_dir + ".old." + live, final_dir);
  EXPECT_EQ(recover_directory(final_dir), Recovery::nothing);
  EXPECT_EQ(listing(dir_), (std::vector<std::string>{"ckpt", "ckpt.tmp." + live}));
  // Our own pid is not a save in progress elsewhere: our leftovers are removed.
  fs::rename(final_dir + ".tmp." + live, temp_path_for(final_dir));
  EXPECT_EQ(recover_directory(final_dir + "/"), Recovery::removed_leftovers);
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"ckpt"});
  // A live process of another program (our parent: ctest or a shell) holds a pid a dead writer
  // once had: the leftover named after it is removed.
  const std::string other = std::to_string(::getppid());
  write_dir(final_dir + ".tmp." + other, "new");
  EXPECT_EQ(recover_directory(final_dir), Recovery::removed_leftovers);
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"ckpt"});
}

TEST_F(IoTest, RecoverEdgeCases) {
  EXPECT_EQ(recover_directory("/"), Recovery::nothing);
  const std::string final_dir = path("ckpt");
  EXPECT_EQ(recover_directory(final_dir), Recovery::nothing);                   // no checkpoint yet
  EXPECT_EQ(recover_directory(path("missing_parent/ckpt")), Recovery::nothing);  // no parent either
  write_dir(final_dir + ".old.900000004", "a");
  write_dir(final_dir + ".old.900000005", "b");
  expect_error([&] { recover_directory(final_dir); }, {"several", "ckpt.old.900000004", "ckpt.old.900000005"});
  // A save after a crash first recovers, then swaps: the result is the new directory, alone.
  fs::remove_all(final_dir + ".old.900000005");
  std::string staged = temp_path_for(final_dir);
  write_dir(staged, "new");
  replace_directory_atomic(final_dir, staged);
  EXPECT_EQ(read_file(final_dir + "/model.safetensors"), "new");
  EXPECT_EQ(listing(dir_), std::vector<std::string>{"ckpt"});
}
