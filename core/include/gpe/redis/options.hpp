// How to reach Redis: the seed's REDIS_* settings or a PROMETHEUS_REDIS_URL,
// directly, through Redis Sentinel (REDIS_SENTINELS, redis+sentinel://) or as
// a Redis Cluster (REDIS_CLUSTER, REDIS_CLUSTER_NODES, redis+cluster://).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace gpe::redis {

// REDIS_MAX_REPLY_BYTES: default and range. The least still holds a SCAN
// page and a read script's batch of values.
inline constexpr size_t kDefaultMaxReplyBytes = size_t{32} << 20;
inline constexpr size_t kMinMaxReplyBytes = size_t{1} << 20;
inline constexpr size_t kMaxMaxReplyBytes = size_t{4} << 30;
// hiredis refuses arrays nested deeper than this (fixed in hiredis 0.14).
inline constexpr int kMaxReplyDepth = 7;

struct TlsOptions {
    bool enabled = false;
    std::string ca_file;    // CA bundle to verify the server; system default if empty
    std::string ca_path;    // directory of CA certificates
    std::string cert_file;  // client certificate (mutual TLS)
    std::string key_file;   // its private key
    bool verify = true;     // verify the server's certificate and name
};

inline constexpr int kDefaultSentinelPort = 26379;
inline constexpr int kDefaultPort = 6379;

struct Address {
    std::string host;
    int port = 0;
    bool operator==(const Address&) const = default;
};

// Set (addresses and a master name): the master's address is asked of the
// sentinels at every connect, and host/port/unix_socket are not used.
struct SentinelOptions {
    std::vector<Address> sentinels;
    std::string master;    // the name the sentinels monitor it by
    std::string password;  // the sentinels' requirepass; empty: none
    bool enabled() const { return !sentinels.empty(); }
};

// Set (seed nodes): Redis Cluster. The seeds are asked for the slot map
// (cluster.hpp) and host/port/unix_socket are not used; any node will do as a
// seed, every node is then reached at the address the cluster announces.
struct ClusterOptions {
    std::vector<Address> nodes;
    bool enabled() const { return !nodes.empty(); }
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
    // Seconds for a whole exchange: writing a batch of (up to 1024 pipelined)
    // commands and reading every reply to it, however fast the bytes arrive.
    double socket_timeout = 5.0;
    // The largest reply accepted, in bytes received (an array counts 16 more
    // per element, for the memory each takes); a larger one is refused and
    // the connection dropped, before it is buffered whole. The replies of a
    // pipeline may also have 64 bytes for each of its commands (EXEC answers
    // one element per queued command).
    size_t max_reply_bytes = kDefaultMaxReplyBytes;
    SentinelOptions sentinel;
    ClusterOptions cluster;
};

// Parses redis://[[user]:password@]host[:port][/db],
// rediss://... (TLS), unix://[[user]:password@]/path[?db=N] and
// redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]
// (rediss+sentinel:// with TLS; the credentials are the master's, port 26379
// by default) and redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0]
// (rediss+cluster:// with TLS; seed nodes, port 6379 by default, database 0 only). Query parameters
// db, password, username, ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs=none and
// sentinel_password are understood. Throws std::invalid_argument naming what is wrong (never the
// password).
Options parse_url(std::string_view url);

// "host:port,host:port" (REDIS_SENTINELS): at least one address, IPv6 in
// brackets, port 26379 if left out. Throws std::invalid_argument.
std::vector<Address> parse_sentinels(std::string_view list);
std::string format_sentinels(const std::vector<Address>& sentinels);

// "host:port,host:port" (REDIS_CLUSTER_NODES): as parse_sentinels, port 6379
// if left out. Throws std::invalid_argument.
std::vector<Address> parse_cluster_nodes(std::string_view list);

// Throws std::invalid_argument when sentinels are given without the master's
// name, or the name without sentinels.
void check_sentinel(const SentinelOptions& sentinel);

// REDIS_CLUSTER and REDIS_CLUSTER_NODES on `options`: the nodes listed are
// the seeds, or else with `cluster` the server `options` names (host:port).
// Then check_cluster. Throws std::invalid_argument.
void apply_cluster_settings(Options& options, bool cluster, std::string_view nodes);

// Throws std::invalid_argument when cluster seeds are given with sentinels,
// a Unix socket or a database other than 0 (a cluster has only database 0).
void check_cluster(const Options& options);

// "host:port/db" or "unix:/path/db", with TLS and user noted; no secrets.
std::string describe(const Options& options);

// Seconds as a person writes them: "5", "0.5".
std::string format_seconds(double seconds);

}  // namespace gpe::redis
