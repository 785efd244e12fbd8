// Redis Sentinel discovery, as redis-py's redis.sentinel and
// redis-plus-plus's Sentinel do it: each sentinel in turn is asked
// SENTINEL get-master-addr-by-name, the first answer is connected to, and
// ROLE must say master there (a failover may be under way).
#pragma once

#include <memory>

#include "gpe/redis/connection.hpp"

namespace gpe::redis {

// The master's address, from the first sentinel that knows it. Each sentinel
// gets the connect and socket timeouts. Throws Error (kConnection; when
// every sentinel refused the password, kAuthentication) naming each sentinel
// asked and what it answered.
Address find_master(const Options& options);

// A connection to the master `options.sentinel` names, whose ROLE was
// checked. Throws Error as find_master, or when the server is not a master.
std::unique_ptr<Connection> connect_to_master(const Options& options);

}  // namespace gpe::redis
