#include "gpe/strings.hpp"

namespace gpe {

std::string valid_utf8(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        size_t len = 0;
        uint32_t cp = 0;
        if (*p < 0x80) {
            len = 1;
            cp = *p;
        } else if ((*p & 0xE0) == 0xC0) {
            len = 2;
            cp = *p & 0x1F;
        } else if ((*p & 0xF0) == 0xE0) {
            len = 3;
            cp = *p & 0x0F;
        } else if ((*p & 0xF8) == 0xF0) {
            len = 4;
            cp = *p & 0x07;
        }
        bool ok = len > 0 && static_cast<size_t>(end - p) >= len;
        for (size_t i = 1; ok && i < len; ++i) {
            ok = (p[i] & 0xC0) == 0x80;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        // Reject overlong forms, surrogates and values past U+10FFFF too.
        static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
        ok = ok && cp >= kMin[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
        if (ok) {
            out.append(reinterpret_cast<const char*>(p), len);
            p += len;
        } else {
            out.push_back('?');
            ++p;
        }
    }
    return out;
}

}  // namespace gpe
