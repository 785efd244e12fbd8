// The series key shared by all storage: the JSON string prometheus_client
// writes into its mmap files (mmap_key) and the seed writes into Redis
// (redis_key): json.dumps([metric_name, name, labels, help], sort_keys=True).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gpe {

using Label = std::pair<std::string, std::string>;
using Labels = std::vector<Label>;

// Byte-for-byte what Python's json.dumps(..., sort_keys=True) produces:
// ASCII output with \uXXXX escapes (surrogate pairs above U+FFFF), ", " and
// ": " separators, labels as a dict (a repeated name keeps its last value).
// Throws std::invalid_argument on invalid UTF-8 input.
std::string encode_series_key(std::string_view metric_name, std::string_view sample_name,
                              const std::vector<std::string>& label_names,
                              const std::vector<std::string>& label_values,
                              std::string_view help_text);

struct SeriesKey {
    std::string metric_name;
    std::string sample_name;
    Labels labels;  // sorted by name, as MultiProcessCollector's labels_key
    std::string help;
};

// Parses a key written by any prometheus_client version or by us. Throws
// std::invalid_argument with the reason when the key is not of that shape.
SeriesKey decode_series_key(std::string_view key);

}  // namespace gpe
