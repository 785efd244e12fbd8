#include "http_server.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>

#include "negotiation.hpp"
#include "request.hpp"

namespace gpe::agent {

namespace {

using Clock = std::chrono::steady_clock;

// Owns a file descriptor.
class Fd {
  public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Fd& operator=(Fd&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    int get() const { return fd_; }

  private:
    int fd_ = -1;
};

struct SslCtxFree {
    void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslFree {
    void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;

std::string openssl_error() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        std::array<char, 256> buffer{};
        ERR_error_string_n(e, buffer.data(), buffer.size());
        if (!out.empty()) out += "; ";
        out += buffer.data();
    }
    return out.empty() ? "unknown OpenSSL error" : out;
}

std::string gzip(std::string_view data) {
    z_stream stream{};
    if (deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        throw std::runtime_error("zlib: deflateInit2 failed");
    }
    std::string out(deflateBound(&stream, data.size()), '\0');
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    stream.avail_in = static_cast<uInt>(data.size());
    stream.next_out = reinterpret_cast<Bytef*>(out.data());
    stream.avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(&stream, Z_FINISH);
    out.resize(stream.total_out);
    deflateEnd(&stream);
    if (rc != Z_STREAM_END) throw std::runtime_error("zlib: deflate failed");
    return out;
}

std::string_view reason(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 413:
            return "Content Too Large";
        case 431:
            return "Request Header Fields Too Large";
        case 501:
            return "Not Implemented";
        case 503:
            return "Service Unavailable";
        case 505:
            return "HTTP Version Not Supported";
        default:
            return "Error";
    }
}

std::string response(int status, std::string_view type, std::string_view body, bool head_only,
                     bool close, std::string_view extra_headers = {}) {
    std::string out;
    out.reserve(200 + (head_only ? 0 : body.size()));
    out += "HTTP/1.1 ";
    out += std::to_string(status);
    out += ' ';
    out += reason(status);
    out += "\r\nContent-Type: ";
    out += type;
    out += "\r\nContent-Length: ";
    out += std::to_string(body.size());
    out += "\r\n";
    out += extra_headers;
    out += close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
    if (!head_only) out += body;
    return out;
}

// Whether something already answers on the port (a busy port hidden by
// SO_REUSEPORT would otherwise be shared silently).
bool port_answers(const std::string& bind, int port) {
    const std::string host = bind == "0.0.0.0" || bind.empty() ? "127.0.0.1"
                             : bind == "::"                    ? "::1"
                                                               : bind;
    sockaddr_storage storage{};
    socklen_t len = 0;
    if (auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
        inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<uint16_t>(port));
        len = sizeof *v4;
    } else if (auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
               inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<uint16_t>(port));
        len = sizeof *v6;
    } else {
        return false;
    }
    const Fd fd(::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) return false;
    return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&storage), len) == 0;
}

constexpr const char* kIndex =
    "<html><head><title>Gunicorn Prometheus exporter</title></head><body>"
    "<h1>Gunicorn Prometheus exporter</h1><p><a href=\"/metrics\">Metrics</a></p>"
    "</body></html>\n";

constexpr std::uint64_t kListenerId = 0;
constexpr std::uint64_t kWakeId = 1;
constexpr auto kLinger = std::chrono::seconds(2);  // to read what follows a last answer
constexpr size_t kWriteChunk = size_t{1} << 20;

}  // namespace

struct HttpServer::Impl {
    enum class State {
        kHandshake,  // TLS
        kReading,    // a request head (and small body), within the request deadline
        kRendering,  // /metrics on the render thread
        kWriting,    // the answer, within the response deadline
        kLingering,  // answered and closing: reads what the client still sends, then closes
    };

    struct Connection {
        std::uint64_t id = 0;
        Fd fd;
        SslPtr ssl;  // destroyed before fd
        State state = State::kReading;
        Clock::time_point since;     // when the current state began
        Clock::time_point deadline;  // when the current state fails
        std::uint32_t events = 0;    // registered with epoll
        std::string in;              // bounded: read_capacity()
        size_t scanned = 0;          // bytes of `in` known to hold no end of a head
        std::string out;
        size_t sent = 0;
        bool close_after = false;
    };

    struct Job {
        std::uint64_t id;
        Format format;
        bool gzip;
        bool head_only;
        bool close;
    };
    struct Done {
        std::uint64_t id;
        std::string response;
        bool close;
    };

    enum class Io { kDone, kWantRead, kWantWrite, kClosed };

    HttpOptions options;
    Renderer renderer;
    SslCtxPtr ssl_ctx;
    Fd listener;
    Fd epoll;
    Fd wake;  // eventfd: stop() and finished renders
    std::atomic<bool> stopping{false};
    std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections;
    std::uint64_t next_id = 2;
    bool listener_paused = false;
    Clock::time_point listener_resume;

    // Shared with the render thread.
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<Job> jobs;
    std::deque<Done> done;
    bool quit = false;

    size_t read_capacity() const { return options.max_header_bytes + options.max_body_bytes + 64; }

    void notify() const {
        const std::uint64_t one = 1;
        [[maybe_unused]] const ssize_t n = ::write(wake.get(), &one, sizeof one);
    }

    // ----------------------------------------------------------- rendering --

    void render_loop() {
        for (;;) {
            Job job{};
            {
                std::unique_lock lock(mutex);
                cv.wait(lock, [&] { return quit || !jobs.empty(); });
                if (quit) return;
                job = jobs.front();
                jobs.pop_front();
            }
            Done result{job.id, render(job), job.close};
            {
                std::lock_guard lock(mutex);
                done.push_back(std::move(result));
            }
            notify();
        }
    }

    std::string render(const Job& job) const {
        try {
            std::string body = renderer(job.format);
            const std::string_view type =
                job.format == Format::kOpenMetrics ? kOpenMetricsContentType : kTextContentType;
            if (job.gzip) {
                return response(200, type, gzip(body), job.head_only, job.close,
                                "Content-Encoding: gzip\r\nVary: Accept, Accept-Encoding\r\n");
            }
            return response(200, type, body, job.head_only, job.close,
                            "Vary: Accept, Accept-Encoding\r\n");
        } catch (const std::exception& e) {
            return response(503, "text/plain",
                            std::string("metrics unavailable: ") + e.what() + "\n", job.head_only,
                            job.close);
        }
    }

    // ---------------------------------------------------------- event loop --

    void want(Connection& c, std::uint32_t events) {
        if (c.events == events) return;
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = c.id;
        ::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
        c.events = events;
    }

    void close(Connection& c) { connections.erase(c.id); }  // c is gone afterwards

    void enter(Connection& c, State state, std::chrono::milliseconds limit) {
        c.state = state;
        c.since = Clock::now();
        c.deadline = c.since + limit;
    }

    void answer(Connection& c, std::string out, bool close_after) {
        c.out = std::move(out);
        c.sent = 0;
        c.close_after = close_after;
        enter(c, State::kWriting, options.response_timeout);
    }

    void dispatch(Connection& c, const Request& request) {
        const bool head_only = request.method == "HEAD";
        const bool close = !request.keep_alive;
        if (request.method != "GET" && !head_only) {
            answer(c,
                   response(405, "text/plain", "only GET and HEAD\n", false, close,
                            "Allow: GET, HEAD\r\n"),
                   close);
        } else if (request.path == "/metrics") {
            // Range is not looked at: a scrape is always the whole exposition.
            const Negotiated negotiated = negotiate(request.accept, request.accept_encoding);
            const Job job{c.id, negotiated.format, negotiated.gzip, head_only, close};
            // Answers that clients do not read stay in memory until their
            // deadline: past a budget, scrapes wait for them to drain.
            size_t unsent = 0;
            for (const auto& [id, other] : connections) unsent += other->out.size() - other->sent;
            bool queued = false;
            if (unsent <= options.max_unsent_bytes) {
                std::lock_guard lock(mutex);
                if (jobs.size() < options.max_queued_renders) {
                    jobs.push_back(job);
                    queued = true;
                }
            }
            if (!queued) {
                answer(c,
                       response(503, "text/plain", "too many scrapes at once\n", head_only, close,
                                "Retry-After: 1\r\n"),
                       close);
                return;
            }
            cv.notify_one();
            enter(c, State::kRendering, options.response_timeout);
        } else if (request.path == "/health") {
            answer(c, response(200, "text/plain", "ok\n", head_only, close), close);
        } else if (request.path == "/") {
            answer(c, response(200, "text/html", kIndex, head_only, close), close);
        } else {
            answer(c, response(404, "text/plain", "Not Found\n", head_only, close), close);
        }
    }

    // Answers the request at the start of c.in, if it is complete.
    bool take_request(Connection& c) {
        // A client trickling bytes must not make each byte rescan the head.
        size_t empty_lines = 0;
        while (c.in.compare(empty_lines, 2, "\r\n") == 0) empty_lines += 2;
        if (empty_lines > 0) {
            c.in.erase(0, empty_lines);
            c.scanned = 0;
        }
        if (c.in.size() <= options.max_header_bytes &&
            c.in.find("\r\n\r\n", c.scanned < 3 ? 0 : c.scanned - 3) == std::string::npos) {
            c.scanned = c.in.size();
            return false;
        }
        c.scanned = 0;
        Request request;
        const Parsed parsed =
            parse_request(c.in, options.max_header_bytes, options.max_body_bytes, request);
        if (parsed.kind == Parsed::kIncomplete) return false;
        if (parsed.kind == Parsed::kError) {
            c.in.clear();
            answer(c,
                   response(parsed.status, "text/plain", std::string(reason(parsed.status)) + "\n",
                            false, true),
                   true);
            return true;
        }
        dispatch(c, request);  // request's views are used up before c.in changes
        c.in.erase(0, parsed.length);
        return true;
    }

    Io read_some(Connection& c) {
        std::array<char, 16384> buffer;
        const size_t room = std::min(buffer.size(), read_capacity() - c.in.size());
        if (room == 0) return Io::kDone;  // parse_request has refused it already
        if (c.ssl) {
            ERR_clear_error();
            const int n = SSL_read(c.ssl.get(), buffer.data(), static_cast<int>(room));
            if (n > 0) {
                c.in.append(buffer.data(), static_cast<size_t>(n));
                return Io::kDone;
            }
            const int error = SSL_get_error(c.ssl.get(), n);
            if (error == SSL_ERROR_WANT_READ) return Io::kWantRead;
            if (error == SSL_ERROR_WANT_WRITE) return Io::kWantWrite;
            return Io::kClosed;
        }
        for (;;) {
            const ssize_t n = ::recv(c.fd.get(), buffer.data(), room, 0);
            if (n > 0) {
                c.in.append(buffer.data(), static_cast<size_t>(n));
                return Io::kDone;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Io::kWantRead;
            return Io::kClosed;
        }
    }

    Io write_some(Connection& c) {
        while (c.sent < c.out.size()) {
            const size_t chunk = std::min(kWriteChunk, c.out.size() - c.sent);
            if (c.ssl) {
                ERR_clear_error();
                const int n =
                    SSL_write(c.ssl.get(), c.out.data() + c.sent, static_cast<int>(chunk));
                if (n > 0) {
                    c.sent += static_cast<size_t>(n);
                    continue;
                }
                const int error = SSL_get_error(c.ssl.get(), n);
                if (error == SSL_ERROR_WANT_WRITE) return Io::kWantWrite;
                if (error == SSL_ERROR_WANT_READ) return Io::kWantRead;
                return Io::kClosed;
            }
            const ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, chunk, MSG_NOSIGNAL);
            if (n > 0) {
                c.sent += static_cast<size_t>(n);
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                return Io::kWantWrite;
            } else {
                return Io::kClosed;
            }
        }
        return Io::kDone;
    }

    // Moves the connection on until it has to wait; may close it.
    void advance(Connection& c) {
        for (;;) {
            switch (c.state) {
                case State::kHandshake: {
                    ERR_clear_error();
                    const int rc = SSL_accept(c.ssl.get());
                    if (rc == 1) {
                        c.state = State::kReading;  // the request deadline runs on
                        continue;
                    }
                    const int error = SSL_get_error(c.ssl.get(), rc);
                    if (error == SSL_ERROR_WANT_READ) return want(c, EPOLLIN);
                    if (error == SSL_ERROR_WANT_WRITE) return want(c, EPOLLOUT);
                    return close(c);  // e.g. no or a wrong client certificate
                }
                case State::kReading: {
                    if (take_request(c)) continue;
                    const Io io = read_some(c);
                    if (io == Io::kDone) continue;
                    if (io == Io::kWantRead) return want(c, EPOLLIN);
                    if (io == Io::kWantWrite) return want(c, EPOLLOUT);
                    return close(c);
                }
                case State::kRendering:
                    return want(c, 0);  // pipelined requests wait in the socket
                case State::kWriting: {
                    const Io io = write_some(c);
                    if (io == Io::kWantWrite) return want(c, EPOLLOUT);
                    if (io == Io::kWantRead) return want(c, EPOLLIN);
                    if (io == Io::kClosed) return close(c);
                    std::string().swap(c.out);
                    c.sent = 0;
                    if (c.close_after) {
                        if (c.ssl) SSL_shutdown(c.ssl.get());  // close_notify
                        ::shutdown(c.fd.get(), SHUT_WR);
                        c.in.clear();
                        enter(c, State::kLingering, std::chrono::milliseconds(kLinger));
                    } else {
                        enter(c, State::kReading, options.request_timeout);
                    }
                    continue;
                }
                case State::kLingering: {
                    // Closing with unread input would reset the connection and
                    // could destroy the answer before the client has read it.
                    std::array<char, 4096> scratch;
                    for (;;) {
                        const ssize_t n = ::recv(c.fd.get(), scratch.data(), scratch.size(), 0);
                        if (n > 0) continue;
                        if (n < 0 && errno == EINTR) continue;
                        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                            return want(c, EPOLLIN);
                        return close(c);
                    }
                }
            }
        }
    }

    // Drops the connection that has waited longest for its request, to make
    // room for a new one.
    bool evict_oldest() {
        Connection* oldest = nullptr;
        for (auto& [id, c] : connections) {
            if ((c->state == State::kReading || c->state == State::kHandshake) &&
                (oldest == nullptr || c->since < oldest->since)) {
                oldest = c.get();
            }
        }
        if (oldest == nullptr) return false;
        close(*oldest);
        return true;
    }

    void pause_listener(Clock::time_point until) {
        epoll_event ev{};
        ev.data.u64 = kListenerId;
        ::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, listener.get(), &ev);
        listener_paused = true;
        listener_resume = until;
    }

    void accept_all() {
        for (int i = 0; i < 256; ++i) {
            Fd fd(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
            if (fd.get() < 0) {
                if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    if (!evict_oldest())
                        pause_listener(Clock::now() + std::chrono::milliseconds(100));
                }
                return;  // EAGAIN: all taken
            }
            if (connections.size() >= options.max_connections && !evict_oldest()) continue;
            const int one = 1;
            ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            auto c = std::make_unique<Connection>();
            c->id = next_id++;
            enter(*c, ssl_ctx ? State::kHandshake : State::kReading, options.request_timeout);
            if (ssl_ctx) {
                c->ssl.reset(SSL_new(ssl_ctx.get()));
                if (!c->ssl || SSL_set_fd(c->ssl.get(), fd.get()) != 1) continue;
            }
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = c->id;
            if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd.get(), &ev) != 0) continue;
            c->events = EPOLLIN;
            c->fd = std::move(fd);
            connections.emplace(c->id, std::move(c));
        }
    }

    void take_rendered() {
        std::uint64_t count = 0;
        [[maybe_unused]] const ssize_t n = ::read(wake.get(), &count, sizeof count);
        std::deque<Done> finished;
        {
            std::lock_guard lock(mutex);
            finished.swap(done);
        }
        for (Done& d : finished) {
            const auto it = connections.find(d.id);
            if (it == connections.end() || it->second->state != State::kRendering) continue;
            Connection& c = *it->second;
            answer(c, std::move(d.response), d.close);
            advance(c);
        }
    }

    void sweep(Clock::time_point now) {
        if (listener_paused && now >= listener_resume) {
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = kListenerId;
            ::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, listener.get(), &ev);
            listener_paused = false;
        }
        for (auto it = connections.begin(); it != connections.end();) {
            Connection& c = *it->second;
            ++it;  // close(c) erases only c
            if (now < c.deadline) continue;
            if (c.state == State::kRendering) {
                // a render that outlived the response deadline: say so and close
                answer(c, response(503, "text/plain", "metrics render timed out\n", false, true),
                       true);
                advance(c);
            } else {
                close(c);  // no whole request in time, or an answer not read in time
            }
        }
    }

    void loop() {
        std::array<epoll_event, 256> events;
        Clock::time_point last_sweep = Clock::now();
        while (!stopping.load()) {
            const int n = ::epoll_wait(epoll.get(), events.data(), events.size(), 100);
            if (n < 0 && errno != EINTR)
                throw std::runtime_error(std::string("epoll_wait: ") + std::strerror(errno));
            for (int i = 0; i < n; ++i) {
                const std::uint64_t id = events[i].data.u64;
                if (id == kListenerId) {
                    accept_all();
                } else if (id == kWakeId) {
                    take_rendered();
                } else if (const auto it = connections.find(id); it != connections.end()) {
                    Connection& c = *it->second;
                    // (with no events asked for, a hang-up would be reported forever)
                    if ((events[i].events & EPOLLERR) != 0 ||
                        ((events[i].events & EPOLLHUP) != 0 && c.state == State::kRendering)) {
                        close(c);
                    } else {
                        advance(c);
                    }
                }
            }
            const Clock::time_point now = Clock::now();
            if (now - last_sweep >= std::chrono::milliseconds(100)) {
                sweep(now);
                last_sweep = now;
            }
        }
    }

    // ------------------------------------------------------------- setup --

    void make_tls_context() {
        const HttpOptions& o = options;
        if (o.keyfile.empty())
            throw std::runtime_error("HTTPS needs PROMETHEUS_SSL_KEYFILE with the certificate");
        const bool verify_clients = !o.client_cafile.empty() || !o.client_capath.empty();
        if (o.client_auth_required && !verify_clients) {
            throw std::runtime_error(
                "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED needs PROMETHEUS_SSL_CLIENT_CAFILE or "
                "_CAPATH");
        }
        SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
        if (!ctx) throw std::runtime_error("TLS: " + openssl_error());
        SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
        SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
        SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE |
                                        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                        SSL_MODE_RELEASE_BUFFERS);
        if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.certfile.c_str()) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx.get(), o.keyfile.c_str(), SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx.get()) != 1) {
            throw std::runtime_error("cannot use certificate " + o.certfile + " / key " +
                                     o.keyfile + ": " + openssl_error());
        }
        if (verify_clients) {
            const char* cafile = o.client_cafile.empty() ? nullptr : o.client_cafile.c_str();
            const char* capath = o.client_capath.empty() ? nullptr : o.client_capath.c_str();
            if (SSL_CTX_load_verify_locations(ctx.get(), cafile, capath) != 1) {
                throw std::runtime_error("cannot use client CA " + o.client_cafile +
                                         o.client_capath + ": " + openssl_error());
            }
            if (cafile != nullptr) {  // tell clients which CAs we accept
                if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(cafile))
                    SSL_CTX_set_client_CA_list(ctx.get(), names);
            }
            SSL_CTX_set_verify(
                ctx.get(),
                SSL_VERIFY_PEER | (o.client_auth_required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                nullptr);
        }
        ssl_ctx = std::move(ctx);
    }

    void listen_on(const std::string& where) {
        const HttpOptions& o = options;
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        addrinfo* found = nullptr;
        const std::string port = std::to_string(o.port);
        if (const int rc = ::getaddrinfo(o.bind.empty() ? nullptr : o.bind.c_str(), port.c_str(),
                                         &hints, &found);
            rc != 0) {
            throw std::runtime_error("cannot listen on " + where + ": " + ::gai_strerror(rc));
        }
        const std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addresses(found,
                                                                             &::freeaddrinfo);
        int error = EADDRNOTAVAIL;
        for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
            Fd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                           a->ai_protocol));
            if (fd.get() < 0) {
                error = errno;
                continue;
            }
            // Every agent listens with SO_REUSEPORT so that the agent of a new
            // master can take over during a USR2 upgrade.
            const int one = 1;
            const int zero = 0;
            ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
            if (a->ai_family == AF_INET6)
                ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
            if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 ||
                ::listen(fd.get(), o.backlog) != 0) {
                error = errno;
                continue;
            }
            listener = std::move(fd);
            return;
        }
        throw std::runtime_error("cannot listen on " + where + ": " + std::strerror(error));
    }
};

HttpServer::HttpServer(HttpOptions options, Renderer renderer) : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    impl_->renderer = std::move(renderer);
}

HttpServer::~HttpServer() = default;

void HttpServer::bind() {
    Impl& s = *impl_;
    const HttpOptions& o = s.options;
    const std::string where = o.bind + ":" + std::to_string(o.port);
    if (!o.certfile.empty()) s.make_tls_context();
    // Outside an upgrade a port that already answers is an error, not
    // something to share.
    if (!o.upgrade && port_answers(o.bind, o.port)) {
        throw std::runtime_error("cannot listen on " + where + ": the port is already in use");
    }
    s.listen_on(where);
    s.epoll = Fd(::epoll_create1(EPOLL_CLOEXEC));
    s.wake = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (s.epoll.get() < 0 || s.wake.get() < 0)
        throw std::runtime_error(std::string("epoll: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerId;
    ::epoll_ctl(s.epoll.get(), EPOLL_CTL_ADD, s.listener.get(), &ev);
    ev.data.u64 = kWakeId;
    ::epoll_ctl(s.epoll.get(), EPOLL_CTL_ADD, s.wake.get(), &ev);
}

void HttpServer::serve() {
    Impl& s = *impl_;
    if (s.listener.get() < 0) throw std::runtime_error("HTTP server: serve() before bind()");
    std::thread renderer([&s] { s.render_loop(); });
    // The render thread ends with serve(), however serve() ends.
    struct Join {
        Impl& s;
        std::thread& thread;
        ~Join() {
            {
                std::lock_guard lock(s.mutex);
                s.quit = true;
            }
            s.cv.notify_all();
            thread.join();
            s.connections.clear();
        }
    } join{s, renderer};
    s.loop();
}

void HttpServer::stop() {
    impl_->stopping.store(true);
    if (impl_->wake.get() >= 0) impl_->notify();
}

}  // namespace gpe::agent
