// Redis key names and values from untrusted storage (SCAN returns whatever
// any client wrote under our prefix; HGET returns any text): parse_key must
// give nullopt or parts that make the same key again; parse_value must give
// nullopt or a value that format_value writes back exactly.
//
// Input: prefix '\n' key; the key is also read as a value.
#include <cmath>
#include <cstdint>

#include "fuzz_util.hpp"
#include "gpe/redis/layout.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    namespace redis = gpe::redis;
    const auto [prefix, key] = gpe::fuzz::split_once(gpe::fuzz::as_view(data, size), '\n');
    if (const auto parts = redis::parse_key(key, prefix)) {
        GPE_FUZZ_CHECK(!parts->store.empty() && !parts->process.empty() && !parts->hash.empty());
        GPE_FUZZ_CHECK(parts->data_type == redis::kMetric || parts->data_type == redis::kMeta);
        GPE_FUZZ_CHECK(redis::make_key(prefix, parts->store, parts->process, parts->data_type,
                                       parts->hash) == key);
    }
    const std::string segment = redis::sanitize_segment(key);
    GPE_FUZZ_CHECK(segment.size() == key.size() && segment.find(':') == std::string::npos);
    const std::string escaped = redis::glob_escape(key);
    GPE_FUZZ_CHECK(escaped.size() >= key.size());

    if (const auto value = redis::parse_value(key)) {
        const auto again = redis::parse_value(redis::format_value(*value));
        GPE_FUZZ_CHECK(again.has_value());
        GPE_FUZZ_CHECK(std::isnan(*value) ? std::isnan(*again) : *again == *value);
    }
    return 0;
}
