// The agent's request parser, any bytes a client sends (one read's worth or
// several pipelined requests).
//
// Input: a limits byte (head limit 16 << (b & 7), body limit 4 << (b >> 4)),
// then the bytes.
#include <cstdint>
#include <string_view>

#include "fuzz_util.hpp"
#include "request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const size_t max_header = size_t{16} << (data[0] & 7);
    const size_t max_body = size_t{4} << (data[0] >> 4);
    std::string_view in = gpe::fuzz::as_view(data + 1, size - 1);
    for (int requests = 0; requests < 64 && !in.empty(); ++requests) {
        gpe::agent::Request request;
        const gpe::agent::Parsed parsed =
            gpe::agent::parse_request(in, max_header, max_body, request);
        gpe::agent::Request again;
        const gpe::agent::Parsed twice = gpe::agent::parse_request(in, max_header, max_body, again);
        GPE_FUZZ_CHECK(parsed.kind == twice.kind && parsed.status == twice.status &&
                       parsed.length == twice.length);
        if (parsed.kind == gpe::agent::Parsed::kError) {
            const int s = parsed.status;
            GPE_FUZZ_CHECK(s == 400 || s == 413 || s == 431 || s == 501 || s == 505);
            return 0;
        }
        if (parsed.kind == gpe::agent::Parsed::kIncomplete) {
            // It waits for more only while the request (after the empty lines
            // a client may send first) is within the limits.
            std::string_view rest = in;
            while (rest.starts_with("\r\n")) rest.remove_prefix(2);
            GPE_FUZZ_CHECK(rest.size() <= max_header + 4 + max_body);
            return 0;
        }
        GPE_FUZZ_CHECK(parsed.length > 0 && parsed.length <= in.size());
        GPE_FUZZ_CHECK(!request.method.empty() && request.path.starts_with('/'));
        GPE_FUZZ_CHECK(request.path.find('?') == std::string_view::npos);
        in.remove_prefix(parsed.length);  // the next pipelined request
    }
    return 0;
}
