#include "gpe/redis/options.hpp"

#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <string>
#include <vector>

namespace gpe::redis {

namespace {

std::string percent_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '%' && i + 2 < text.size()) {
            int value = 0;
            auto [ptr, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
            if (ec == std::errc() && ptr == text.data() + i + 3) {
                out.push_back(static_cast<char>(value));
                i += 2;
                continue;
            }
        }
        out.push_back(text[i]);
    }
    return out;
}

// What messages may say of the URL being parsed: where the text is ("in
// Redis URL redis://...", "in REDIS_SENTINELS"), and whether they may quote
// parts of it (`echo`). Not in a URL with
// userinfo: a password with an unescaped '?' is split wrongly, and part of it
// would be quoted as the port or database.
struct UrlContext {
    std::string where;
    bool echo;
};

int parse_int(std::string_view text, std::string_view what, const UrlContext& url) {
    int value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr != text.data() + text.size() || value < 0) {
        throw std::invalid_argument("invalid " + std::string(what) +
                                    (url.echo ? " '" + std::string(text) + "'" : std::string()) +
                                    " " + url.where);
    }
    return value;
}

constexpr std::string_view kSentinelSuffix = "+sentinel";
constexpr std::string_view kClusterSuffix = "+cluster";

// "redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel",
// "redis+cluster" or "rediss+cluster".
std::string_view parse_scheme(std::string_view url) {
    const size_t scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos) {
        throw std::invalid_argument(
            "Redis URL must start with redis://, rediss://, unix://, redis+sentinel:// or "
            "redis+cluster:// (got no scheme)");
    }
    const std::string_view scheme = url.substr(0, scheme_end);
    constexpr std::string_view kKnown[] = {"redis",          "rediss",          "unix",
                                           "redis+sentinel", "rediss+sentinel", "redis+cluster",
                                           "rediss+cluster"};
    if (std::find(std::begin(kKnown), std::end(kKnown), scheme) == std::end(kKnown)) {
        throw std::invalid_argument(
            "unsupported Redis URL scheme '" + std::string(scheme) +
            "' (use redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://)");
    }
    return scheme;
}

// Takes "?query" off the end of `rest` and returns it (without the '?').
std::string_view split_query(std::string_view& rest) {
    const size_t q = rest.find('?');
    if (q == std::string_view::npos) return {};
    const std::string_view query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    return query;
}

// Takes "user:password@" (user may be empty) off the front of `rest`.
void parse_credentials(std::string_view& rest, Options& options) {
    const size_t at = rest.rfind('@');
    if (at == std::string_view::npos) return;
    const std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (const size_t colon = userinfo.find(':'); colon != std::string_view::npos) {
        options.username = percent_decode(userinfo.substr(0, colon));
        options.password = percent_decode(userinfo.substr(colon + 1));
    } else {
        options.username = percent_decode(userinfo);  // as redis-py reads redis://user@host
    }
}

void parse_socket_path(std::string_view rest, Options& options) {
    if (rest.empty() || rest.front() != '/') {
        throw std::invalid_argument("unix:// Redis URL needs an absolute socket path");
    }
    options.unix_socket = percent_decode(rest);
}

// host, host:port, [v6], [v6]:port; either may be empty (localhost, 6379).
void parse_host_port(std::string_view hostport, Options& options, const UrlContext& url) {
    if (!hostport.empty() && hostport.front() == '[') {  // [::1]:6379
        const size_t close = hostport.find(']');
        if (close == std::string_view::npos) {
            throw std::invalid_argument("unterminated IPv6 address " + url.where);
        }
        options.host = std::string(hostport.substr(1, close - 1));
        hostport = hostport.substr(close + 1);
        if (!hostport.empty() && hostport.front() == ':') {
            options.port = parse_int(hostport.substr(1), "port", url);
        }
    } else if (const size_t colon = hostport.rfind(':'); colon != std::string_view::npos) {
        options.host = std::string(hostport.substr(0, colon));
        options.port = parse_int(hostport.substr(colon + 1), "port", url);
    } else if (!hostport.empty()) {
        options.host = std::string(hostport);
    }
    if (options.host.empty()) options.host = "localhost";
    if (options.port == 0 || options.port > 65535) {
        throw std::invalid_argument("invalid port " + url.where);
    }
}

// host[:port][/db]
void parse_server(std::string_view rest, Options& options, const UrlContext& url) {
    std::string_view hostport = rest;
    if (const size_t slash = rest.find('/'); slash != std::string_view::npos) {
        hostport = rest.substr(0, slash);
        const std::string_view db = rest.substr(slash + 1);
        if (!db.empty()) options.db = parse_int(db, "database", url);
    }
    parse_host_port(hostport, options, url);
}

// "host[:port],host[:port]...": `what` names an item in messages, ports
// default to `default_port`.
std::vector<Address> parse_address_list(std::string_view list, const UrlContext& where,
                                        std::string_view what, int default_port) {
    std::vector<Address> out;
    while (true) {
        const size_t comma = list.find(',');
        const std::string_view item = list.substr(0, comma);
        if (item.empty())
            throw std::invalid_argument("empty " + std::string(what) + " address " + where.where);
        Options address;
        address.port = default_port;
        parse_host_port(item, address, where);
        out.push_back(Address{address.host, address.port});
        if (comma == std::string_view::npos) return out;
        list.remove_prefix(comma + 1);
    }
}

// host[:port][,host[:port]...]/master[/db]
void parse_sentinel_target(std::string_view rest, Options& options, const UrlContext& url) {
    const size_t slash = rest.find('/');
    options.sentinel.sentinels =
        parse_address_list(rest.substr(0, slash), url, "sentinel", kDefaultSentinelPort);
    std::string_view path =
        slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    const size_t db = path.find('/');
    options.sentinel.master = percent_decode(path.substr(0, db));
    if (options.sentinel.master.empty()) {
        throw std::invalid_argument("no master name " + url.where +
                                    " (redis+sentinel://host:port[,host:port]/master_name[/db])");
    }
    if (db != std::string_view::npos && db + 1 < path.size()) {
        options.db = parse_int(path.substr(db + 1), "database", url);
    }
}

// host[:port][,host[:port]...][/0]
void parse_cluster_target(std::string_view rest, Options& options, const UrlContext& url) {
    const size_t slash = rest.find('/');
    options.cluster.nodes =
        parse_address_list(rest.substr(0, slash), url, "cluster node", kDefaultPort);
    if (slash != std::string_view::npos && slash + 1 < rest.size()) {
        options.db = parse_int(rest.substr(slash + 1), "database", url);
    }
}

void apply_query_parameter(std::string_view name, const std::string& value, Options& options,
                           const UrlContext& url) {
    if (name == "db") {
        options.db = parse_int(value, "database", url);
    } else if (name == "password") {
        options.password = value;
    } else if (name == "username") {
        options.username = value;
    } else if (name == "ssl_ca_certs") {
        options.tls.ca_file = value;
    } else if (name == "ssl_ca_path") {
        options.tls.ca_path = value;
    } else if (name == "ssl_certfile") {
        options.tls.cert_file = value;
    } else if (name == "ssl_keyfile") {
        options.tls.key_file = value;
    } else if (name == "sentinel_password") {
        options.sentinel.password = value;
    } else if (name == "ssl_cert_reqs") {
        options.tls.verify = !(value == "none" || value == "CERT_NONE");
    }
    // Other redis-py options (socket_timeout, ...) do not change the target.
}

void parse_query(std::string_view query, Options& options, const UrlContext& url) {
    while (!query.empty()) {
        const size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        const size_t eq = pair.find('=');
        const std::string value =
            eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1));
        apply_query_parameter(pair.substr(0, eq), value, options, url);
    }
}

}  // namespace

Options parse_url(std::string_view url) {
    Options options;
    const std::string_view scheme = parse_scheme(url);
    const UrlContext context{"in Redis URL " + std::string(scheme) + "://...",
                             url.find('@') == std::string_view::npos};
    options.tls.enabled = scheme.starts_with("rediss");
    std::string_view rest = url.substr(scheme.size() + 3);
    const std::string_view query = split_query(rest);
    parse_credentials(rest, options);
    if (scheme == "unix") {
        parse_socket_path(rest, options);
    } else if (scheme.ends_with(kSentinelSuffix)) {
        parse_sentinel_target(rest, options, context);
    } else if (scheme.ends_with(kClusterSuffix)) {
        parse_cluster_target(rest, options, context);
    } else {
        parse_server(rest, options, context);
    }
    parse_query(query, options, context);
    if (options.cluster.enabled()) {
        try {
            check_cluster(options);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(e.what() + (" " + context.where));
        }
    }
    return options;
}

std::vector<Address> parse_sentinels(std::string_view list) {
    return parse_address_list(list, UrlContext{"in the sentinel list", true}, "sentinel",
                              kDefaultSentinelPort);
}

std::vector<Address> parse_cluster_nodes(std::string_view list) {
    return parse_address_list(list, UrlContext{"in the cluster node list", true}, "cluster node",
                              kDefaultPort);
}

std::string format_sentinels(const std::vector<Address>& sentinels) {
    std::string out;
    for (const Address& a : sentinels) {
        if (!out.empty()) out += ',';
        const bool v6 = a.host.find(':') != std::string::npos;
        out += (v6 ? "[" + a.host + "]" : a.host) + ":" + std::to_string(a.port);
    }
    return out;
}

void check_sentinel(const SentinelOptions& sentinel) {
    if (sentinel.enabled() && sentinel.master.empty())
        throw std::invalid_argument("sentinels given without the master's name");
    if (!sentinel.enabled() && !sentinel.master.empty())
        throw std::invalid_argument("a sentinel master name given without sentinels");
}

void apply_cluster_settings(Options& options, bool cluster, std::string_view nodes) {
    if (!nodes.empty()) {
        options.cluster.nodes = parse_cluster_nodes(nodes);
    } else if (cluster && !options.cluster.enabled()) {
        if (!options.unix_socket.empty())
            throw std::invalid_argument(
                "Redis Cluster is reached over TCP: a Unix socket cannot be a cluster node");
        options.cluster.nodes = {Address{options.host, options.port}};
    }
    check_cluster(options);
}

void check_cluster(const Options& options) {
    if (!options.cluster.enabled()) return;
    if (options.sentinel.enabled())
        throw std::invalid_argument(
            "Redis Cluster and Redis Sentinel cannot be used together (a cluster fails over by "
            "itself): set cluster nodes or sentinels, not both");
    if (!options.unix_socket.empty())
        throw std::invalid_argument(
            "Redis Cluster is reached over TCP: a Unix socket cannot be a cluster node");
    if (options.db != 0)
        throw std::invalid_argument("Redis Cluster has only database 0 (database " +
                                    std::to_string(options.db) + " was asked for)");
}

std::string format_seconds(double seconds) {
    std::string text = std::to_string(seconds);
    text.erase(text.find_last_not_of('0') + 1);
    if (text.ends_with('.')) text.pop_back();
    return text;
}

std::string describe(const Options& options) {
    std::string out =
        options.cluster.enabled()    ? "cluster of " + format_sentinels(options.cluster.nodes)
        : options.sentinel.enabled() ? "master '" + options.sentinel.master + "' of sentinels " +
                                           format_sentinels(options.sentinel.sentinels)
        : options.unix_socket.empty() ? options.host + ":" + std::to_string(options.port)
                                      : "unix:" + options.unix_socket;
    out += "/" + std::to_string(options.db);
    if (options.tls.enabled) out += " (TLS)";
    if (!options.username.empty()) out += " as " + options.username;
    return out;
}

}  // namespace gpe::redis
