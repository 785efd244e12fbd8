// Text exposition 0.0.4 and OpenMetrics 1.0.0, byte-identical to
// prometheus_client's generate_latest() with its default (underscores)
// name escaping.
#pragma once

#include <string>
#include <string_view>

#include "gpe/merge.hpp"
#include "gpe/series_key.hpp"

namespace gpe {

enum class Format { kText, kOpenMetrics };

inline constexpr std::string_view kTextContentType = "text/plain; version=0.0.4; charset=utf-8";
inline constexpr std::string_view kOpenMetricsContentType =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

// Appends the exposition of `result` to `out`.
void render(MergeResult& result, Format format, std::string& out);

// `{a="x",b="y"}`: sorted by name, a repeated name shows its last value,
// "" for no labels.
std::string render_labels(const Labels& labels);

// Replaces each code point that is not legal in a legacy Prometheus name with
// '_' (digits are legal after the first position; ':' when allow_colon).
void append_escaped_name(std::string& out, std::string_view name, bool allow_colon);

}  // namespace gpe
