// String helpers shared by the core.
#pragma once

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

}  // namespace gpe
