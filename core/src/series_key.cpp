#include "gpe/series_key.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "gpe/strings.hpp"

namespace gpe {

namespace {

void append_u16_escape(std::string& out, uint32_t unit) {
    static constexpr char hex[] = "0123456789abcdef";
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out.push_back(hex[(unit >> shift) & 0xF]);
}

// An ASCII character as json.dumps writes it.
void append_json_ascii(std::string& out, char c) {
    if (const std::string_view escape = common_escape(c, /*quotes=*/true); !escape.empty()) {
        out += escape;
        return;
    }
    switch (c) {
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
                append_u16_escape(out, static_cast<unsigned char>(c));
            } else {
                out.push_back(c);
            }
    }
}

// A code point past ASCII as ensure_ascii writes it: \uXXXX, a surrogate
// pair above U+FFFF.
void append_json_non_ascii(std::string& out, uint32_t cp) {
    if (cp >= 0x10000) {
        cp -= 0x10000;
        append_u16_escape(out, 0xD800 + (cp >> 10));
        append_u16_escape(out, 0xDC00 + (cp & 0x3FF));
    } else {
        append_u16_escape(out, cp);
    }
}

// Appends `text` as a JSON string literal with ensure_ascii=True escaping.
// Invalid UTF-8 throws: accepting it would write a key that decodes to
// other text.
void append_json_string(std::string& out, std::string_view text) {
    out.push_back('"');
    for (size_t i = 0; i < text.size();) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x80) {
            append_json_ascii(out, static_cast<char>(c));
            ++i;
            continue;
        }
        const std::optional<CodePoint> cp = decode_utf8(text.substr(i));
        if (!cp) {
            const size_t len = utf8_sequence_length(c);
            throw std::invalid_argument(len != 0 && text.size() - i < len
                                            ? "truncated UTF-8 in series key"
                                            : "invalid UTF-8 in series key");
        }
        append_json_non_ascii(out, cp->value);
        i += cp->length;
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
