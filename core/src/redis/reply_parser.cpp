#include "gpe/redis/reply_parser.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <new>

namespace gpe::redis {

namespace {

constexpr size_t kReserveAtMost = 1024;
constexpr size_t kSmallestElement = 3;  // "+\r\n"

// What the reply being read has cost so far; hiredis hands it to the
// callbacks as privdata.
struct Budget {
    size_t limit = ReplyParser::kNoLimit;
    size_t used = 0;
    std::string refused;  // set when a callback refused (hiredis then reports out of memory)

    bool charge(size_t amount) {
        used += amount;
        if (used <= limit) return true;
        if (refused.empty()) refused = "a reply";
        return false;
    }
};

// hiredis builds each reply through these callbacks, so they make our Reply
// directly; an array's elements are added as they arrive. Exceptions must
// not cross hiredis' C frames: a callback that cannot (or may not) allocate
// returns nullptr, which hiredis reports as out of memory.
void* attach(const redisReadTask* task, Reply&& value) noexcept {
    if (!static_cast<Budget*>(task->privdata)->charge(ReplyParser::kElementCost)) return nullptr;
    try {
        if (task->parent == nullptr) return new Reply(std::move(value));  // the root
        // Elements come in order: only the last element of each open array is
        // still being filled, so growing a vector moves finished ones only.
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
    auto* budget = static_cast<Budget*>(task->privdata);
    const auto count = static_cast<size_t>(elements);
    if (budget->used + count * (ReplyParser::kElementCost + kSmallestElement) > budget->limit) {
        budget->refused = "a reply announcing an array of " + std::to_string(count) + " elements";
        return nullptr;
    }
    Reply reply;
    reply.type = Reply::Type::kArray;
    try {
        reply.elements.reserve(std::min(count, kReserveAtMost));
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

struct ReaderFree {
    void operator()(redisReader* reader) const { redisReaderFree(reader); }
};

}  // namespace

struct ReplyParser::Impl {
    // hiredis wants a mutable pointer to the functions.
    redisReplyObjectFunctions functions = {create_string, create_array, create_integer, create_nil,
                                           free_object};
    std::unique_ptr<redisReader, ReaderFree> reader{redisReaderCreateWithFunctions(&functions)};
    Budget budget;

    [[noreturn]] void fail(const char* what) const {
        if (!budget.refused.empty()) throw ReplyRefused(budget.refused);
        throw Error(Error::Kind::kProtocol, std::string(what) + reader->errstr);
    }
};

ReplyParser::ReplyParser(size_t limit) : impl_(std::make_unique<Impl>()) {
    if (!impl_->reader) throw Error(Error::Kind::kConnection, "out of memory");
    impl_->reader->privdata = &impl_->budget;
    impl_->budget.limit = limit;
}

ReplyParser::~ReplyParser() = default;

void ReplyParser::set_limit(size_t limit) { impl_->budget.limit = limit; }

void ReplyParser::feed(std::string_view data) {
    if (!impl_->budget.charge(data.size())) throw ReplyRefused(impl_->budget.refused);
    if (redisReaderFeed(impl_->reader.get(), data.data(), data.size()) != REDIS_OK) {
        impl_->fail("cannot parse reply: ");
    }
}

std::optional<Reply> ReplyParser::next() {
    void* raw = nullptr;
    if (redisReaderGetReply(impl_->reader.get(), &raw) != REDIS_OK) impl_->fail("protocol error: ");
    if (raw == nullptr) return std::nullopt;
    impl_->budget.used = 0;  // the next reply starts its own budget
    std::unique_ptr<Reply> reply(static_cast<Reply*>(raw));
    return std::move(*reply);
}

}  // namespace gpe::redis
