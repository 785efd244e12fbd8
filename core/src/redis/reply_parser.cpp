#include "gpe/redis/reply_parser.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <new>

#include "gpe/redis/errors.hpp"

namespace gpe::redis {

namespace {

// hiredis builds each reply through these callbacks, so they make our Reply
// directly. An array's elements are added as they arrive: memory follows the
// bytes received, never the length a server claims (hiredis' own objects
// calloc() the claimed length up front: 16 GiB for "*2147483647\r\n").
// Exceptions must not cross hiredis' C frames: a callback that cannot
// allocate returns nullptr, which hiredis reports as out of memory.
constexpr size_t kReserveAtMost = 1024;

void* attach(const redisReadTask* task, Reply&& value) noexcept {
    try {
        if (task->parent == nullptr) return new Reply(std::move(value));  // the root
        // Elements come in order: task->idx is the parent's next index. The
        // pointer handed back stays valid while hiredis holds it (only the
        // parent of an unfinished array grows, never that array's ancestors).
        auto* parent = static_cast<Reply*>(task->parent->obj);
        parent->elements.push_back(std::move(value));
        return &parent->elements.back();
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
    Reply reply;
    reply.type = task->type == REDIS_REPLY_ERROR    ? Reply::Type::kError
                 : task->type == REDIS_REPLY_STATUS ? Reply::Type::kStatus
                                                    : Reply::Type::kString;
    try {
        reply.str.assign(str, len);
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
    return attach(task, std::move(reply));
}

void* create_array(const redisReadTask* task, int elements) {
    if (elements < 0) return nullptr;  // hiredis makes -1 nil itself
    Reply reply;
    reply.type = Reply::Type::kArray;
    try {
        reply.elements.reserve(std::min(static_cast<size_t>(elements), kReserveAtMost));
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
    return attach(task, std::move(reply));
}

void* create_integer(const redisReadTask* task, long long value) {
    Reply reply;
    reply.type = Reply::Type::kInteger;
    reply.integer = value;
    return attach(task, std::move(reply));
}

void* create_nil(const redisReadTask* task) { return attach(task, Reply{}); }

// hiredis frees only the root (on error, or with the reader): elements are
// owned by their parent.
void free_object(void* reply) { delete static_cast<Reply*>(reply); }

redisReplyObjectFunctions functions = {create_string, create_array, create_integer, create_nil,
                                       free_object};

struct ReaderFree {
    void operator()(redisReader* reader) const { redisReaderFree(reader); }
};

}  // namespace

struct ReplyParser::Impl {
    std::unique_ptr<redisReader, ReaderFree> reader{redisReaderCreateWithFunctions(&functions)};
};

ReplyParser::ReplyParser() : impl_(std::make_unique<Impl>()) {
    if (!impl_->reader) throw Error(Error::Kind::kConnection, "out of memory");
}

ReplyParser::~ReplyParser() = default;

void ReplyParser::feed(std::string_view data) {
    if (redisReaderFeed(impl_->reader.get(), data.data(), data.size()) != REDIS_OK) {
        throw Error(Error::Kind::kProtocol, "cannot parse reply");
    }
}

std::optional<Reply> ReplyParser::next() {
    void* raw = nullptr;
    if (redisReaderGetReply(impl_->reader.get(), &raw) != REDIS_OK) {
        throw Error(Error::Kind::kProtocol,
                    std::string("protocol error: ") + impl_->reader->errstr);
    }
    if (raw == nullptr) return std::nullopt;
    std::unique_ptr<Reply> reply(static_cast<Reply*>(raw));
    return std::move(*reply);
}

}  // namespace gpe::redis
