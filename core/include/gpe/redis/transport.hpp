// How bytes move over a connected socket to Redis: as they are, or over TLS
// (OpenSSL). Each call does what it can without blocking and says what the
// socket must be ready for otherwise; the connection waits (within its
// deadline) in one loop for both kinds.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "gpe/redis/options.hpp"

namespace gpe::redis {

// One step of moving bytes over the socket: what it moved, or what the
// socket must be ready for before the step is tried again (0 and 0: again at
// once, after EINTR). Failures are thrown as Error(kConnection).
struct Step {
    size_t bytes = 0;
    short wait = 0;  // POLLIN or POLLOUT
};

// The socket as it is, or TLS over it: the one place that knows how each
// reads and writes without blocking. The waiting (and its deadline) is the
// connection's, in one loop for both.
class Transport {
  public:
    virtual ~Transport() = default;
    // {1, 0} once the connection is ready for requests (at once without TLS).
    virtual Step handshake() { return {1, 0}; }
    virtual Step write(std::string_view data) = 0;
    virtual Step read(char* buf, size_t size) = 0;
    // A goodbye to the server, best effort (not in a forked child).
    virtual void close_notify() {}
};

// Over TLS when options.tls is enabled; `fd` stays the caller's. Throws
// Error(kConnection) when TLS cannot be set up.
std::unique_ptr<Transport> make_transport(int fd, const Options& options);

}  // namespace gpe::redis
