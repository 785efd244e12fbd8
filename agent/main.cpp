// gunicorn-prometheus-agent: serves the combined metrics of a Gunicorn
// instance (its multiprocess directory) or of every instance sharing a Redis
// (sidecar), and mirrors the directory to Redis. Started by the Gunicorn
// master (one per instance, restarted if it dies, gone with the master) or
// run on its own. Configured by flags, or the exporter's environment variables.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gpe/mmap_file.hpp"
#include "gpe/multiprocess.hpp"
#include "gpe/redis/client.hpp"
#include "gpe/redis/mirror.hpp"
#include "gpe/redis/reader.hpp"
#include "http_server.hpp"

namespace {

using gpe::agent::HttpOptions;
using gpe::agent::HttpServer;
namespace redis = gpe::redis;

constexpr const char* kUsage = R"(usage: gunicorn-prometheus-agent [options]

Serves /metrics (text format 0.0.4, or OpenMetrics 1.0 when the Accept header
asks for it; gzip when allowed) and /health, computed in C++ from a Gunicorn
multiprocess directory or from Redis. Every option falls back to the
environment variable named beside it.

Source:
  --directory DIR          multiprocess directory            PROMETHEUS_MULTIPROC_DIR
  --source files|redis     what /metrics shows (default: files; redis when no
                           directory is given): this instance, or every
                           instance sharing the Redis (sidecar)
HTTP:
  --bind ADDRESS           default 0.0.0.0                   PROMETHEUS_BIND_ADDRESS
  --port PORT              default 9091                      PROMETHEUS_METRICS_PORT
  --certfile FILE          serve HTTPS                       PROMETHEUS_SSL_CERTFILE
  --keyfile FILE                                             PROMETHEUS_SSL_KEYFILE
  --client-cafile FILE     verify client certificates        PROMETHEUS_SSL_CLIENT_CAFILE
  --client-capath DIR                                        PROMETHEUS_SSL_CLIENT_CAPATH
  --client-auth-required   refuse clients without one        PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED
  --no-http                serve nothing: only mirror to Redis (a sidecar
                           serves the metrics)
  --upgrade                share the port with the agent of the old master
                           (Gunicorn USR2 binary upgrade)
  --request-timeout SECONDS
                           default 10: the whole time a client has for its
                           request (not per byte), and for an idle kept-alive
                           connection; then it is closed
  --max-connections N      default 4096; more: the connection that has waited
                           longest for its request is closed
  --value-only-files       files as prometheus_client 0.17 and older writes
                           them (no timestamps)
Redis:
  --mirror                 mirror the directory to Redis     REDIS_ENABLED
  --redis-url URL          redis://, rediss://, unix://      PROMETHEUS_REDIS_URL
                           (else REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_USERNAME,
                           REDIS_SSL, REDIS_SSL_CA_CERTS, REDIS_SSL_CERTFILE,
                           REDIS_SSL_KEYFILE, REDIS_SSL_CERT_REQS, REDIS_UNIX_SOCKET)
  --redis-password-stdin   read the Redis password from standard input
                           (else REDIS_PASSWORD)
  --redis-prefix PREFIX    default gunicorn                  REDIS_KEY_PREFIX
  --redis-instance ID      default the hostname              REDIS_INSTANCE_ID
  --redis-ttl SECONDS      default 300, 0 = never expire     REDIS_TTL_SECONDS
  --flush-interval SECONDS default 1                         REDIS_FLUSH_INTERVAL
  (and from the environment only: REDIS_SOCKET_TIMEOUT, REDIS_CONNECT_TIMEOUT,
  default 5 s; REDIS_MAX_REPLY_BYTES, default 33554432)
Process:
  --parent-pid PID         exit when this process is gone
  --help                   this text
)";

struct Config {
    std::string directory;
    std::string source;
    HttpOptions http;
    bool mirror = false;
    bool serve = true;  // --no-http: mirror only
    std::optional<redis::Options> redis;
    std::string prefix = "gunicorn";
    std::string instance;
    int ttl = 300;
    double interval = 1.0;
    pid_t parent = 0;
};

[[noreturn]] void fail(const std::string& message, int code = 2) {
    std::fprintf(stderr, "gunicorn-prometheus-agent: %s\n", message.c_str());
    std::exit(code);
}

std::string env(const char* name, const std::string& fallback = "") {
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? value : fallback;
}

bool parse_bool(const std::string& name, const std::string& raw) {
    std::string v;
    for (char c : raw) v.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
    if (v == "0" || v == "false" || v == "no" || v == "off" || v.empty()) return false;
    fail(name + "='" + raw + "' is not a boolean (use true/false, 1/0, yes/no, on/off)");
}

long parse_number(const std::string& name, const std::string& raw, long low, long high) {
    char* end = nullptr;
    const long value = std::strtol(raw.c_str(), &end, 10);
    if (raw.empty() || *end != '\0' || value < low || value > high) {
        fail(name + "='" + raw + "' must be a whole number from " + std::to_string(low) + " to " +
             std::to_string(high));
    }
    return value;
}

double parse_seconds(const std::string& name, const std::string& raw) {
    char* end = nullptr;
    const double value = std::strtod(raw.c_str(), &end);
    if (raw.empty() || *end != '\0' || !(value > 0) || value > 86400) {
        fail(name + "='" + raw + "' must be a number of seconds above 0 (at most 86400)");
    }
    return value;
}

Config parse(int argc, char** argv) {
    std::map<std::string, std::string> flags;
    const std::vector<std::string> switches = {
        "--client-auth-required", "--mirror", "--no-http", "--upgrade", "--value-only-files",
        "--redis-password-stdin", "--help"};
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-h") arg = "--help";
        std::string value;
        if (const size_t eq = arg.find('='); eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
        } else if (std::find(switches.begin(), switches.end(), arg) != switches.end()) {
            value = "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fail("option " + arg + " needs a value (see --help)");
        }
        if (!arg.starts_with("--")) fail("unexpected argument '" + arg + "' (see --help)");
        flags[arg] = value;
    }
    auto get = [&](const char* flag, const char* variable, const std::string& fallback = "") {
        auto it = flags.find(flag);
        return it != flags.end() ? it->second : env(variable, fallback);
    };
    if (flags.count("--help")) {
        std::fputs(kUsage, stdout);
        std::exit(0);
    }
    const std::vector<std::string> known = {"--directory",
                                            "--source",
                                            "--bind",
                                            "--port",
                                            "--certfile",
                                            "--keyfile",
                                            "--client-cafile",
                                            "--client-capath",
                                            "--client-auth-required",
                                            "--upgrade",
                                            "--request-timeout",
                                            "--max-connections",
                                            "--mirror",
                                            "--no-http",
                                            "--redis-url",
                                            "--redis-password-stdin",
                                            "--redis-prefix",
                                            "--redis-instance",
                                            "--redis-ttl",
                                            "--flush-interval",
                                            "--parent-pid"};
    for (const auto& [flag, value] : flags) {
        if (std::find(known.begin(), known.end(), flag) == known.end())
            fail("unknown option " + flag + " (see --help)");
    }

    Config c;
    c.directory = get("--directory", "PROMETHEUS_MULTIPROC_DIR");
    c.source = get("--source", "GPE_AGENT_SOURCE", c.directory.empty() ? "redis" : "files");
    if (c.source != "files" && c.source != "redis")
        fail("--source must be files or redis, not '" + c.source + "'");
    c.http.bind = get("--bind", "PROMETHEUS_BIND_ADDRESS", "0.0.0.0");
    c.http.port = static_cast<int>(parse_number(
        "PROMETHEUS_METRICS_PORT", get("--port", "PROMETHEUS_METRICS_PORT", "9091"), 1, 65535));
    c.http.certfile = get("--certfile", "PROMETHEUS_SSL_CERTFILE");
    c.http.keyfile = get("--keyfile", "PROMETHEUS_SSL_KEYFILE");
    c.http.client_cafile = get("--client-cafile", "PROMETHEUS_SSL_CLIENT_CAFILE");
    c.http.client_capath = get("--client-capath", "PROMETHEUS_SSL_CLIENT_CAPATH");
    c.http.client_auth_required =
        parse_bool("PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED",
                   get("--client-auth-required", "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED"));
    c.http.upgrade = flags.count("--upgrade") > 0;
    if (flags.count("--request-timeout")) {
        const std::string raw = flags["--request-timeout"];
        char* end = nullptr;
        const double seconds = std::strtod(raw.c_str(), &end);
        if (raw.empty() || *end != '\0' || !(seconds > 0) || seconds > 3600)
            fail("--request-timeout='" + raw +
                 "' must be a number of seconds above 0, at most 3600");
        c.http.request_timeout = std::chrono::milliseconds(static_cast<long>(seconds * 1000));
    }
    if (flags.count("--max-connections")) {
        c.http.max_connections = static_cast<std::size_t>(
            parse_number("--max-connections", flags["--max-connections"], 1, 1 << 20));
    }
    if (flags.count("--value-only-files")) gpe::set_entry_layout(gpe::EntryLayout::kValueOnly);
    c.mirror = flags.count("--mirror") ? true : false;
    c.serve = flags.count("--no-http") == 0;
    if (!c.serve && !c.mirror) fail("--no-http needs --mirror: there would be nothing to do");
    const bool redis_wanted =
        c.mirror || c.source == "redis" || parse_bool("REDIS_ENABLED", env("REDIS_ENABLED"));
    if (c.source == "files" && c.directory.empty())
        fail("--source files needs --directory or PROMETHEUS_MULTIPROC_DIR");
    if (c.mirror && c.directory.empty())
        fail("--mirror needs --directory or PROMETHEUS_MULTIPROC_DIR");
    if (redis_wanted) {
        redis::Options o;
        const std::string url = get("--redis-url", "PROMETHEUS_REDIS_URL");
        try {
            if (!url.empty()) {
                o = redis::parse_url(url);
            } else {
                o.host = env("REDIS_HOST", "localhost");
                o.port = static_cast<int>(
                    parse_number("REDIS_PORT", env("REDIS_PORT", "6379"), 1, 65535));
                o.db = static_cast<int>(parse_number("REDIS_DB", env("REDIS_DB", "0"), 0, 1 << 20));
                o.username = env("REDIS_USERNAME");
                o.password = env("REDIS_PASSWORD");
                o.unix_socket = env("REDIS_UNIX_SOCKET");
                o.tls.enabled = parse_bool("REDIS_SSL", env("REDIS_SSL"));
                o.tls.ca_file = env("REDIS_SSL_CA_CERTS");
                o.tls.ca_path = env("REDIS_SSL_CA_PATH");
                o.tls.cert_file = env("REDIS_SSL_CERTFILE");
                o.tls.key_file = env("REDIS_SSL_KEYFILE");
                o.tls.verify = env("REDIS_SSL_CERT_REQS", "required") != "none";
            }
        } catch (const std::invalid_argument& e) {
            fail(std::string("PROMETHEUS_REDIS_URL: ") + e.what());
        }
        o.socket_timeout = parse_seconds("REDIS_SOCKET_TIMEOUT", env("REDIS_SOCKET_TIMEOUT", "5"));
        o.connect_timeout =
            parse_seconds("REDIS_CONNECT_TIMEOUT", env("REDIS_CONNECT_TIMEOUT", "5"));
        o.max_reply_bytes = static_cast<size_t>(
            parse_number("REDIS_MAX_REPLY_BYTES",
                         env("REDIS_MAX_REPLY_BYTES", std::to_string(redis::kDefaultMaxReplyBytes)),
                         static_cast<long>(redis::kMinMaxReplyBytes),
                         static_cast<long>(redis::kMaxMaxReplyBytes)));
        if (flags.count("--redis-password-stdin")) {
            std::string password;
            std::getline(std::cin, password);
            o.password = password;
        }
        c.redis = o;
        c.mirror =
            c.mirror || (c.source == "files" && parse_bool("REDIS_ENABLED", env("REDIS_ENABLED")));
    }
    c.prefix = get("--redis-prefix", "REDIS_KEY_PREFIX", "gunicorn");
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    c.instance = get("--redis-instance", "REDIS_INSTANCE_ID", host);
    c.ttl = static_cast<int>(parse_number(
        "REDIS_TTL_SECONDS", get("--redis-ttl", "REDIS_TTL_SECONDS", "300"), 0, 1L << 30));
    const std::string interval = get("--flush-interval", "REDIS_FLUSH_INTERVAL", "1");
    c.interval = std::strtod(interval.c_str(), nullptr);
    if (!(c.interval > 0))
        fail("REDIS_FLUSH_INTERVAL='" + interval + "' must be a number of seconds above 0");
    if (flags.count("--parent-pid"))
        c.parent =
            static_cast<pid_t>(parse_number("--parent-pid", flags["--parent-pid"], 1, 1 << 30));
    return c;
}

void log(const char* level, const std::string& message) {
    std::fprintf(stderr, "[gunicorn-prometheus-agent] [%s] %s\n", level, message.c_str());
}

// Scrape warnings repeat every scrape; say each one once a minute at most.
class WarningLog {
  public:
    void report(const std::vector<std::string>& warnings) {
        std::lock_guard lock(mutex_);
        const auto now = std::chrono::steady_clock::now();
        for (const auto& warning : warnings) {
            auto [it, fresh] = last_.try_emplace(warning, now);
            if (fresh || now - it->second > std::chrono::minutes(1)) {
                it->second = now;
                log("WARNING", warning);
            }
        }
        if (last_.size() > 1000) last_.clear();
    }

  private:
    std::mutex mutex_;
    std::map<std::string, std::chrono::steady_clock::time_point> last_;
};

// The supervisor (agent.py) waits longer than this before SIGKILL, so a last
// mirror pass that Redis lets hang cannot make the agent outlive its grace.
constexpr std::chrono::seconds kFinalPassDeadline{3};

// Stops the mirror (its last pass) or, past `deadline`, leaves without it:
// the pass may be blocked on a Redis that stopped answering.
void stop_within(redis::MirrorService& mirror, std::chrono::seconds deadline) {
    std::promise<void> stopped;
    std::future<void> done = stopped.get_future();
    std::thread last([&] {
        mirror.stop();
        stopped.set_value();
    });
    if (done.wait_for(deadline) == std::future_status::timeout) {
        log("WARNING", "the last mirror pass did not finish within " +
                           std::to_string(deadline.count()) +
                           " s (Redis does not answer); exiting");
        std::fflush(stderr);
        std::_Exit(0);  // the pass thread is blocked in a socket call: leave it
    }
    last.join();
}

}  // namespace

int main(int argc, char** argv) {
    const Config config = parse(argc, argv);

    // Signals are taken by one thread (below); the others never see them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    if (config.parent != 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);          // gone with the master...
        if (::getppid() != config.parent) return 0;  // ...even if it went before this line
    }

    std::shared_ptr<redis::Client> client;
    if (config.redis) client = std::make_shared<redis::Client>(*config.redis);

    WarningLog warnings;
    gpe::MultiprocessReader files;
    std::unique_ptr<gpe::Source> source;
    if (config.source == "redis") {
        source = std::make_unique<redis::Reader>(client, config.prefix);
    } else {
        source = std::make_unique<gpe::DirectorySource>(files, config.directory);
    }
    auto render = [&](gpe::Format format) {
        gpe::Diagnostics diagnostics;
        std::string body = source->render(format, diagnostics);
        warnings.report(diagnostics.warnings);
        return body;
    };

    std::unique_ptr<redis::MirrorService> mirror;
    if (config.mirror) {
        mirror = std::make_unique<redis::MirrorService>(
            client,
            redis::MirrorOptions{config.directory, config.prefix, config.instance, config.ttl},
            config.interval, [](int level, const std::string& message) {
                log(level >= redis::MirrorService::kWarning ? "WARNING" : "INFO", message);
            });
        mirror->start();
    }

    std::optional<HttpServer> server;
    if (config.serve) {
        // Each connection is a descriptor: raise the soft limit to the hard
        // one, and hold no more connections than it leaves room for.
        HttpOptions http = config.http;
        rlimit files{};
        if (::getrlimit(RLIMIT_NOFILE, &files) == 0) {
            files.rlim_cur = files.rlim_max;
            ::setrlimit(RLIMIT_NOFILE, &files);
            ::getrlimit(RLIMIT_NOFILE, &files);
            if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur > 64) {
                http.max_connections =
                    std::min<std::size_t>(http.max_connections, files.rlim_cur - 64);
            }
        }
        server.emplace(http, render);
        try {
            server->bind();
        } catch (const std::exception& e) {
            if (mirror) mirror->stop();
            fail(e.what());
        }
        log("INFO", std::string("serving ") +
                        (config.source == "redis" ? "Redis " + config.prefix : config.directory) +
                        " on " + (config.http.certfile.empty() ? "http" : "https") + "://" +
                        config.http.bind + ":" + std::to_string(config.http.port) + "/metrics" +
                        (mirror ? ", mirroring to Redis" : ""));
    } else {
        log("INFO", "mirroring " + config.directory + " to Redis (no HTTP)");
    }

    std::thread waiter([&] {
        for (;;) {
            timespec timeout{1, 0};
            const int sig = sigtimedwait(&signals, nullptr, &timeout);
            if (sig > 0) break;
            if (config.parent != 0 && ::getppid() != config.parent) break;  // the master is gone
        }
        if (server) server->stop();
    });
    int code = 0;
    if (server) {
        try {
            server->serve();
        } catch (const std::exception& e) {
            log("ERROR", e.what());
            code = 1;
        }
        ::kill(::getpid(), SIGTERM);  // wake the waiter if serve() ended by itself
    }
    waiter.join();
    if (mirror) stop_within(*mirror, kFinalPassDeadline);  // a last pass

    return code;
}
