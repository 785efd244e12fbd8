#include "negotiation.hpp"

namespace gpe::agent {

Negotiated negotiate(std::string_view accept, std::string_view accept_encoding) {
    Negotiated out;
    const bool om = accept.find("application/openmetrics-text") != std::string_view::npos;
    out.format = om ? Format::kOpenMetrics : Format::kText;
    out.gzip = om && accept_encoding.find("gzip") != std::string_view::npos;
    return out;
}

}  // namespace gpe::agent
