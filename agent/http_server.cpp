#include "http_server.hpp"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "negotiation.hpp"

namespace gpe::agent {

namespace {

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
    const int fd = ::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    const bool answers = ::connect(fd, reinterpret_cast<sockaddr*>(&storage), len) == 0;
    ::close(fd);
    return answers;
}

}  // namespace

struct HttpServer::Impl {
    HttpOptions options;
    Renderer renderer;
    std::unique_ptr<httplib::Server> server;

    void routes() {
        server->Get(
            "/metrics", [this](const httplib::Request& request, httplib::Response& response) {
                const std::string accept = request.get_header_value("Accept");
                const std::string encoding = request.get_header_value("Accept-Encoding");
                const Negotiated negotiated = negotiate(accept, encoding);
                const bool om = negotiated.format == Format::kOpenMetrics;
                std::string body;
                try {
                    body = renderer(om ? Format::kOpenMetrics : Format::kText);
                } catch (const std::exception& e) {
                    response.status = 503;
                    response.set_content(std::string("metrics unavailable: ") + e.what() + "\n",
                                         "text/plain");
                    return;
                }
                const std::string_view type = om ? kOpenMetricsContentType : kTextContentType;
                // httplib compresses text/plain itself (gzip or brotli, as the
                // client accepts); OpenMetrics is not a type it compresses.
                if (negotiated.gzip) {
                    response.set_header("Content-Encoding", "gzip");
                    response.set_header("Vary", "Accept-Encoding");
                    response.set_content(gzip(body), std::string(type));
                    return;
                }
                response.set_content(std::move(body), std::string(type));
            });
        server->Get("/health", [](const httplib::Request&, httplib::Response& response) {
            response.set_content("ok\n", "text/plain");
        });
        server->Get("/", [](const httplib::Request&, httplib::Response& response) {
            response.set_content(
                "<html><head><title>Gunicorn Prometheus exporter</title></head><body>"
                "<h1>Gunicorn Prometheus exporter</h1><p><a href=\"/metrics\">Metrics</a></p>"
                "</body></html>\n",
                "text/html");
        });
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
    if (!o.certfile.empty()) {
        if (o.keyfile.empty())
            throw std::runtime_error("HTTPS needs PROMETHEUS_SSL_KEYFILE with the certificate");
        const bool verify_clients = !o.client_cafile.empty() || !o.client_capath.empty();
        auto server = std::make_unique<httplib::SSLServer>(
            o.certfile.c_str(), o.keyfile.c_str(),
            o.client_cafile.empty() ? nullptr : o.client_cafile.c_str(),
            o.client_capath.empty() ? nullptr : o.client_capath.c_str());
        if (!server->is_valid()) {
            throw std::runtime_error("cannot use certificate " + o.certfile + " / key " +
                                     o.keyfile + (verify_clients ? " / client CA" : ""));
        }
        if (verify_clients && !o.client_auth_required) {
            SSL_CTX_set_verify(server->ssl_context(), SSL_VERIFY_PEER, nullptr);  // optional
        } else if (o.client_auth_required && !verify_clients) {
            throw std::runtime_error(
                "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED needs PROMETHEUS_SSL_CLIENT_CAFILE or "
                "_CAPATH");
        }
        s.server = std::move(server);
    } else {
        s.server = std::make_unique<httplib::Server>();
    }
    // Every agent listens with SO_REUSEPORT so that the agent of a new master
    // can take over during a USR2 upgrade; outside an upgrade a port that
    // already answers is an error, not something to share.
    if (!o.upgrade && port_answers(o.bind, o.port)) {
        throw std::runtime_error("cannot listen on " + where + ": the port is already in use");
    }
    s.server->set_socket_options([](socket_t sock) {
        const int one = 1;
        ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        ::setsockopt(sock, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    });
    s.routes();
    errno = 0;
    if (!s.server->bind_to_port(o.bind, o.port)) {
        const int error = errno;
        throw std::runtime_error("cannot listen on " + where + ": " +
                                 (error != 0 ? std::strerror(error) : "address unavailable"));
    }
}

void HttpServer::serve() {
    if (!impl_->server->listen_after_bind())
        throw std::runtime_error("HTTP server stopped with an error");
}

void HttpServer::stop() {
    if (impl_->server) impl_->server->stop();
}

}  // namespace gpe::agent
