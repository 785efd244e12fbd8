#include "gpe/redis/client.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>

#include "gpe/clock.hpp"
#include "gpe/redis/cluster.hpp"
#include "gpe/redis/sentinel.hpp"

namespace gpe::redis {

namespace {

constexpr double kFirstBackoff = 0.1;
constexpr double kMaxBackoff = 30.0;

}  // namespace

Client::Client(Options options) : options_(std::move(options)) {
    if (options_.cluster.enabled()) cluster_ = std::make_unique<Cluster>(options_);
}
Client::~Client() = default;

void Client::refuse_during_backoff() const {
    const auto now = Clock::now();
    if (now < next_attempt_) {
        const double wait = std::chrono::duration<double>(next_attempt_ - now).count();
        // The same kind as the failure that started the wait: a wrong
        // password stays an authentication error.
        throw Error(last_kind_,
                    last_error_ + "; next attempt in " + std::to_string(wait).substr(0, 4) + " s");
    }
}

void Client::start_backoff(const Error& error) {
    backoff_ =
        std::chrono::duration<double>(std::clamp(backoff_.count() * 2, kFirstBackoff, kMaxBackoff));
    next_attempt_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(backoff_);
    last_error_ = error.what();
    last_kind_ = error.kind();
}

Connection& Client::connection() {
    if (connection_) return *connection_;
    refuse_during_backoff();
    try {
        connection_ = options_.sentinel.enabled() ? connect_to_master(options_)
                                                  : std::make_unique<Connection>(options_);
    } catch (const Error& e) {
        start_backoff(e);
        throw;
    }
    backoff_ = std::chrono::duration<double>(0.0);
    ++epoch_;
    return *connection_;
}

std::vector<Reply> Client::on_cluster(const std::function<std::vector<Reply>()>& run) {
    refuse_during_backoff();
    try {
        std::vector<Reply> replies = run();
        backoff_ = std::chrono::duration<double>(0.0);
        return replies;
    } catch (const Error& e) {
        // The cluster already retried within the socket timeout; a bug of the
        // caller (keys of two slots) is no reason to wait.
        if (e.kind() != Error::Kind::kProtocol && e.kind() != Error::Kind::kServer)
            start_backoff(e);
        throw;
    }
}

bool Client::demoted(std::string_view error) const {
    // A master behind sentinels that became a replica: ask them again.
    return options_.sentinel.enabled() && error.starts_with("READONLY");
}

void Client::disconnect_after(const Error& error) {
    // A server error leaves the connection fine (unless it says the master is
    // one no longer); a failed or refused connection attempt was recorded by
    // connection().
    if ((error.kind() == Error::Kind::kServer && !demoted(error.what())) || !connection_) return;
    connection_.reset();
    last_error_ = error.what();
    last_kind_ = error.kind();
}

std::vector<Reply> Client::pipeline(const std::vector<Command>& commands) {
    std::lock_guard lock(*mutex_);
    if (cluster_) return on_cluster([&] { return cluster_->pipeline(commands); });
    std::vector<Reply> replies;
    try {
        replies = connection().pipeline(commands);
    } catch (const Error& e) {
        disconnect_after(e);
        throw;
    }
    for (const Reply& reply : replies) {
        if (reply.is_error() && demoted(reply.str)) {
            disconnect_after(Error(Error::Kind::kServer, reply.str));
            break;
        }
    }
    return replies;
}

Reply Client::command(const Command& command) {
    if (cluster_) {
        Reply reply = std::move(pipeline({command}).front());
        if (reply.is_error()) throw Error(Error::Kind::kServer, reply.str);
        return reply;
    }
    std::lock_guard lock(*mutex_);
    try {
        return connection().command(command);
    } catch (const Error& e) {
        disconnect_after(e);
        throw;
    }
}

std::vector<Address> Client::primaries() {
    std::lock_guard lock(*mutex_);
    if (!cluster_) return {};
    std::vector<Address> out;
    on_cluster([&] {
        out = cluster_->primaries();
        return std::vector<Reply>();
    });
    return out;
}

std::vector<Reply> Client::pipeline_on(const Address& node, const std::vector<Command>& commands) {
    if (!cluster_) return pipeline(commands);
    std::lock_guard lock(*mutex_);
    return on_cluster([&] { return cluster_->pipeline_on(node, commands); });
}

void Client::ping() { command({"PING"}); }

double Client::server_time() {
    try {
        const Reply reply = command({"TIME"});
        if (reply.type == Reply::Type::kArray && reply.elements.size() == 2) {
            long long seconds = 0;
            long long micros = 0;
            const std::string& s = reply.elements[0].str;
            const std::string& u = reply.elements[1].str;
            std::from_chars(s.data(), s.data() + s.size(), seconds);
            std::from_chars(u.data(), u.data() + u.size(), micros);
            return static_cast<double>(seconds) + static_cast<double>(micros) / 1e6;
        }
    } catch (const Error&) {
        // fall through to the local clock, as the seed does
    }
    return unix_time();
}

uint64_t Client::connection_epoch() const {
    std::lock_guard lock(*mutex_);
    return epoch_ + (cluster_ ? cluster_->connections_made() : 0);
}

void Client::reset_after_fork() {
    // The mutex may be held by a thread of the parent that does not exist
    // here: it can never be unlocked, so leave it (leaked) and use a new one.
    const bool in_use = !mutex_->try_lock();
    if (!in_use) mutex_->unlock();
    (void)mutex_.release();
    mutex_ = std::make_unique<std::mutex>();
    if (in_use) {
        // That thread was in the middle of a command: the connections' objects
        // may be half changed, and freeing them could corrupt the heap. They
        // are let go (leaked, once per such fork); only the socket is closed.
        if (connection_) {
            if (const int fd = connection_->socket_fd(); fd >= 0) ::close(fd);
            (void)connection_.release();
        }
        if (cluster_) {
            (void)cluster_.release();
            cluster_ = std::make_unique<Cluster>(options_);
        }
    } else {
        if (connection_) {
            connection_->abandon();
            connection_.reset();
        }
        if (cluster_) cluster_->abandon();
    }
    epoch_ += 1;
}

}  // namespace gpe::redis
