// The error type of everything in gpe::redis, with the kind a caller acts on.
#pragma once

#include <stdexcept>
#include <string>

namespace gpe::redis {

// Everything that can go wrong talking to Redis, by what the caller can do
// about it: connection and timeout problems are worth a retry, an
// authentication problem is a configuration error, a server error answers a
// bad command.
class Error : public std::runtime_error {
  public:
    enum class Kind { kConnection, kTimeout, kAuthentication, kServer, kProtocol };
    Error(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    Kind kind() const { return kind_; }

  private:
    Kind kind_;
};

}  // namespace gpe::redis
