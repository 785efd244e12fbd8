// The settings table and the one parser of its values (see settings.hpp).
#include "gpe/settings.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <string>

#include "gpe/redis/layout.hpp"
#include "gpe/redis/options.hpp"

namespace gpe::settings {
namespace {

constexpr long long kLarge = 1LL << 30;
constexpr long long kDay = 86400;

std::string one_of_files_or_redis(std::string_view raw) {
    if (raw != "files" && raw != "redis") throw std::invalid_argument("must be files or redis");
    return std::string(raw);
}

// KEYS/SCAN patterns are built from the prefix: a glob character would match
// other instances' keys.
std::string no_glob(std::string_view raw) {
    if (raw.find_first_of("*?[]\\") != std::string_view::npos)
        throw std::invalid_argument("must not contain * ? [ ] or \\");
    return std::string(raw);
}

std::string instance_or_series(std::string_view raw) {
    if (!redis::parse_layout(raw)) throw std::invalid_argument("must be instance or series");
    return std::string(raw);
}

std::string lower_trimmed(std::string_view raw) {
    const auto first = raw.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) return "";
    raw = raw.substr(first, raw.find_last_not_of(" \t\r\n") - first + 1);
    std::string out;
    for (char c : raw)
        out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    return out;
}

// The native client verifies the server or not: no "optional".
std::string required_or_none(std::string_view raw) {
    std::string value = lower_trimmed(raw);
    if (value != "required" && value != "none")
        throw std::invalid_argument("must be 'required' or 'none'");
    return value;
}

// The requests counter's status label: the class (2xx) or the exact code (200).
std::string class_or_code(std::string_view raw) {
    std::string value = lower_trimmed(raw);
    if (value != "class" && value != "code") throw std::invalid_argument("must be class or code");
    return value;
}

std::string existing_file(std::string_view raw) {
    struct stat st {};
    const std::string path(raw);
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
        throw std::invalid_argument("is not a file");
    return path;
}

// REDIS_SENTINELS: the list as redis::Options reads it, written back tidy.
std::string sentinel_list(std::string_view raw) {
    return redis::format_sentinels(redis::parse_sentinels(raw));
}

// REDIS_CLUSTER_NODES: the same, port 6379 if left out.
std::string cluster_node_list(std::string_view raw) {
    return redis::format_sentinels(redis::parse_cluster_nodes(raw));
}

using K = Kind;
constexpr std::string_view kSource = "Source", kHttp = "HTTP", kRedis = "Redis",
                           kProcess = "Process", kPython = "Python";

// clang-format off
const std::array kTable = {
    Setting{"PROMETHEUS_MULTIPROC_DIR", "--directory", K::kText, "", "multiprocess directory", kSource, 0, 0, nullptr, "DIR"},
    Setting{"", "--source", K::kText, "", "what /metrics shows: files (this instance; the default with a directory) or redis (every instance sharing the Redis: sidecar)", kSource, 0, 0, one_of_files_or_redis, "files|redis"},
    Setting{"PROMETHEUS_BIND_ADDRESS", "--bind", K::kText, "0.0.0.0", "address to serve on", kHttp, 0, 0, nullptr, "ADDRESS"},
    Setting{"PROMETHEUS_METRICS_PORT", "--port", K::kInteger, "9091", "port to serve on", kHttp, 1, 65535, nullptr, "PORT"},
    Setting{"PROMETHEUS_SSL_CERTFILE", "--certfile", K::kText, "", "serve HTTPS (with the key file)", kHttp, 0, 0, existing_file, "FILE"},
    Setting{"PROMETHEUS_SSL_KEYFILE", "--keyfile", K::kText, "", "the certificate's key", kHttp, 0, 0, existing_file, "FILE"},
    Setting{"PROMETHEUS_SSL_CLIENT_CAFILE", "--client-cafile", K::kText, "", "verify client certificates", kHttp, 0, 0, existing_file, "FILE"},
    Setting{"PROMETHEUS_SSL_CLIENT_CAPATH", "--client-capath", K::kText, "", "verify client certificates", kHttp, 0, 0, nullptr, "DIR"},
    Setting{"PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED", "--client-auth-required", K::kBool, "false", "refuse clients without a certificate", kHttp},
    Setting{"", "--no-http", K::kBool, "false", "serve nothing: only mirror to Redis (a sidecar serves the metrics)", kHttp},
    Setting{"", "--upgrade", K::kBool, "false", "share the port with the agent of the old master (Gunicorn USR2 binary upgrade)", kHttp},
    Setting{"", "--request-timeout", K::kSeconds, "10", "the whole time a client has for its request (not per byte), and for an idle kept-alive connection; then it is closed", kHttp, 0, 3600, nullptr, "SECONDS"},
    Setting{"", "--max-connections", K::kInteger, "4096", "more: the connection that has waited longest for its request is closed", kHttp, 1, 1 << 20, nullptr, "N"},
    Setting{"", "--value-only-files", K::kBool, "false", "files as prometheus_client 0.17 and older writes them (no timestamps)", kHttp},
    Setting{"", "--mirror", K::kBool, "false", "mirror the directory to Redis (as REDIS_ENABLED)", kRedis},
    Setting{"REDIS_ENABLED", "", K::kBool, "false", "Redis on: the agent mirrors the directory to Redis", kRedis},
    Setting{"PROMETHEUS_REDIS_URL", "--redis-url", K::kText, "", "redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://; wins over REDIS_HOST and the others", kRedis, 0, 0, nullptr, "URL"},
    Setting{"REDIS_HOST", "", K::kText, "localhost", "server host", kRedis},
    Setting{"REDIS_PORT", "", K::kInteger, "6379", "server port", kRedis, 1, 65535},
    Setting{"REDIS_DB", "", K::kInteger, "0", "database number", kRedis, 0, 1 << 20},
    Setting{"REDIS_UNIX_SOCKET", "", K::kText, "", "Unix socket path instead of host and port", kRedis},
    Setting{"REDIS_USERNAME", "", K::kText, "", "ACL user", kRedis},
    Setting{"REDIS_PASSWORD", "", K::kText, "", "AUTH password", kRedis},
    Setting{"", "--redis-password-stdin", K::kBool, "false", "read the Redis password from standard input", kRedis},
    Setting{"", "--redis-sentinel-password-stdin", K::kBool, "false", "read the sentinels' password from standard input (after the Redis password)", kRedis},
    Setting{"REDIS_SSL", "", K::kBool, "false", "TLS", kRedis},
    Setting{"REDIS_SSL_CA_CERTS", "", K::kText, "", "CA file to verify the server", kRedis},
    Setting{"REDIS_SSL_CA_PATH", "", K::kText, "", "CA directory to verify the server", kRedis},
    Setting{"REDIS_SSL_CERTFILE", "", K::kText, "", "client certificate", kRedis},
    Setting{"REDIS_SSL_KEYFILE", "", K::kText, "", "client certificate's key", kRedis},
    Setting{"REDIS_SSL_CERT_REQS", "", K::kText, "required", "required or none: verify the server's certificate", kRedis, 0, 0, required_or_none},
    Setting{"REDIS_SENTINELS", "", K::kText, "", "Redis Sentinel addresses, host:port,host:port (port 26379 if left out): the master is asked of them at every connect; host, port and socket are then not used", kRedis, 0, 0, sentinel_list},
    Setting{"REDIS_SENTINEL_MASTER", "", K::kText, "", "the master's name at the sentinels (needed with REDIS_SENTINELS)", kRedis},
    Setting{"REDIS_SENTINEL_PASSWORD", "", K::kText, "", "AUTH password of the sentinels (REDIS_PASSWORD is the master's)", kRedis},
    Setting{"REDIS_CLUSTER", "", K::kBool, "false", "Redis Cluster: REDIS_HOST:REDIS_PORT (or the URL's server) is a seed node, the others are discovered", kRedis},
    Setting{"REDIS_CLUSTER_NODES", "", K::kText, "", "Redis Cluster seed nodes, host:port,host:port (port 6379 if left out); implies REDIS_CLUSTER", kRedis, 0, 0, cluster_node_list},
    Setting{"REDIS_KEY_PREFIX", "--redis-prefix", K::kText, "gunicorn", "key prefix (may contain :)", kRedis, 0, 0, no_glob, "PREFIX"},
    Setting{"REDIS_INSTANCE_ID", "--redis-instance", K::kText, "", "this instance in keys (default: the hostname)", kRedis, 0, 0, nullptr, "ID"},
    Setting{"REDIS_LAYOUT", "--redis-layout", K::kText, "instance", "what a mirror writes: instance (one hash per instance, a fleet archive) or series (the 0.2.x keys, one per series and process)", kRedis, 0, 0, instance_or_series, "LAYOUT"},
    Setting{"REDIS_TTL_SECONDS", "--redis-ttl", K::kInteger, "300", "expiry of an instance's keys, 0 = never", kRedis, 0, kLarge, nullptr, "SECONDS"},
    Setting{"REDIS_TTL_DISABLED", "", K::kBool, "false", "keys never expire (as a TTL of 0)", kRedis},
    Setting{"REDIS_FLUSH_INTERVAL", "--flush-interval", K::kSeconds, "1.0", "seconds between mirror passes", kRedis, 0, kDay, nullptr, "SECONDS"},
    Setting{"REDIS_SOCKET_TIMEOUT", "", K::kSeconds, "5", "seconds for a whole exchange with Redis", kRedis, 0, kDay},
    Setting{"REDIS_CONNECT_TIMEOUT", "", K::kSeconds, "5", "seconds to connect to Redis", kRedis, 0, kDay},
    Setting{"REDIS_MAX_REPLY_BYTES", "", K::kInteger, "33554432", "largest reply read from Redis (1 MiB to 4 GiB)", kRedis, static_cast<long long>(redis::kMinMaxReplyBytes), static_cast<long long>(redis::kMaxMaxReplyBytes)},
    Setting{"", "--parent-pid", K::kInteger, "0", "exit when this process is gone (0: no such process)", kProcess, 0, kLarge, nullptr, "PID"},
    Setting{"", "--help", K::kBool, "false", "this text", kProcess},
    // Read by the Python package only.
    Setting{"CLEANUP_DB_FILES", "", K::kBool, "true", "remove an earlier run's files at start", kPython},
    Setting{"GUNICORN_PROMETHEUS_CONFIG", "", K::kText, "", "a YAML file with 0.2.x's schema", kPython},
    Setting{"GUNICORN_PROMETHEUS_SAMPLE_INTERVAL", "", K::kSeconds, "5", "seconds between refreshes of the worker resource gauges", kPython, 0, kDay},
    Setting{"GUNICORN_PROMETHEUS_STATUS_LABEL", "", K::kText, "class", "status label of gunicorn_worker_requests_total: class (2xx) or code (200)", kPython, 0, 0, class_or_code, "class|code"},
    Setting{"GUNICORN_WORKERS", "", K::kInteger, "1", "0.2.x's YAML: Gunicorn workers", kPython, 1, 1 << 20},
    Setting{"GUNICORN_TIMEOUT", "", K::kInteger, "30", "0.2.x's YAML: Gunicorn timeout", kPython, 0, kLarge},
    Setting{"GUNICORN_KEEPALIVE", "", K::kInteger, "2", "0.2.x's YAML: Gunicorn keepalive", kPython, 0, kLarge},
    Setting{"SIDECAR_MODE", "", K::kBool, "false", "0.2.x: no Gunicorn settings from the YAML file", kPython},
};
// clang-format on

std::string quoted(std::string_view name, std::string_view raw) {
    return std::string(name) + "='" + std::string(raw) + "' ";
}

bool parse_bool(std::string_view name, std::string_view raw) {
    const std::string v = lower_trimmed(raw);
    if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
    if (v == "0" || v == "false" || v == "no" || v == "off" || v.empty()) return false;
    throw SettingError(quoted(name, raw) +
                       "is not a boolean (use true/false, 1/0, yes/no, on/off)");
}

long long parse_integer(const Setting& s, std::string_view name, std::string_view raw) {
    std::string_view v = raw;
    v.remove_prefix(std::min(v.find_first_not_of(" \t\r\n"), v.size()));
    v = v.substr(0, v.find_last_not_of(" \t\r\n") + 1);
    if (v.starts_with('+')) v.remove_prefix(1);
    long long value = 0;
    const auto [end, error] = std::from_chars(v.data(), v.data() + v.size(), value);
    if (v.empty() || error != std::errc{} || end != v.data() + v.size() || value < s.low ||
        value > s.high) {
        throw SettingError(quoted(name, raw) + "must be a whole number from " +
                           std::to_string(s.low) + " to " + std::to_string(s.high));
    }
    return value;
}

double parse_seconds(const Setting& s, std::string_view name, std::string_view raw) {
    const std::string v = lower_trimmed(raw);
    double value = 0;
    const auto [end, error] = std::from_chars(v.data(), v.data() + v.size(), value);
    if (v.empty() || error != std::errc{} || end != v.data() + v.size() || !(value > 0) ||
        value > static_cast<double>(s.high)) {
        throw SettingError(quoted(name, raw) + "must be a number of seconds above 0, at most " +
                           std::to_string(s.high));
    }
    return value;
}

bool blank(std::string_view raw) { return raw.find_first_not_of(" \t\r\n") == raw.npos; }

}  // namespace

std::span<const Setting> table() { return kTable; }

const Setting* find(std::string_view key) {
    for (const Setting& s : kTable) {
        if (!key.empty() && (s.variable == key || s.flag == key)) return &s;
    }
    return nullptr;
}

Value parse(const Setting& s, std::optional<std::string_view> raw, std::string_view name) {
    if (s.kind == Kind::kBool) return parse_bool(name, raw.value_or(s.fallback));
    // A blank number or text is the default (a variable set to nothing).
    const bool given = raw && (s.kind == Kind::kText ? !raw->empty() : !blank(*raw));
    const std::string_view text = given ? *raw : s.fallback;
    if (s.kind == Kind::kInteger) return parse_integer(s, name, text);
    if (s.kind == Kind::kSeconds) return parse_seconds(s, name, text);
    if (s.check == nullptr || text.empty()) return std::string(text);
    try {
        return s.check(text);
    } catch (const std::invalid_argument& e) {
        throw SettingError(quoted(name, text) + e.what());
    }
}

namespace {

constexpr std::size_t kIndent = 27, kWidth = 79;

// `text` folded to kWidth, its first line after `left` (padded to kIndent).
std::string folded(std::string left, std::string_view text) {
    std::string out;
    std::string line = left.size() < kIndent ? left + std::string(kIndent - left.size(), ' ')
                                             : left + "\n" + std::string(kIndent, ' ');
    std::size_t at = 0;
    while (at < text.size()) {
        std::size_t end = text.find(' ', at);
        if (end == std::string_view::npos) end = text.size();
        const std::string_view word = text.substr(at, end - at);
        const std::size_t width = line.size() - line.rfind('\n') - 1;
        if (width > kIndent && width + 1 + word.size() > kWidth) {
            out += line + "\n";
            line = std::string(kIndent, ' ');
        } else if (width > kIndent) {
            line += ' ';
        }
        line += word;
        at = end + 1;
    }
    return out + line + "\n";
}

std::string described(const Setting& s) {
    std::string text(s.help);
    if (s.kind != Kind::kBool && !s.fallback.empty())
        text += " (default " + std::string(s.fallback) + ")";
    if (!s.flag.empty() && !s.variable.empty()) text += " [" + std::string(s.variable) + "]";
    return text;
}

}  // namespace

std::string usage() {
    std::string out = R"(usage: gunicorn-prometheus-agent [options]

Serves /metrics (text format 0.0.4, or OpenMetrics 1.0 when the Accept header
asks for it; gzip when allowed) and /health, computed in C++ from a Gunicorn
multiprocess directory or from Redis. Every option falls back to the
environment variable named beside it in brackets.

)";
    std::string_view section;
    std::string environment_only;
    for (const Setting& s : kTable) {
        if (s.section == kPython) continue;
        if (s.flag.empty()) {
            environment_only += folded("  " + std::string(s.variable), described(s));
            continue;
        }
        if (s.section != section) out += std::string(s.section) + ":\n";
        section = s.section;
        std::string left = "  " + std::string(s.flag);
        if (!s.metavar.empty()) left += " " + std::string(s.metavar);
        out += folded(left, described(s));
    }
    return out + "Environment only:\n" + environment_only;
}

}  // namespace gpe::settings
