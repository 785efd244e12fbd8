// A Redis client that reconnects by itself: a failed connection attempt
// waits with exponential backoff (0.1 s doubling to 30 s) before the next,
// and calls in between fail at once instead of blocking the caller.
// With Redis Sentinel (Options::sentinel) each connect asks the sentinels
// where the master is, and a READONLY answer (the master was demoted) drops
// the connection, so that the next call finds the new master.
// With Redis Cluster (Options::cluster) each command goes to the primary of
// its key's slot (cluster.hpp), one connection per primary; a failover is
// waited for within the socket timeout, then the backoff above applies.
// Thread-safe: calls are serialised.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "gpe/redis/connection.hpp"

namespace gpe::redis {

class Cluster;

class Client {
  public:
    explicit Client(Options options);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // As Connection::pipeline, connecting first if needed. In a cluster as
    // Cluster::pipeline: routed by slot, the replies in the commands' order.
    std::vector<Reply> pipeline(const std::vector<Command>& commands);
    // As Connection::command.
    Reply command(const Command& command);

    // The cluster's primaries (discovered if not yet known); empty when
    // Options::cluster is not set.
    std::vector<Address> primaries();
    // The commands on that primary, not routed (per-node work such as SCAN);
    // without a cluster, on the one server.
    std::vector<Reply> pipeline_on(const Address& node, const std::vector<Command>& commands);

    // PING; throws Error when Redis cannot be reached.
    void ping();
    // Server time (TIME) in seconds; the local clock if Redis cannot answer.
    double server_time();

    // Increments with every new connection (in a cluster: to any node): a
    // caller that mirrors state into Redis resends everything when it changes
    // (the server may have restarted, a replica may have lost writes when it
    // was promoted).
    uint64_t connection_epoch() const;
    const Options& options() const { return options_; }

    // In a forked child: drop the parent's connections without using them.
    void reset_after_fork();

  private:
    Connection& connection();  // mutex held
    void disconnect_after(const Error& error);
    bool demoted(std::string_view error) const;
    // Throws the last failure while the backoff lasts; mutex held.
    void refuse_during_backoff() const;
    void start_backoff(const Error& error);
    // `run` on the cluster under the backoff rules; mutex held.
    std::vector<Reply> on_cluster(const std::function<std::vector<Reply>()>& run);

    using Clock = std::chrono::steady_clock;
    Options options_;
    // A pointer so that a forked child can replace a copy locked by a thread
    // that does not exist there.
    std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();
    std::unique_ptr<Connection> connection_;
    std::unique_ptr<Cluster> cluster_;  // set with Options::cluster, instead of connection_
    uint64_t epoch_ = 0;
    std::chrono::duration<double> backoff_{0.0};
    Clock::time_point next_attempt_{};
    std::string last_error_;
    Error::Kind last_kind_ = Error::Kind::kConnection;
};

}  // namespace gpe::redis
