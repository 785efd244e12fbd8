// Helpers shared by the libFuzzer harnesses.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace gpe::fuzz {

inline std::string_view as_view(const uint8_t* data, size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

// A property of the code under test does not hold: report it as a crash.
[[noreturn]] inline void violated(const char* what) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
}

#define GPE_FUZZ_CHECK(condition) \
    if (!(condition)) ::gpe::fuzz::violated(#condition)

// Splits `input` at the first `separator`: {before, after}; after is empty
// without one.
inline std::pair<std::string_view, std::string_view> split_once(std::string_view input,
                                                                char separator) {
    const size_t at = input.find(separator);
    if (at == std::string_view::npos) return {input, {}};
    return {input.substr(0, at), input.substr(at + 1)};
}

// A private directory on tmpfs for the files of one fuzzing process,
// removed at exit.
class ScratchDir {
  public:
    ScratchDir() {
        std::string pattern = std::filesystem::exists("/dev/shm") ? "/dev/shm/gpe-fuzz-XXXXXX"
                                                                  : "/tmp/gpe-fuzz-XXXXXX";
        if (::mkdtemp(pattern.data()) == nullptr) violated("mkdtemp");
        path_ = pattern;
    }
    ~ScratchDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

}  // namespace gpe::fuzz
