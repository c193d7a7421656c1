// Datasheet table for datasheet_peak_tflops (peaks.h). Numbers from NVIDIA's product datasheets,
// dense. The SXM parts of H100 and H200 share one compute peak (989.4 bf16); the PCIe and NVL
// parts run lower clocks and power, so they are matched first.
#include "engine/perf/peaks.h"

#include <algorithm>
#include <cctype>

namespace engine::perf {

namespace {

struct Peak {
  const char* name_part;  // matched against the upper-cased device name, in table order
  double bf16, fp32;
};

const Peak kPeaks[] = {
    {"H100 PCIE", 756.5, 51.2},
    {"H100 NVL", 835.5, 59.8},
    {"H200 NVL", 835.5, 59.8},
    {"GH200", 989.4, 66.9},
    {"H100", 989.4, 66.9},  // SXM5 ("NVIDIA H100 80GB HBM3")
    {"H200", 989.4, 66.9},
    {"A100", 312.0, 19.5},
};

}  // namespace

double datasheet_peak_tflops(const std::string& device_name, DType act) {
  std::string upper = device_name;
  std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return char(std::toupper(c)); });
  for (const Peak& p : kPeaks) {
    if (upper.find(p.name_part) == std::string::npos) continue;
    if (act == DType::bf16) return p.bf16;
    if (act == DType::f32) return p.fp32;
    return 0.0;
  }
  return 0.0;
}

}  // namespace engine::perf
