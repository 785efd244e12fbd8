// How to reach Redis: the seed's REDIS_* settings or a PROMETHEUS_REDIS_URL.
#pragma once

#include <string>
#include <string_view>

namespace gpe::redis {

struct TlsOptions {
    bool enabled = false;
    std::string ca_file;    // CA bundle to verify the server; system default if empty
    std::string ca_path;    // directory of CA certificates
    std::string cert_file;  // client certificate (mutual TLS)
    std::string key_file;   // its private key
    bool verify = true;     // verify the server's certificate and name
};

struct Options {
    std::string host = "localhost";
    int port = 6379;
    std::string unix_socket;  // used instead of host/port when set
    int db = 0;
    std::string username;  // ACL user; empty = "default"
    std::string password;
    TlsOptions tls;
    double connect_timeout = 5.0;  // seconds
    double socket_timeout = 5.0;   // seconds, per read or write
};

// Parses redis://[[user]:password@]host[:port][/db],
// rediss://... (TLS) and unix://[[user]:password@]/path[?db=N].
// Query parameters db, password, username, ssl_ca_certs, ssl_certfile,
// ssl_keyfile and ssl_cert_reqs=none are understood. Throws
// std::invalid_argument naming what is wrong (never the password).
Options parse_url(std::string_view url);

// "host:port/db" or "unix:/path/db", with TLS and user noted; no secrets.
std::string describe(const Options& options);

}  // namespace gpe::redis
