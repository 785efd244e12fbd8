// RESP replies from bytes, parsed by hiredis straight into Reply objects,
// under a budget. Connection feeds it what it reads from the socket; the
// fuzzer (fuzz/fuzz_redis_reply.cpp) feeds it from memory, so both go
// through the same code.
#pragma once

#include <cstddef>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gpe/redis/errors.hpp"

namespace gpe::redis {

struct Reply {
    enum class Type { kString, kArray, kInteger, kNil, kStatus, kError };
    Type type = Type::kNil;
    std::string str;  // string, status or error text
    long long integer = 0;
    std::vector<Reply> elements;

    bool is_error() const { return type == Type::kError; }
};

// A reply over the parser's budget; `refused()` says which ("a reply", "a
// reply announcing an array of N elements").
class ReplyRefused : public Error {
  public:
    explicit ReplyRefused(std::string refused)
        : Error(Kind::kProtocol, "refused " + refused + " over the reply limit"),
          refused_(std::move(refused)) {}
    const std::string& refused() const { return refused_; }

  private:
    std::string refused_;
};

class ReplyParser {
  public:
    // What one element of a reply costs beyond its bytes on the wire.
    static constexpr size_t kElementCost = 16;
    static constexpr size_t kNoLimit = std::numeric_limits<size_t>::max() / 2;

    // A reply may cost at most `limit`: the bytes received for it plus
    // kElementCost per element. hiredis buffers a bulk string until it is
    // whole, so bytes are charged as they are fed, before that buffer can
    // outgrow the limit; an array whose announced length cannot fit is
    // refused at its header. Memory follows the bytes received, never the
    // length a server claims. Throws Error(kConnection) when out of memory.
    explicit ReplyParser(size_t limit = kNoLimit);
    ~ReplyParser();
    ReplyParser(const ReplyParser&) = delete;
    ReplyParser& operator=(const ReplyParser&) = delete;

    void set_limit(size_t limit);

    // Appends bytes received from the server. Throws ReplyRefused or
    // Error(kProtocol); the parser must not be used after that.
    void feed(std::string_view data);

    // The next complete reply, or nullopt until more bytes are fed. Throws
    // ReplyRefused or Error(kProtocol) for bytes that are not RESP; the
    // parser must not be used after that.
    std::optional<Reply> next();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gpe::redis
