// Resolves the agent's flags and environment into its Config (options.hpp).
#include "options.hpp"

#include <chrono>
#include <utility>

#include "gpe/redis/options.hpp"

namespace gpe::agent {
namespace {

using settings::SettingError;

// Each value from its flag, else its variable, parsed by the table.
class Sources {
  public:
    Sources(Flags flags, const Environment& env) : flags_(std::move(flags)), env_(env) {}

    settings::Value value(std::string_view key) const {
        const settings::Setting& s = *settings::find(key);
        if (const auto it = flags_.find(std::string(s.flag)); !s.flag.empty() && it != flags_.end())
            return settings::parse(s, it->second, s.flag);
        if (const auto it = env_.find(std::string(s.variable));
            !s.variable.empty() && it != env_.end())
            return settings::parse(s, it->second, s.variable);
        return settings::parse(s, std::nullopt, s.variable.empty() ? s.flag : s.variable);
    }
    std::string text(std::string_view key) const { return std::get<std::string>(value(key)); }
    bool on(std::string_view key) const { return std::get<bool>(value(key)); }
    long long number(std::string_view key) const { return std::get<long long>(value(key)); }
    double seconds(std::string_view key) const { return std::get<double>(value(key)); }

  private:
    Flags flags_;
    const Environment& env_;
};

void read_http(const Sources& in, HttpOptions& http) {
    http.bind = in.text("--bind");
    http.port = static_cast<int>(in.number("--port"));
    http.certfile = in.text("--certfile");
    http.keyfile = in.text("--keyfile");
    http.client_cafile = in.text("--client-cafile");
    http.client_capath = in.text("--client-capath");
    http.client_auth_required = in.on("--client-auth-required");
    http.upgrade = in.on("--upgrade");
    http.request_timeout =
        std::chrono::milliseconds(static_cast<long>(in.seconds("--request-timeout") * 1000));
    http.max_connections = static_cast<std::size_t>(in.number("--max-connections"));
}

redis::Options read_redis_variables(const Sources& in) {
    redis::Options o;
    o.host = in.text("REDIS_HOST");
    o.port = static_cast<int>(in.number("REDIS_PORT"));
    o.db = static_cast<int>(in.number("REDIS_DB"));
    o.username = in.text("REDIS_USERNAME");
    o.password = in.text("REDIS_PASSWORD");
    o.unix_socket = in.text("REDIS_UNIX_SOCKET");
    o.tls.enabled = in.on("REDIS_SSL");
    o.tls.ca_file = in.text("REDIS_SSL_CA_CERTS");
    o.tls.ca_path = in.text("REDIS_SSL_CA_PATH");
    o.tls.cert_file = in.text("REDIS_SSL_CERTFILE");
    o.tls.key_file = in.text("REDIS_SSL_KEYFILE");
    o.tls.verify = in.text("REDIS_SSL_CERT_REQS") == "required";
    // The table checked the list's form (settings.cpp).
    if (const std::string list = in.text("REDIS_SENTINELS"); !list.empty())
        o.sentinel.sentinels = redis::parse_sentinels(list);
    o.sentinel.master = in.text("REDIS_SENTINEL_MASTER");
    return o;
}

redis::Options read_redis(const Sources& in) {
    redis::Options o;
    if (const std::string url = in.text("--redis-url"); url.empty()) {
        o = read_redis_variables(in);
    } else {
        try {
            o = redis::parse_url(url);
        } catch (const std::invalid_argument& e) {
            throw SettingError(std::string("PROMETHEUS_REDIS_URL: ") + e.what());
        }
    }
    if (o.sentinel.password.empty()) o.sentinel.password = in.text("REDIS_SENTINEL_PASSWORD");
    try {
        redis::check_sentinel(o.sentinel);
    } catch (const std::invalid_argument& e) {
        throw SettingError(std::string("REDIS_SENTINELS / REDIS_SENTINEL_MASTER: ") + e.what());
    }
    try {
        // With a URL its server is the seed (REDIS_CLUSTER); the node list is
        // one of the variables the URL wins over.
        const std::string nodes =
            in.text("--redis-url").empty() ? in.text("REDIS_CLUSTER_NODES") : "";
        redis::apply_cluster_settings(o, in.on("REDIS_CLUSTER"), nodes);
    } catch (const std::invalid_argument& e) {
        throw SettingError(std::string("REDIS_CLUSTER / REDIS_CLUSTER_NODES: ") + e.what());
    }
    o.socket_timeout = in.seconds("REDIS_SOCKET_TIMEOUT");
    o.connect_timeout = in.seconds("REDIS_CONNECT_TIMEOUT");
    o.max_reply_bytes = static_cast<std::size_t>(in.number("REDIS_MAX_REPLY_BYTES"));
    return o;
}

void check_roles(const Config& c) {
    if (!c.serve && !c.mirror)
        throw SettingError("--no-http needs --mirror: there would be nothing to do");
    if (c.source == "files" && c.directory.empty())
        throw SettingError("--source files needs --directory or PROMETHEUS_MULTIPROC_DIR");
    if (c.mirror && c.directory.empty())
        throw SettingError("--mirror needs --directory or PROMETHEUS_MULTIPROC_DIR");
}

}  // namespace

Flags split_flags(const std::vector<std::string>& args) {
    Flags flags;
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string arg = args[i] == "-h" ? "--help" : args[i];
        if (!arg.starts_with("--"))
            throw SettingError("unexpected argument '" + arg + "' (see --help)");
        std::optional<std::string> value;
        if (const std::size_t eq = arg.find('='); eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg.resize(eq);
        }
        const settings::Setting* s = settings::find(arg);
        if (s == nullptr || s->flag != arg)
            throw SettingError("unknown option " + arg + " (see --help)");
        if (!value && s->kind == settings::Kind::kBool) value = "true";  // a switch
        if (!value && i + 1 >= args.size())
            throw SettingError("option " + arg + " needs a value (see --help)");
        flags[arg] = value ? *value : args[++i];
    }
    return flags;
}

Config resolve(const std::vector<std::string>& args, const Environment& env) {
    const Sources in(split_flags(args), env);
    Config c;
    if ((c.help = in.on("--help"))) return c;
    c.directory = in.text("--directory");
    c.source = in.text("--source");
    if (c.source.empty()) c.source = c.directory.empty() ? "redis" : "files";
    read_http(in, c.http);
    c.value_only_files = in.on("--value-only-files");
    c.serve = !in.on("--no-http");
    const bool enabled = in.on("REDIS_ENABLED");
    c.mirror = in.on("--mirror") || (enabled && c.source == "files");
    check_roles(c);
    if (c.mirror || enabled || c.source == "redis") c.redis = read_redis(in);
    c.password_stdin = in.on("--redis-password-stdin");
    c.sentinel_password_stdin = in.on("--redis-sentinel-password-stdin");
    c.prefix = in.text("--redis-prefix");
    c.instance = in.text("--redis-instance");
    c.layout = *redis::parse_layout(in.text("--redis-layout"));
    if (c.mirror && c.layout == redis::Layout::series && c.redis && c.redis->cluster.enabled()) {
        // Its transactions write keys of many slots, and it is found by SCAN.
        throw SettingError(
            "REDIS_LAYOUT=series cannot be mirrored to a Redis Cluster (one pass writes keys of "
            "many hash slots in one transaction): use REDIS_LAYOUT=instance");
    }
    c.ttl = in.on("REDIS_TTL_DISABLED") ? 0 : static_cast<int>(in.number("--redis-ttl"));
    c.interval = in.seconds("--flush-interval");
    c.parent = static_cast<pid_t>(in.number("--parent-pid"));
    return c;
}

}  // namespace gpe::agent
