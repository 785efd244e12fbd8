// The agent's answer to a request's Accept and Accept-Encoding headers, any
// bytes a client sends: the format and compression of /metrics.
//
// Input: Accept '\n' Accept-Encoding.
#include <cstdint>

#include "fuzz_util.hpp"
#include "negotiation.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto [accept, encoding] = gpe::fuzz::split_once(gpe::fuzz::as_view(data, size), '\n');
    const gpe::agent::Negotiated negotiated = gpe::agent::negotiate(accept, encoding);
    // gzip only when the client names it; OpenMetrics only when it asks for it.
    GPE_FUZZ_CHECK(!negotiated.gzip || gpe::agent::has_token(encoding, "gzip") ||
                   gpe::agent::has_token(encoding, "x-gzip"));
    GPE_FUZZ_CHECK(negotiated.format != gpe::Format::kOpenMetrics ||
                   accept.find("application/openmetrics-text") != std::string_view::npos);
    GPE_FUZZ_CHECK(negotiated == gpe::agent::negotiate(accept, encoding));
    return 0;
}
