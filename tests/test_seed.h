// Seeds for randomised tests: fresh on every run (so repeated runs explore new inputs), printed by
// the test when it fails, and fixed with ENGINE_TEST_SEED=<seed> to replay a failure.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

inline uint64_t pick_seed() {
  if (const char* s = std::getenv("ENGINE_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

// A random suffix for temporary paths: never fixed by ENGINE_TEST_SEED, since tests running in
// parallel must not share a directory.
inline std::string unique_suffix() {
  std::random_device rd;
  return std::to_string((uint64_t(rd()) << 32) ^ rd());
}
