#include "gpe/redis/transport.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "gpe/redis/errors.hpp"

namespace gpe::redis {

namespace {

struct SslCtxFree {
    void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslFree {
    void operator()(SSL* ssl) const { SSL_free(ssl); }
};
std::string openssl_error() {
    const unsigned long code = ERR_get_error();
    if (code == 0) return "unknown TLS error";
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

bool is_ip_address(const std::string& host) {
    in6_addr buf{};
    return inet_pton(AF_INET, host.c_str(), &buf) == 1 ||
           inet_pton(AF_INET6, host.c_str(), &buf) == 1;
}

[[noreturn]] void connection_error(const std::string& what) {
    throw Error(Error::Kind::kConnection, what);
}

Step socket_step(ssize_t n, short wait, const char* what) {
    if (n >= 0) return {static_cast<size_t>(n), 0};
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {0, wait};
    if (errno == EINTR) return {};
    connection_error(std::string(what) + ": " + std::strerror(errno));
}

class PlainTransport : public Transport {
  public:
    explicit PlainTransport(int fd) : fd_(fd) {}
    Step write(std::string_view data) override {
        return socket_step(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL), POLLOUT, "write");
    }
    Step read(char* buf, size_t size) override {
        const ssize_t n = ::recv(fd_, buf, size, 0);
        if (n == 0) connection_error("connection closed by server");
        return socket_step(n, POLLIN, "read");
    }

  private:
    int fd_;
};

std::unique_ptr<SSL_CTX, SslCtxFree> tls_context(const TlsOptions& tls) {
    std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) connection_error("TLS: " + openssl_error());
    if (!tls.ca_file.empty() || !tls.ca_path.empty()) {
        if (SSL_CTX_load_verify_locations(
                ctx.get(), tls.ca_file.empty() ? nullptr : tls.ca_file.c_str(),
                tls.ca_path.empty() ? nullptr : tls.ca_path.c_str()) != 1) {
            connection_error("TLS: cannot load CA certificates: " + openssl_error());
        }
    } else {
        SSL_CTX_set_default_verify_paths(ctx.get());
    }
    if (!tls.cert_file.empty()) {
        if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert_file.c_str()) != 1) {
            connection_error("TLS: cannot load client certificate " + tls.cert_file + ": " +
                             openssl_error());
        }
        const std::string& key = tls.key_file.empty() ? tls.cert_file : tls.key_file;
        if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1) {
            connection_error("TLS: cannot load client key " + key + ": " + openssl_error());
        }
    }
    SSL_CTX_set_verify(ctx.get(), tls.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
    return ctx;
}

class TlsTransport : public Transport {
  public:
    TlsTransport(int fd, const Options& options) : ctx_(tls_context(options.tls)) {
        ssl_.reset(SSL_new(ctx_.get()));
        if (!ssl_) connection_error("TLS: " + openssl_error());
        SSL_set_fd(ssl_.get(), fd);
        if (!options.unix_socket.empty()) return;
        const bool verify = options.tls.verify;
        if (is_ip_address(options.host)) {
            if (verify)
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), options.host.c_str());
        } else {
            SSL_set_tlsext_host_name(ssl_.get(), options.host.c_str());
            if (verify) SSL_set1_host(ssl_.get(), options.host.c_str());
        }
    }
    Step handshake() override {
        const int rc = SSL_connect(ssl_.get());
        if (rc == 1) return {1, 0};
        if (const Step wait = want(rc); wait.wait != 0) return wait;
        std::string why = openssl_error();
        const long verify = SSL_get_verify_result(ssl_.get());
        if (verify != X509_V_OK)
            why += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
        connection_error("TLS handshake failed: " + why);
    }
    Step write(std::string_view data) override {
        size_t written = 0;
        const int rc = SSL_write_ex(ssl_.get(), data.data(), data.size(), &written);
        if (rc == 1) return {written, 0};
        if (const Step wait = want(rc); wait.wait != 0) return wait;
        connection_error("TLS write failed: " + openssl_error());
    }
    Step read(char* buf, size_t size) override {
        size_t got = 0;
        const int rc = SSL_read_ex(ssl_.get(), buf, size, &got);
        if (rc == 1) return {got, 0};
        if (const Step wait = want(rc); wait.wait != 0) return wait;
        if (SSL_get_error(ssl_.get(), rc) == SSL_ERROR_ZERO_RETURN)
            connection_error("connection closed by server");
        connection_error("TLS read failed: " + openssl_error());
    }
    void close_notify() override { SSL_shutdown(ssl_.get()); }

  private:
    // TLS may need the other direction than the call's (renegotiation).
    Step want(int rc) const {
        const int err = SSL_get_error(ssl_.get(), rc);
        if (err == SSL_ERROR_WANT_READ) return {0, POLLIN};
        if (err == SSL_ERROR_WANT_WRITE) return {0, POLLOUT};
        return {};
    }

    std::unique_ptr<SSL_CTX, SslCtxFree> ctx_;
    std::unique_ptr<SSL, SslFree> ssl_;
};

}  // namespace

std::unique_ptr<Transport> make_transport(int fd, const Options& options) {
    if (options.tls.enabled) return std::make_unique<TlsTransport>(fd, options);
    return std::make_unique<PlainTransport>(fd);
}

}  // namespace gpe::redis
