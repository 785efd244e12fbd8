#include "gpe/exposition.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "gpe/float_format.hpp"
#include "gpe/strings.hpp"

namespace gpe {

namespace {

bool is_letter_or_underscore(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

// Label values and HELP text: backslash and newline escaped, and double
// quotes where `quotes` (label values, OpenMetrics HELP).
void append_escaped(std::string& out, std::string_view text, bool quotes) {
    for (char c : text) {
        const std::string_view escape = common_escape(c, quotes);
        if (escape.empty()) {
            out.push_back(c);
        } else {
            out += escape;
        }
    }
}

// prometheus_client's re.match('^[a-zA-Z_:][a-zA-Z0-9_:]*$'): note that
// Python's `$` also matches before one final newline, so "name\n" counts as
// valid and is written unchanged.
bool is_legacy_name(std::string_view name, bool allow_colon) {
    if (name.ends_with('\n')) name.remove_suffix(1);
    if (name.empty()) return false;
    for (size_t i = 0; i < name.size(); ++i) {
        const auto c = static_cast<unsigned char>(name[i]);
        if (!(is_letter_or_underscore(c) || (allow_colon && c == ':') ||
              (i > 0 && c >= '0' && c <= '9'))) {
            return false;
        }
    }
    return true;
}

// escape_metric_name / escape_label_name with the default escaping scheme.
void append_name(std::string& out, std::string_view name, bool allow_colon) {
    if (is_legacy_name(name, allow_colon)) {
        out += name;
    } else {
        append_escaped_name(out, name, allow_colon);
    }
}

// prometheus_client's _compose_exemplar_string: ` # {labels} value timestamp`,
// the timestamp as Python's str(float).
void append_exemplar(std::string& out, const MergedExemplar& exemplar) {
    out += " # ";
    ExemplarLabels::render(exemplar.labels, out);
    out.push_back(' ');
    append_go_float(out, exemplar.value);
    if (!std::isnan(exemplar.timestamp)) {
        out.push_back(' ');
        out += python_repr(exemplar.timestamp);
    }
}

}  // namespace

void append_escaped_name(std::string& out, std::string_view name, bool allow_colon) {
    size_t index = 0;  // code point index, as Python's enumerate(str)
    for (size_t i = 0; i < name.size(); ++index) {
        const auto c = static_cast<unsigned char>(name[i]);
        // A stray byte counts as one code point (and becomes one '_').
        const size_t len = std::min(std::max<size_t>(1, utf8_sequence_length(c)), name.size() - i);
        const bool valid = len == 1 && (is_letter_or_underscore(c) || (allow_colon && c == ':') ||
                                        (c >= '0' && c <= '9' && index > 0));
        out.push_back(valid ? static_cast<char>(c) : '_');
        i += len;
    }
}

std::string render_labels(const Labels& labels) {
    if (labels.empty()) return {};
    // dict(labels) then sorted(items): one entry per name, its last value.
    std::map<std::string_view, std::string_view> sorted;
    for (const auto& [name, value] : labels) sorted[name] = value;
    std::string out = "{";
    bool first = true;
    for (const auto& [name, value] : sorted) {
        if (!first) out.push_back(',');
        first = false;
        append_name(out, name, /*allow_colon=*/false);
        out += "=\"";
        append_escaped(out, value, /*quotes=*/true);
        out.push_back('"');
    }
    out.push_back('}');
    return out;
}

void render(MergeResult& result, Format format, std::string& out) {
    const bool om = format == Format::kOpenMetrics;
    std::string escaped_name;
    for (const MergedFamily& family : result.families) {
        std::string mname = family.name;
        if (!om && family.type == MetricType::counter) mname += "_total";
        escaped_name.clear();
        append_name(escaped_name, mname, /*allow_colon=*/true);
        out += "# HELP ";
        out += escaped_name;
        out.push_back(' ');
        append_escaped(out, family.help, /*quotes=*/om);
        out += "\n# TYPE ";
        out += escaped_name;
        out.push_back(' ');
        out += name(family.type);
        out.push_back('\n');

        // The text format moves OpenMetrics-only samples into gauges at the end.
        std::map<std::string, std::string> trailing;  // suffix -> lines
        for (const MergedSample& sample : family.samples) {
            const std::string& name = (*result.names)[sample.name];
            std::string* target = &out;
            if (!om && name.size() > family.name.size() && name.starts_with(family.name)) {
                const std::string_view suffix = std::string_view(name).substr(family.name.size());
                if (suffix == "_created" || suffix == "_gsum" || suffix == "_gcount") {
                    target = &trailing[std::string(suffix)];
                }
            }
            // OpenMetrics escapes sample names with the label-name alphabet (no ':').
            if (om) {
                append_escaped_name(*target, name, /*allow_colon=*/false);
            } else {
                append_name(*target, name, /*allow_colon=*/true);
            }
            *target += result.label_sets->rendered(sample.labels);
            target->push_back(' ');
            append_go_float(*target, sample.value);
            if (om && sample.exemplar >= 0) {
                append_exemplar(*target, family.exemplars[static_cast<size_t>(sample.exemplar)]);
            }
            target->push_back('\n');
        }
        for (const auto& [suffix, lines] : trailing) {
            escaped_name.clear();
            append_name(escaped_name, family.name + suffix, /*allow_colon=*/true);
            out += "# HELP " + escaped_name + " ";
            append_escaped(out, family.help, /*quotes=*/false);
            out += "\n# TYPE " + escaped_name + " gauge\n";
            out += lines;
        }
    }
    if (om) out += "# EOF\n";
}

}  // namespace gpe
