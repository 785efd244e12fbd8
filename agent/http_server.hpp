// The agent's HTTP(S) endpoint: /metrics (text 0.0.4, or OpenMetrics when the
// Accept header asks for it; gzip when Accept-Encoding allows), /health and
// an index page. TLS with optional or required client certificates.
#pragma once

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
