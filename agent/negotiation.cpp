#include "negotiation.hpp"

#include <algorithm>
#include <cctype>

namespace gpe::agent {

namespace {

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

// gzip is acceptable unless absent or refused with q=0.
bool accepts_gzip(std::string_view accept_encoding) {
    bool ok = false;
    for_each_element(accept_encoding, [&](std::string_view token, std::string_view parameters) {
        if (!iequals(token, "gzip") && !iequals(token, "x-gzip")) return;
        const std::string_view q = trim(parameters);
        ok = !(q.starts_with("q=0") && q.find_first_not_of("0.", 3) == std::string_view::npos);
    });
    return ok;
}

}  // namespace

bool iequals(std::string_view a, std::string_view lowercase) {
    return a.size() == lowercase.size() && std::equal(a.begin(), a.end(), lowercase.begin(),
                                                      [](char x, char y) { return lower(x) == y; });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool has_token(std::string_view list, std::string_view lowercase_token) {
    bool found = false;
    for_each_element(list, [&](std::string_view token, std::string_view) {
        found = found || iequals(token, lowercase_token);
    });
    return found;
}

Negotiated negotiate(std::string_view accept, std::string_view accept_encoding) {
    Negotiated out;
    const bool om = accept.find("application/openmetrics-text") != std::string_view::npos;
    out.format = om ? Format::kOpenMetrics : Format::kText;
    out.gzip = accepts_gzip(accept_encoding);
    return out;
}

}  // namespace gpe::agent
