#include "gpe/strings.hpp"

namespace gpe {

std::optional<CodePoint> decode_utf8(std::string_view text) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const size_t len = utf8_sequence_length(p[0]);
    if (len == 0 || text.size() < len) return std::nullopt;
    static constexpr unsigned char kLeadBits[] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = p[0] & kLeadBits[len];
    for (size_t i = 1; i < len; ++i) {
        if ((p[i] & 0xC0) != 0x80) return std::nullopt;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    static constexpr uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinimum[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
    return CodePoint{cp, len};
}

std::string valid_utf8(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
        if (const auto cp = decode_utf8(text.substr(i))) {
            out.append(text.substr(i, cp->length));
            i += cp->length;
        } else {
            out.push_back('?');
            ++i;
        }
    }
    return out;
}

}  // namespace gpe
