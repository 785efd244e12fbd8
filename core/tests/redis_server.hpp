// A real redis-server for one test, on a free loopback port, without
// persistence; stopped (SIGTERM) when the object goes away. RedisCluster:
// 3 primaries and 3 replicas of them made a cluster by redis-cli.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gpe/redis/connection.hpp"

namespace gpe::testing {

inline int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

// A free port whose cluster bus port (+10000) is free too.
inline int free_cluster_port() {
    for (;;) {
        const int port = free_port();
        if (port > 55535) continue;
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(port + 10000));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        ::close(fd);
        if (free) return port;
    }
}

inline bool redis_server_installed() { return ::access("/usr/bin/redis-server", X_OK) == 0; }

class RedisServer {
  public:
    explicit RedisServer(std::vector<std::string> extra = {})
        : RedisServer(free_port(), std::move(extra)) {}
    RedisServer(int port, std::vector<std::string> extra) : port_(port), extra_(std::move(extra)) {
        start();
    }
    ~RedisServer() { stop(); }
    RedisServer(const RedisServer&) = delete;
    RedisServer& operator=(const RedisServer&) = delete;

    int port() const { return port_; }

    void start() {
        std::vector<std::string> args = {
            "redis-server", "--bind", "127.0.0.1",    "--port", std::to_string(port_),
            "--save",       "",       "--appendonly", "no"};
        args.insert(args.end(), extra_.begin(), extra_.end());
        pid_ = ::fork();
        if (pid_ == 0) {
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv("/usr/bin/redis-server", argv.data());
            ::_exit(127);
        }
        for (int i = 0; i < 500; ++i) {  // up to 5 s
            const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in addr{};
            addr.sin_family = AF_INET;
            addr.sin_port = htons(static_cast<uint16_t>(port_));
            addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
            ::close(fd);
            // Ours, not another process that took the port first: ours is alive.
            if (::waitpid(pid_, nullptr, WNOHANG) != 0) {
                pid_ = -1;
                throw std::runtime_error("redis-server could not start on port " +
                                         std::to_string(port_));
            }
            if (up) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }

    void stop() { signal(SIGTERM); }
    // As a crash: nothing more is sent to replicas or other nodes.
    void kill() { signal(SIGKILL); }

  private:
    void signal(int number) {
        if (pid_ > 0) {
            ::kill(pid_, number);
            ::waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
    }

    int port_;
    std::vector<std::string> extra_;
    pid_t pid_ = -1;
};

// Runs a program (its output discarded); its exit status, or -1 when it
// was killed after `timeout_seconds` (a cluster create that waits for a
// node that is gone never ends by itself).
inline int run_program(std::vector<std::string> args, int timeout_seconds = 60) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::freopen("/dev/null", "w", stdout);
        std::freopen("/dev/null", "w", stderr);
        ::execvp(argv[0], argv.data());
        ::_exit(127);
    }
    int status = 0;
    for (int waited = 0; ::waitpid(pid, &status, WNOHANG) == 0; ++waited) {
        if (waited == timeout_seconds * 100) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A Redis Cluster of `primaries` primaries with one replica each, on free
// loopback ports (cluster-node-timeout 1000 ms: a failover takes seconds),
// made by `redis-cli --cluster create`; ready when every node says
// cluster_state:ok and every replica is in sync.
class RedisCluster {
  public:
    // A port taken by another process between our pick and the server's
    // bind fails a start: then the cluster is made again on new ports.
    explicit RedisCluster(int primaries = 3) {
        for (int attempt = 1;; ++attempt) {
            try {
                create(primaries);
                return;
            } catch (const std::runtime_error&) {
                if (attempt == 3) throw;
            }
        }
    }
    ~RedisCluster() { clean_up(); }
    RedisCluster(const RedisCluster&) = delete;
    RedisCluster& operator=(const RedisCluster&) = delete;

  private:
    void create(int primaries) {
        char pattern[] = "/tmp/gpe-cluster-XXXXXX";
        dir_ = ::mkdtemp(pattern);
        try {
            std::vector<std::string> create = {"redis-cli", "--cluster", "create"};
            for (int i = 0; i < primaries * 2; ++i) {
                const std::string node = dir_ + "/node-" + std::to_string(i);
                nodes_.push_back(std::make_unique<RedisServer>(
                    free_cluster_port(),
                    std::vector<std::string>{"--cluster-enabled", "yes", "--cluster-config-file",
                                             node + ".conf", "--cluster-node-timeout", "1000",
                                             "--repl-diskless-sync-delay", "0", "--logfile",
                                             node + ".log", "--dir", dir_}));
                create.push_back("127.0.0.1:" + std::to_string(nodes_.back()->port()));
            }
            create.insert(create.end(), {"--cluster-replicas", "1", "--cluster-yes"});
            if (run_program(create) != 0)
                throw std::runtime_error("redis-cli --cluster create failed");
            wait_ready();
        } catch (...) {
            clean_up();  // no destructor runs for a constructor that throws
            throw;
        }
    }

  public:
    std::vector<int> ports() const {
        std::vector<int> out;
        for (const auto& n : nodes_) out.push_back(n->port());
        return out;
    }

    // One command on one node, as it is (redirections are error replies).
    static redis::Reply command(int port, const redis::Command& command) {
        redis::Options o;
        o.host = "127.0.0.1";
        o.port = port;
        o.connect_timeout = 2;
        o.socket_timeout = 5;
        redis::Connection connection(o);
        return connection.pipeline({command}).front();
    }

    // The port of the primary serving `slot`, as CLUSTER SLOTS of a live node says.
    int owner(int slot) const {
        for (int port : live_ports()) {
            const redis::Reply slots = command(port, {"CLUSTER", "SLOTS"});
            for (const redis::Reply& range : slots.elements) {
                if (range.elements[0].integer <= slot && slot <= range.elements[1].integer)
                    return static_cast<int>(range.elements[2].elements[1].integer);
            }
        }
        return 0;
    }

    std::string node_id(int port) const { return command(port, {"CLUSTER", "MYID"}).str; }

    void kill(int port) {
        for (auto& n : nodes_)
            if (n->port() == port) n->kill();
        killed_.push_back(port);
    }

    // Until every live node has cluster_state:ok and no slot is served by a
    // killed node: the replica of a killed primary was promoted.
    void wait_ready(double seconds = 30) const {
        const auto until = std::chrono::steady_clock::now() +
                           std::chrono::milliseconds(static_cast<int>(seconds * 1000));
        while (!ready()) {
            if (std::chrono::steady_clock::now() > until)
                throw std::runtime_error("the Redis Cluster did not become ready");
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }

  private:
    void clean_up() {
        nodes_.clear();
        run_program({"rm", "-rf", dir_});
    }

    std::vector<int> live_ports() const {
        std::vector<int> out;
        for (int port : ports())
            if (std::find(killed_.begin(), killed_.end(), port) == killed_.end())
                out.push_back(port);
        return out;
    }

    bool ready() const {
        try {
            for (int port : live_ports()) {
                if (command(port, {"CLUSTER", "INFO"}).str.find("cluster_state:ok") ==
                    std::string::npos)
                    return false;
                const std::string replication = command(port, {"INFO", "replication"}).str;
                if (replication.find("role:slave") != std::string::npos &&
                    replication.find("master_link_status:up") == std::string::npos)
                    return false;
                const redis::Reply slots = command(port, {"CLUSTER", "SLOTS"});
                for (const redis::Reply& range : slots.elements) {
                    const int owner = static_cast<int>(range.elements[2].elements[1].integer);
                    if (std::find(killed_.begin(), killed_.end(), owner) != killed_.end())
                        return false;
                }
            }
            return true;
        } catch (const redis::Error&) {
            return false;
        }
    }

    std::string dir_;
    std::vector<std::unique_ptr<RedisServer>> nodes_;
    std::vector<int> killed_;
};

}  // namespace gpe::testing
