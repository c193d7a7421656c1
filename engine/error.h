// The engine's one error type. Everything a user can get wrong (a bad file, a bad flag, a shape that
// does not fit) throws engine::Error with a message that names the thing and the problem; the CLI
// prints it and exits non-zero. Nothing in the engine calls abort() on user input.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace engine {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

// Builds a message from any streamable pieces: fail("file ", path, ": line ", n, ": bad label").
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  detail::append(os, parts...);
  throw Error(os.str());
}

}  // namespace engine

// ENGINE_CHECK(cond, parts...): throws engine::Error built from parts when cond is false.
#define ENGINE_CHECK(cond, ...)                  \
  do {                                           \
    if (!(cond)) ::engine::fail(__VA_ARGS__);    \
  } while (0)
