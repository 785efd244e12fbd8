#include "gpe/redis/layout.hpp"

#include <openssl/evp.h>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <random>

#include "gpe/float_format.hpp"
#include "gpe/strings.hpp"

namespace gpe::redis {

std::optional<Layout> parse_layout(std::string_view text) {
    if (text == "instance") return Layout::instance;
    if (text == "series") return Layout::series;
    return std::nullopt;
}

std::string series_hash(std::string_view series_key) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_Digest(series_key.data(), series_key.size(), digest, &size, EVP_md5(), nullptr);
    static constexpr char hex[] = "0123456789abcdef";
    std::string out(size * 2, '0');
    for (unsigned int i = 0; i < size; ++i) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0xF];
    }
    return out;
}

std::string make_key(std::string_view prefix, std::string_view store, std::string_view process,
                     std::string_view data_type, std::string_view hash) {
    return concat(prefix, ":", store, ":", process, ":", data_type, ":", hash);
}

SeriesKeys series_keys(std::string_view prefix, std::string_view store, std::string_view process,
                       std::string_view series_key) {
    const std::string hash = series_hash(series_key);
    return {make_key(prefix, store, process, kMetric, hash),
            make_key(prefix, store, process, kMeta, hash)};
}

std::string key_pattern(std::string_view prefix, std::string_view store_glob,
                        std::string_view process, std::string_view data_type) {
    return concat(glob_escape(prefix), ":", store_glob, ":", glob_escape(process), ":", data_type,
                  ":*");
}

std::string keyset_key(std::string_view prefix) { return concat(prefix, ":keyset"); }

std::string marker_key(std::string_view prefix, std::string_view instance,
                       std::string_view mirror) {
    return concat(prefix, ":mirror@", sanitize_segment(instance), "@", sanitize_segment(mirror));
}

std::string new_keyset_version() {
    // Fresh from the kernel every time: a generator's state would be copied
    // into forked children, which would then hand out the same versions.
    std::random_device random;
    char buf[40];
    std::snprintf(buf, sizeof buf, "%08x%08x%08x%08x", random(), random(), random(), random());
    return buf;
}

std::optional<KeyParts> parse_key(std::string_view key, std::string_view prefix) {
    if (key.size() <= prefix.size() + 1 || !key.starts_with(prefix) || key[prefix.size()] != ':') {
        return std::nullopt;
    }
    std::string_view rest = key.substr(prefix.size() + 1);
    std::string_view parts[4];
    for (int i = 0; i < 4; ++i) {
        const size_t colon = rest.find(':');
        if ((i < 3) == (colon == std::string_view::npos)) return std::nullopt;
        parts[i] = rest.substr(0, colon);
        if (parts[i].empty()) return std::nullopt;
        rest = i < 3 ? rest.substr(colon + 1) : std::string_view();
    }
    if (parts[2] != kMetric && parts[2] != kMeta) return std::nullopt;
    return KeyParts{parts[0], parts[1], parts[2], parts[3]};
}

std::string sanitize_segment(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (c == ':' || c == '*' || c == '?' || c == '[' || c == ']' || c == '\\' || c == ' ' ||
            c == '@') {
            c = '_';
        }
    }
    return out;
}

std::string process_id(std::string_view pid, std::string_view instance) {
    return concat(sanitize_segment(pid), "@", sanitize_segment(instance));
}

std::string glob_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
        out.push_back(c);
    }
    return out;
}

namespace node {

std::string node_id(std::string_view instance, std::string_view token) {
    std::string out = concat(sanitize_segment(instance), "@", sanitize_segment(token));
    for (char& c : out) {
        if (c == '{' || c == '}') c = '_';  // a brace would end the hash tag
    }
    return out;
}

std::string node_key(std::string_view prefix, std::string_view node, std::string_view what) {
    return concat(prefix, ":{", node, "}:", what);
}

std::string fleet_key(std::string_view prefix, std::string_view what) {
    return concat(prefix, ":{fleet}:", what);
}

std::string view_field(Store store, std::string_view process, std::string_view json) {
    if (store.type == MetricType::gauge && !is_aggregated(store.mode))
        return concat(store_name(store), ":", process, ":", json);
    return concat(store_name(store), ":", json);
}

std::optional<ViewField> parse_view_field(std::string_view field) {
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const std::optional<Store> store = parse_store(field.substr(0, colon));
    if (!store) return std::nullopt;
    std::string_view rest = field.substr(colon + 1);
    std::string_view process;
    if (store->type == MetricType::gauge && !is_aggregated(store->mode)) {
        const size_t end = rest.find(':');
        if (end == std::string_view::npos || end == 0) return std::nullopt;
        process = rest.substr(0, end);
        rest = rest.substr(end + 1);
    }
    if (rest.empty() || rest.front() != '[') return std::nullopt;
    return ViewField{*store, process, rest};
}

std::string view_value(Store store, double value, double timestamp) {
    if (!has_timestamp(store)) return format_value(value);
    return concat(format_value(value), " ", format_value(timestamp));
}

std::optional<std::pair<double, double>> parse_view_value(std::string_view text) {
    const size_t space = text.find(' ');
    const auto value = parse_value(text.substr(0, space));
    if (!value) return std::nullopt;
    if (space == std::string_view::npos) return std::pair{*value, 0.0};
    const auto timestamp = parse_value(text.substr(space + 1));
    if (!timestamp) return std::nullopt;
    return std::pair{*value, *timestamp};
}

namespace {

void put_double(std::string& out, double value) {
    uint64_t bits = std::bit_cast<uint64_t>(value);
    for (int i = 0; i < 8; ++i, bits >>= 8) out.push_back(static_cast<char>(bits & 0xff));
}

double get_double(std::string_view bytes) {
    uint64_t bits = 0;
    for (int i = 7; i >= 0; --i) bits = (bits << 8) | static_cast<unsigned char>(bytes[i]);
    return std::bit_cast<double>(bits);
}

}  // namespace

std::string values_slot(double value, double timestamp) {
    std::string out;
    out.reserve(kSlotBytes);
    put_double(out, value);
    put_double(out, timestamp);
    return out;
}

std::optional<std::pair<double, double>> read_slot(std::string_view values, uint32_t slot) {
    const size_t at = slot_offset(slot);
    if (values.size() < at + kSlotBytes) return std::nullopt;
    return std::pair{get_double(values.substr(at, 8)), get_double(values.substr(at + 8, 8))};
}

std::optional<uint32_t> parse_slot(std::string_view text) {
    uint32_t slot = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), slot);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
    return slot;
}

}  // namespace node

std::string format_value(double value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    return std::string(buf, end);
}

std::optional<double> parse_value(std::string_view text) { return parse_python_float(text); }

}  // namespace gpe::redis
