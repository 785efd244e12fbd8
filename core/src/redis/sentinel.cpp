#include "gpe/redis/sentinel.hpp"

#include <charconv>
#include <optional>
#include <string>

namespace gpe::redis {

namespace {

// How a sentinel is reached: the client's timeouts and TLS, its own password.
Options sentinel_options(const Options& options, const Address& sentinel) {
    Options out;
    out.host = sentinel.host;
    out.port = sentinel.port;
    out.password = options.sentinel.password;
    out.tls = options.tls;
    out.connect_timeout = options.connect_timeout;
    out.socket_timeout = options.socket_timeout;
    out.max_reply_bytes = options.max_reply_bytes;
    return out;
}

// The address one sentinel gives for `master`; nullopt when it does not know it.
std::optional<Address> ask(const Options& sentinel, const std::string& master) {
    Connection connection(sentinel);
    const Reply reply = connection.command({"SENTINEL", "get-master-addr-by-name", master});
    if (reply.type == Reply::Type::kNil) return std::nullopt;
    int port = 0;
    if (reply.type == Reply::Type::kArray && reply.elements.size() == 2) {
        const std::string& text = reply.elements[1].str;
        std::from_chars(text.data(), text.data() + text.size(), port);
    }
    if (port <= 0 || port > 65535) {
        throw Error(Error::Kind::kProtocol,
                    "unexpected answer to SENTINEL get-master-addr-by-name");
    }
    return Address{reply.elements[0].str, port};
}

}  // namespace

Address find_master(const Options& options) {
    const SentinelOptions& s = options.sentinel;
    std::string unreachable;
    std::string unaware;
    bool all_refused_password = true;
    for (const Address& sentinel : s.sentinels) {
        const std::string name = format_sentinels({sentinel});
        try {
            if (auto master = ask(sentinel_options(options, sentinel), s.master)) return *master;
            unaware += (unaware.empty() ? "" : ", ") + name;
            all_refused_password = false;
        } catch (const Error& e) {
            unreachable += (unreachable.empty() ? "" : "; ") + name + ": " + e.what();
            all_refused_password = all_refused_password && e.kind() == Error::Kind::kAuthentication;
        }
    }
    if (!unaware.empty()) {
        throw Error(Error::Kind::kConnection,
                    "master '" + s.master + "' is unknown to Redis Sentinel " + unaware +
                        (unreachable.empty() ? "" : " (not reachable: " + unreachable + ")"));
    }
    throw Error(all_refused_password ? Error::Kind::kAuthentication : Error::Kind::kConnection,
                "no Redis Sentinel reachable for master '" + s.master + "': " + unreachable);
}

std::unique_ptr<Connection> connect_to_master(const Options& options) {
    const Address at = find_master(options);
    Options master = options;
    master.host = at.host;
    master.port = at.port;
    master.unix_socket.clear();
    master.sentinel = {};
    auto connection = std::make_unique<Connection>(master);
    // A replica just promoted, or a master just demoted: the sentinels' view
    // may lag the server's own.
    const Reply role = connection->command({"ROLE"});
    const std::string said =
        role.type == Reply::Type::kArray && !role.elements.empty() ? role.elements[0].str : "?";
    if (said != "master") {
        throw Error(Error::Kind::kConnection, "Redis at " + describe(master) +
                                                  ", which the sentinels name master '" +
                                                  options.sentinel.master + "', is a " + said);
    }
    return connection;
}

}  // namespace gpe::redis
