#include "gpe/redis/connection.hpp"

#include <fcntl.h>
#include <hiredis/hiredis.h>  // redisFormatCommandArgv
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "gpe/mmap_file.hpp"  // FileDescriptor
#include "gpe/redis/transport.hpp"

namespace gpe::redis {

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kBatch = 1024;  // commands written before their replies are read

struct AddrinfoFree {
    void operator()(addrinfo* info) const { freeaddrinfo(info); }
};

// EXEC answers one element for each queued command: a reply may be larger by
// what the commands sent allow (see pipeline()), never by what the server wants.
constexpr size_t kAllowancePerCommand = 64;

bool is_auth_error(std::string_view message) {
    return message.starts_with("WRONGPASS") || message.starts_with("NOAUTH") ||
           message.starts_with("NOPERM") ||
           message.find("invalid password") != std::string_view::npos ||
           message.find("invalid username-password") != std::string_view::npos ||
           message.find("AUTH <password> called without any password") != std::string_view::npos ||
           message.find("without any password configured") != std::string_view::npos;
}

// The commands a new connection starts with: AUTH (with the ACL user, if
// any), SELECT, and a PING that shows the server answers.
std::vector<Command> handshake_commands(const Options& options) {
    std::vector<Command> commands;
    if (!options.password.empty()) {
        if (options.username.empty()) {
            commands.push_back({"AUTH", options.password});
        } else {
            commands.push_back({"AUTH", options.username, options.password});
        }
    }
    if (options.db != 0) commands.push_back({"SELECT", std::to_string(options.db)});
    commands.push_back({"PING"});
    return commands;
}

}  // namespace

struct Connection::Impl {
    Options options;
    std::string where;  // for messages
    FileDescriptor fd;
    std::unique_ptr<Transport> transport;
    ReplyParser parser;
    Clock::time_point deadline;

    [[noreturn]] void fail(Error::Kind kind, const std::string& what) const {
        throw Error(kind, what + " (Redis at " + where + ")");
    }

    bool connecting = true;  // which timeout the deadline is

    void start_deadline(double seconds) {
        deadline = Clock::now() + std::chrono::microseconds(static_cast<long long>(seconds * 1e6));
    }

    // Waits until the socket is ready for `events` or the deadline passes.
    void wait(short events) {
        for (;;) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) timed_out();
            pollfd p{fd.get(), events, 0};
            const int n = ::poll(&p, 1, static_cast<int>(left.count()));
            if (n > 0) return;
            if (n < 0 && errno != EINTR)
                fail(Error::Kind::kConnection, std::string("poll: ") + std::strerror(errno));
        }
    }

    void connect_socket() {
        start_deadline(options.connect_timeout);
        if (!options.unix_socket.empty()) {
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            if (options.unix_socket.size() >= sizeof addr.sun_path)
                fail(Error::Kind::kConnection, "socket path too long");
            std::memcpy(addr.sun_path, options.unix_socket.c_str(), options.unix_socket.size() + 1);
            fd = FileDescriptor(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
            if (fd.get() < 0)
                fail(Error::Kind::kConnection, std::string("socket: ") + std::strerror(errno));
            finish_connect(reinterpret_cast<sockaddr*>(&addr), sizeof addr);
            return;
        }
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* found = nullptr;
        const std::string port = std::to_string(options.port);
        if (int rc = ::getaddrinfo(options.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
            fail(Error::Kind::kConnection, std::string("cannot resolve host: ") + gai_strerror(rc));
        }
        std::unique_ptr<addrinfo, AddrinfoFree> list(found);
        std::string last_error = "no address";
        for (addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
            fd = FileDescriptor(::socket(
                ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
            if (fd.get() < 0) continue;
            try {
                finish_connect(ai->ai_addr, ai->ai_addrlen);
                const int one = 1;
                ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                ::setsockopt(fd.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
                return;
            } catch (const Error& e) {
                if (e.kind() == Error::Kind::kTimeout) throw;
                last_error = e.what();
            }
        }
        throw Error(Error::Kind::kConnection, last_error);
    }

    void finish_connect(const sockaddr* addr, socklen_t len) {
        if (::connect(fd.get(), addr, len) == 0) return;
        if (errno != EINPROGRESS && errno != EAGAIN) {
            fail(Error::Kind::kConnection, std::string("connect: ") + std::strerror(errno));
        }
        wait(POLLOUT);
        int error = 0;
        socklen_t size = sizeof error;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &size);
        if (error != 0)
            fail(Error::Kind::kConnection, std::string("connect: ") + std::strerror(error));
    }

    // Runs `step` until it moves something (or is done), waiting within the
    // deadline for what it asks: the one want-read/want-write loop.
    template <typename F>
    size_t until_moved(F&& step) {
        for (;;) {
            Step done;
            try {
                done = step();
            } catch (const Error& e) {
                fail(e.kind(), e.what());
            }
            if (done.wait != 0) {
                wait(done.wait);
            } else if (done.bytes > 0) {
                return done.bytes;
            }
        }
    }

    void start_transport() {
        try {
            transport = make_transport(fd.get(), options);
        } catch (const Error& e) {
            fail(e.kind(), e.what());
        }
        until_moved([&] { return transport->handshake(); });
    }

    void write_all(std::string_view data) {
        while (!data.empty())
            data.remove_prefix(until_moved([&] { return transport->write(data); }));
    }

    // Reads what is available (waiting up to the socket timeout) into the parser.
    void read_some() {
        char buf[64 * 1024];
        const size_t n = until_moved([&] { return transport->read(buf, sizeof buf); });
        try {
            parser.feed(std::string_view(buf, n));
        } catch (const ReplyRefused& e) {
            refuse(e.refused());
        } catch (const Error& e) {
            fail(e.kind(), e.what());
        }
        // The deadline holds for the whole reply, also while data keeps coming.
        if (Clock::now() >= deadline) timed_out();
    }

    [[noreturn]] void refuse(const std::string& refused) const {
        // (The limit also allows kAllowancePerCommand for each command sent.)
        fail(Error::Kind::kProtocol, "refused " + refused +
                                         " larger than the limit, REDIS_MAX_REPLY_BYTES = " +
                                         std::to_string(options.max_reply_bytes) + " bytes");
    }

    [[noreturn]] void timed_out() const {
        if (connecting) {
            fail(Error::Kind::kTimeout, "timed out connecting (connect timeout " +
                                            format_seconds(options.connect_timeout) + " s)");
        }
        fail(Error::Kind::kTimeout, "timed out: no complete reply within the socket timeout (" +
                                        format_seconds(options.socket_timeout) + " s)");
    }

    // The next reply, within the deadline set for its batch.
    Reply next_reply() {
        for (;;) {
            std::optional<Reply> reply;
            try {
                reply = parser.next();
            } catch (const ReplyRefused& e) {
                refuse(e.refused());
            } catch (const Error& e) {
                fail(e.kind(), e.what());
            }
            if (reply) return std::move(*reply);
            read_some();
        }
    }

    void append(std::string& out, const Command& command) {
        std::vector<const char*> argv;
        std::vector<size_t> lens;
        argv.reserve(command.size());
        lens.reserve(command.size());
        for (const auto& arg : command) {
            argv.push_back(arg.data());
            lens.push_back(arg.size());
        }
        char* formatted = nullptr;
        const int len = redisFormatCommandArgv(&formatted, static_cast<int>(argv.size()),
                                               argv.data(), lens.data());
        if (len < 0) fail(Error::Kind::kProtocol, "cannot encode command");
        out.append(formatted, static_cast<size_t>(len));
        redisFreeCommand(formatted);
    }

    void check_handshake(const std::vector<Reply>& replies) const {
        for (const Reply& reply : replies) {
            if (!reply.is_error()) continue;
            if (is_auth_error(reply.str))
                fail(Error::Kind::kAuthentication, "authentication failed: " + reply.str);
            fail(Error::Kind::kConnection, "connection set-up failed: " + reply.str);
        }
    }

    std::vector<Reply> pipeline(const std::vector<Command>& commands) {
        // EXEC answers one element for each queued command: a reply may be
        // larger by what the commands sent allow, never by what the server wants.
        parser.set_limit(options.max_reply_bytes + commands.size() * kAllowancePerCommand);
        std::vector<Reply> replies;
        replies.reserve(commands.size());
        std::string buffer;
        for (size_t start = 0; start < commands.size(); start += kBatch) {
            const size_t end = std::min(commands.size(), start + kBatch);
            buffer.clear();
            for (size_t i = start; i < end; ++i) append(buffer, commands[i]);
            // One deadline for the batch: its commands written, every reply read.
            start_deadline(options.socket_timeout);
            write_all(buffer);
            for (size_t i = start; i < end; ++i) replies.push_back(next_reply());
        }
        return replies;
    }
};

Connection::Connection(const Options& options) : impl_(std::make_unique<Impl>()) {
    Impl& c = *impl_;
    c.options = options;
    c.where = describe(options);
    c.parser.set_limit(options.max_reply_bytes);
    c.connect_socket();
    c.start_transport();
    c.connecting = false;
    c.check_handshake(c.pipeline(handshake_commands(options)));
}

Connection::~Connection() {
    if (impl_ && impl_->transport) impl_->transport->close_notify();
}

std::vector<Reply> Connection::pipeline(const std::vector<Command>& commands) {
    return impl_->pipeline(commands);
}

Reply Connection::command(const Command& command) {
    Reply reply = std::move(impl_->pipeline({command}).front());
    if (reply.is_error()) {
        throw Error(is_auth_error(reply.str) ? Error::Kind::kAuthentication : Error::Kind::kServer,
                    reply.str);
    }
    return reply;
}

int Connection::socket_fd() const { return impl_->fd.get(); }

void Connection::abandon() {
    // Free the TLS state without SSL_shutdown, close our copy of the socket.
    impl_->transport.reset();
    impl_->fd = FileDescriptor();
}

}  // namespace gpe::redis
