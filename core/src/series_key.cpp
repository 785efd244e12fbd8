#include "gpe/series_key.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace gpe {

namespace {

// Appends `text` as a JSON string literal with ensure_ascii=True escaping.
void append_json_string(std::string& out, std::string_view text) {
    static constexpr char hex[] = "0123456789abcdef";
    auto append_u16 = [&out](uint32_t unit) {
        out += "\\u";
        for (int shift = 12; shift >= 0; shift -= 4) out.push_back(hex[(unit >> shift) & 0xF]);
    };
    out.push_back('"');
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        const unsigned char c = *p;
        if (c < 0x80) {
            switch (c) {
                case '"':
                    out += "\\\"";
                    break;
                case '\\':
                    out += "\\\\";
                    break;
                case '\n':
                    out += "\\n";
                    break;
                case '\r':
                    out += "\\r";
                    break;
                case '\t':
                    out += "\\t";
                    break;
                case '\b':
                    out += "\\b";
                    break;
                case '\f':
                    out += "\\f";
                    break;
                default:
                    // Python escapes everything outside ' '..'~', DEL included.
                    if (c < 0x20 || c == 0x7f) {
                        append_u16(c);
                    } else {
                        out.push_back(static_cast<char>(c));
                    }
            }
            ++p;
            continue;
        }
        int extra = 0;
        uint32_t cp = 0;
        if ((c & 0xE0) == 0xC0) {
            extra = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3;
            cp = c & 0x07;
        } else {
            throw std::invalid_argument("invalid UTF-8 in series key");
        }
        if (end - p <= extra) throw std::invalid_argument("truncated UTF-8 in series key");
        for (int i = 1; i <= extra; ++i) {
            if ((p[i] & 0xC0) != 0x80) throw std::invalid_argument("invalid UTF-8 in series key");
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        // Overlong forms, surrogates and code points past U+10FFFF are not
        // UTF-8 either: Python's strings never hold them, and accepting them
        // would write a key that decodes to other text.
        static constexpr uint32_t kMinimum[] = {0, 0x80, 0x800, 0x10000};
        if (cp < kMinimum[extra] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
            throw std::invalid_argument("invalid UTF-8 in series key");
        }
        p += extra + 1;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            append_u16(0xD800 + (cp >> 10));
            append_u16(0xDC00 + (cp & 0x3FF));
        } else {
            append_u16(cp);
        }
    }
    out.push_back('"');
}

}  // namespace

std::string encode_series_key(std::string_view metric_name, std::string_view sample_name,
                              const std::vector<std::string>& label_names,
                              const std::vector<std::string>& label_values,
                              std::string_view help_text) {
    // dict(zip(names, values)): zip stops at the shorter list, a repeated
    // name keeps its last value; sort_keys orders by code point (= UTF-8 bytes).
    std::map<std::string_view, std::string_view> labels;
    const size_t n = std::min(label_names.size(), label_values.size());
    for (size_t i = 0; i < n; ++i) labels[label_names[i]] = label_values[i];

    std::string out;
    out.reserve(64 + metric_name.size() * 2 + help_text.size() + n * 32);
    out.push_back('[');
    append_json_string(out, metric_name);
    out += ", ";
    append_json_string(out, sample_name);
    out += ", {";
    bool first = true;
    for (const auto& [name, value] : labels) {
        if (!first) out += ", ";
        first = false;
        append_json_string(out, name);
        out += ": ";
        append_json_string(out, value);
    }
    out += "}, ";
    append_json_string(out, help_text);
    out.push_back(']');
    return out;
}

SeriesKey decode_series_key(std::string_view key) {
    nlohmann::json parsed;
    try {
        parsed = nlohmann::json::parse(key.begin(), key.end());
    } catch (const nlohmann::json::parse_error& e) {
        throw std::invalid_argument("series key is not valid JSON (at byte " +
                                    std::to_string(e.byte) + ")");
    } catch (const nlohmann::json::exception& e) {
        // out_of_range for a number past double's range, e.g. 1e999
        throw std::invalid_argument(std::string("series key is not valid JSON: ") + e.what());
    }
    if (!parsed.is_array() || parsed.size() != 4 || !parsed[0].is_string() ||
        !parsed[1].is_string() || !parsed[2].is_object() || !parsed[3].is_string()) {
        throw std::invalid_argument(
            "series key is not [metric_name, sample_name, {labels}, help_text]");
    }
    SeriesKey out;
    out.metric_name = parsed[0].get<std::string>();
    out.sample_name = parsed[1].get<std::string>();
    out.help = parsed[3].get<std::string>();
    out.labels.reserve(parsed[2].size());
    for (const auto& [name, value] : parsed[2].items()) {
        if (!value.is_string()) throw std::invalid_argument("label value is not a string");
        out.labels.emplace_back(name, value.get<std::string>());
    }
    // nlohmann's object is a std::map: already sorted by name, byte-wise.
    return out;
}

}  // namespace gpe
