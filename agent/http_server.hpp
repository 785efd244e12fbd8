// The agent's HTTP(S) endpoint: /metrics (text 0.0.4, or OpenMetrics when the
// Accept header asks for it; gzip when Accept-Encoding allows), /health and
// an index page. TLS with optional or required client certificates.
//
// One event loop (epoll, non-blocking sockets, OpenSSL) holds every
// connection, so a slow or idle client costs a file descriptor and a few
// kilobytes, never a thread: scrapes are served while thousands of clients
// trickle. Every connection has a total deadline for its request head (not
// per byte), heads and bodies have size limits, requests on one connection
// (pipelined or not) are answered one at a time in order, and rendering runs
// on a thread of its own so that /health answers during a slow render.
// bench/bench_http_slowloris.py measures why this, and not cpp-httplib or
// libmicrohttpd, serves the agent.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "gpe/exposition.hpp"

namespace gpe::agent {

struct HttpOptions {
    std::string bind = "0.0.0.0";
    int port = 9091;
    std::string certfile;  // HTTPS when set, with keyfile
    std::string keyfile;
    std::string client_cafile;  // verify client certificates against these CAs
    std::string client_capath;
    bool client_auth_required = false;
    // The port may be held by our own agent of the old master (USR2 binary
    // upgrade): share it (SO_REUSEPORT) instead of failing on a busy port.
    bool upgrade = false;

    // Hostile clients: at most this many connections (more: the one that has
    // waited longest for its request is dropped), each with this long for a
    // whole request head (from connect, or from the end of the previous
    // answer on a kept-alive connection), and this long to read an answer.
    std::size_t max_connections = 4096;
    std::chrono::milliseconds request_timeout{10000};
    std::chrono::milliseconds response_timeout{60000};
    std::size_t max_header_bytes = 8192;  // request line and headers; more: 431
    std::size_t max_body_bytes = 1024;    // a GET needs none; more: 413
    int backlog = 1024;
    std::size_t max_queued_renders = 16;                    // more scrapes waiting: 503
    std::size_t max_unsent_bytes = std::size_t{256} << 20;  // answers not yet read; more: 503
};

// Renders the exposition; throws on failure (answered 503).
using Renderer = std::function<std::string(Format format)>;

class HttpServer {
  public:
    HttpServer(HttpOptions options, Renderer renderer);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // Binds the port; throws std::runtime_error naming address and cause
    // (e.g. the port is busy) so that the agent can exit with a clear error.
    void bind();
    // Serves until stop() (from another thread or a signal handler thread).
    void serve();
    void stop();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gpe::agent
