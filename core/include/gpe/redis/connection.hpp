// One connection to Redis: TCP or Unix socket, optionally TLS (OpenSSL),
// with connect and socket timeouts, AUTH and SELECT on connect, and
// pipelining. RESP is encoded and parsed by hiredis (replies through
// ReplyParser); the transport (transport.hpp) is ours because the hiredis
// Debian ships (0.14) has no TLS.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gpe/redis/errors.hpp"
#include "gpe/redis/options.hpp"
#include "gpe/redis/reply_parser.hpp"  // Reply

namespace gpe::redis {

using Command = std::vector<std::string>;

class Connection {
  public:
    // Connects and authenticates. Throws Error (kConnection, kTimeout,
    // kAuthentication) naming the server, never the password.
    explicit Connection(const Options& options);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Sends the commands and returns one reply each, in order; error replies
    // are returned, not thrown. Throws Error when the connection fails, after
    // which this object must not be used again.
    std::vector<Reply> pipeline(const std::vector<Command>& commands);

    // One command; an error reply is thrown as Error(kServer).
    Reply command(const Command& command);

    // In a forked child: let go of the parent's socket without a word to the
    // server (the parent still uses it).
    void abandon();
    // The socket's descriptor (-1 when closed), for a forked child that may
    // not touch the rest of a connection the parent was using.
    int socket_fd() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gpe::redis
