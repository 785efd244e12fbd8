// The JSON series key, from untrusted bytes (any process can write a key into
// a *.db file or Redis): decode_series_key must throw std::invalid_argument
// or return a key that encodes and decodes to itself. And encode_series_key,
// from arbitrary strings, must throw for invalid UTF-8 or give a key that
// decodes to what was encoded.
//
// Input: a series key; also read as fields separated by '\x01' (metric name,
// sample name, help, then label name and value pairs) for the encoder.
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_util.hpp"
#include "gpe/series_key.hpp"

namespace {

bool same(const gpe::SeriesKey& a, const gpe::SeriesKey& b) {
    return a.metric_name == b.metric_name && a.sample_name == b.sample_name &&
           a.labels == b.labels && a.help == b.help;
}

gpe::SeriesKey reencoded(const gpe::SeriesKey& key) {
    std::vector<std::string> names;
    std::vector<std::string> values;
    for (const auto& [name, value] : key.labels) {
        names.push_back(name);
        values.push_back(value);
    }
    return gpe::decode_series_key(
        gpe::encode_series_key(key.metric_name, key.sample_name, names, values, key.help));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input = gpe::fuzz::as_view(data, size);
    try {
        const gpe::SeriesKey key = gpe::decode_series_key(input);
        // What we decoded we must be able to write back, unchanged.
        GPE_FUZZ_CHECK(same(reencoded(key), key));
    } catch (const std::invalid_argument&) {
    }

    std::vector<std::string> fields;
    for (std::string_view rest = input;;) {
        const auto [field, after] = gpe::fuzz::split_once(rest, '\x01');
        fields.emplace_back(field);
        if (field.size() == rest.size()) break;
        rest = after;
    }
    fields.resize(std::max<size_t>(fields.size(), 3));
    std::vector<std::string> names;
    std::vector<std::string> values;
    std::map<std::string, std::string> expected;  // dict(zip(names, values))
    for (size_t i = 3; i + 1 < fields.size(); i += 2) {
        names.push_back(fields[i]);
        values.push_back(fields[i + 1]);
        expected[fields[i]] = fields[i + 1];
    }
    std::string encoded;
    try {
        encoded = gpe::encode_series_key(fields[0], fields[1], names, values, fields[2]);
    } catch (const std::invalid_argument&) {
        return 0;
    }
    gpe::SeriesKey decoded;
    try {
        decoded = gpe::decode_series_key(encoded);
    } catch (const std::invalid_argument&) {
        gpe::fuzz::violated("an encoded key does not decode");
    }
    GPE_FUZZ_CHECK(decoded.metric_name == fields[0]);
    GPE_FUZZ_CHECK(decoded.sample_name == fields[1]);
    GPE_FUZZ_CHECK(decoded.help == fields[2]);
    GPE_FUZZ_CHECK(decoded.labels == gpe::Labels(expected.begin(), expected.end()));
    return 0;
}
