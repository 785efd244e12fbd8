// String helpers shared by the core.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace gpe {

// Hash maps keyed by std::string that can be searched with a string_view
// without allocating (C++20 heterogeneous lookup).
struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};

template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// Concatenation in one allocation (and free of GCC 12's -Wrestrict false
// positives on chained operator+).
template <typename... Parts>
std::string concat(const Parts&... parts) {
    std::string out;
    out.reserve((std::string_view(parts).size() + ...));
    (out.append(std::string_view(parts)), ...);
    return out;
}

// `text` with every byte that is not part of valid UTF-8 replaced by '?', so
// that messages naming foreign data can always be shown (and passed to Python).
std::string valid_utf8(std::string_view text);

}  // namespace gpe
