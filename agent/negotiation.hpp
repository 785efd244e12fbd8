// What /metrics answers for a request's Accept and Accept-Encoding headers:
// a pure function, so that it can be tested and fuzzed without a server.
#pragma once

#include <string_view>

#include "gpe/exposition.hpp"

namespace gpe::agent {

struct Negotiated {
    Format format = Format::kText;
    // Whether we compress the body ourselves. Only for OpenMetrics: httplib
    // compresses text/plain itself (gzip or brotli, as the client accepts)
    // but not OpenMetrics, which is not a type it knows.
    bool gzip = false;
    bool operator==(const Negotiated&) const = default;
};

// OpenMetrics when Accept names application/openmetrics-text, text 0.0.4
// otherwise; gzip (for OpenMetrics) when Accept-Encoding names gzip. Absent
// headers are empty. Any bytes are valid input.
Negotiated negotiate(std::string_view accept, std::string_view accept_encoding);

}  // namespace gpe::agent
