// RESP replies from bytes, parsed by hiredis. Connection feeds it what it
// reads from the socket; the fuzzer (fuzz/fuzz_redis_reply.cpp) feeds it
// from memory, so both go through the same code.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gpe::redis {

struct Reply {
    enum class Type { kString, kArray, kInteger, kNil, kStatus, kError };
    Type type = Type::kNil;
    std::string str;  // string, status or error text
    long long integer = 0;
    std::vector<Reply> elements;

    bool is_error() const { return type == Type::kError; }
};

class ReplyParser {
  public:
    // Throws Error(kConnection) when out of memory.
    ReplyParser();
    ~ReplyParser();
    ReplyParser(const ReplyParser&) = delete;
    ReplyParser& operator=(const ReplyParser&) = delete;

    // Appends bytes received from the server. Throws Error(kProtocol).
    void feed(std::string_view data);

    // The next complete reply, or nullopt until more bytes are fed. Throws
    // Error(kProtocol) for bytes that are not RESP; the parser must not be
    // used after that.
    std::optional<Reply> next();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gpe::redis
