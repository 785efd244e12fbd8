// String helpers shared by the core.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
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

// The length of the UTF-8 sequence that `lead` starts (1 to 4), or 0 for a
// byte that starts none.
constexpr size_t utf8_sequence_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead & 0xE0) == 0xC0) return 2;
    if ((lead & 0xF0) == 0xE0) return 3;
    if ((lead & 0xF8) == 0xF0) return 4;
    return 0;
}

struct CodePoint {
    uint32_t value;
    size_t length;  // bytes of its UTF-8 sequence
};

// The code point at the start of `text` (not empty), or nullopt if it does
// not start with UTF-8: a bad lead or continuation byte, a truncated
// sequence, an overlong form, a surrogate or a value past U+10FFFF (none of
// which Python's strings can hold).
std::optional<CodePoint> decode_utf8(std::string_view text);

// How the exposition formats and JSON alike escape a character in a string:
// backslash and newline, and the double quote when `quotes`; "" for a
// character written as it is.
constexpr std::string_view common_escape(char c, bool quotes) {
    if (c == '\\') return "\\\\";
    if (c == '\n') return "\\n";
    if (c == '"' && quotes) return "\\\"";
    return {};
}

// `text` with every byte that is not part of valid UTF-8 replaced by '?', so
// that messages naming foreign data can always be shown (and passed to Python).
std::string valid_utf8(std::string_view text);

}  // namespace gpe
