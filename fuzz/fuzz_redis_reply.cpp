// RESP replies from a hostile or broken server, through the parser that
// Connection reads every reply with: it must return replies or throw
// redis::Error, within memory bounded by what it was fed.
//
// Input: one byte giving the size of the chunks the bytes arrive in (as
// recv() would split them), then the bytes.
#include <cstdint>
#include <optional>

#include "fuzz_util.hpp"
#include "gpe/redis/errors.hpp"
#include "gpe/redis/reply_parser.hpp"

namespace {

size_t weight(const gpe::redis::Reply& reply) {
    size_t total = 1 + reply.str.size();
    for (const auto& element : reply.elements) total += weight(element);
    return total;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const size_t chunk = data[0] == 0 ? size : data[0];
    std::string_view input = gpe::fuzz::as_view(data + 1, size - 1);
    try {
        gpe::redis::ReplyParser parser(size_t{1} << 16);  // the budget paths too
        while (!input.empty()) {
            const std::string_view piece = input.substr(0, chunk);
            input.remove_prefix(piece.size());
            parser.feed(piece);
            while (std::optional<gpe::redis::Reply> reply = parser.next()) {
                GPE_FUZZ_CHECK(weight(*reply) <= 2 * size + 1);
            }
        }
    } catch (const gpe::redis::Error& e) {
        GPE_FUZZ_CHECK(e.kind() == gpe::redis::Error::Kind::kProtocol);
    }
    return 0;
}
