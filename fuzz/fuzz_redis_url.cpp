// Redis URLs (PROMETHEUS_REDIS_URL, the agent's --redis-url) from untrusted
// text: parse_url must throw std::invalid_argument or give options that
// describe() can print.
#include <cstdint>
#include <stdexcept>

#include "fuzz_util.hpp"
#include "gpe/redis/options.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view url = gpe::fuzz::as_view(data, size);
    try {
        const gpe::redis::Options options = gpe::redis::parse_url(url);
        GPE_FUZZ_CHECK(options.db >= 0);
        for (const gpe::redis::Address& sentinel : options.sentinel.sentinels) {
            GPE_FUZZ_CHECK(sentinel.port > 0 && sentinel.port <= 65535);
            GPE_FUZZ_CHECK(!sentinel.host.empty());
        }
        GPE_FUZZ_CHECK(options.sentinel.enabled() == !options.sentinel.master.empty());
        if (options.unix_socket.empty()) {
            GPE_FUZZ_CHECK(options.port > 0 && options.port <= 65535);
            GPE_FUZZ_CHECK(!options.host.empty());
        } else {
            GPE_FUZZ_CHECK(options.unix_socket.front() == '/');
        }
        const std::string described = gpe::redis::describe(options);
        GPE_FUZZ_CHECK(!described.empty());
    } catch (const std::invalid_argument&) {
    }
    return 0;
}
