// HTTP header values as the agent reads them (comma-separated lists of
// tokens with parameters), and what /metrics answers for a request's Accept
// and Accept-Encoding: pure functions, so that they can be tested and fuzzed
// without a server.
#pragma once

#include <string_view>

#include "gpe/exposition.hpp"

namespace gpe::agent {

// Whether `a` equals `lowercase` ignoring the case of `a` (`lowercase` is
// lowercase already).
bool iequals(std::string_view a, std::string_view lowercase);

// `s` without leading and trailing spaces and tabs.
std::string_view trim(std::string_view s);

// Calls f(token, parameters) for each element of a comma-separated list
// ("gzip;q=1.0, br": ("gzip", "q=1.0"), ("br", "")).
template <typename F>
void for_each_element(std::string_view list, F f) {
    while (!list.empty()) {
        const size_t comma = list.find(',');
        std::string_view element = list.substr(0, comma);
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
        const size_t semicolon = element.find(';');
        const std::string_view token = trim(element.substr(0, semicolon));
        f(token,
          semicolon == std::string_view::npos ? std::string_view() : element.substr(semicolon + 1));
    }
}

// Whether a comma-separated list holds `lowercase_token` (any case).
bool has_token(std::string_view list, std::string_view lowercase_token);

struct Negotiated {
    Format format = Format::kText;
    bool gzip = false;  // the body is compressed
    bool operator==(const Negotiated&) const = default;
};

// OpenMetrics when Accept names application/openmetrics-text, text 0.0.4
// otherwise; gzip when Accept-Encoding names gzip (or x-gzip) without
// refusing it by q=0. Absent headers are empty. Any bytes are valid input.
Negotiated negotiate(std::string_view accept, std::string_view accept_encoding);

}  // namespace gpe::agent
