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
#include "gpe/redis/mirror_service.hpp"
#include "gpe/redis/reader.hpp"
#include "gpe/settings.hpp"
#include "http_server.hpp"
#include "options.hpp"

namespace {

using gpe::agent::Config;
using gpe::agent::Environment;
using gpe::agent::HttpOptions;
using gpe::agent::HttpServer;
namespace redis = gpe::redis;

[[noreturn]] void fail(const std::string& message, int code = 2) {
    std::fprintf(stderr, "gunicorn-prometheus-agent: %s\n", message.c_str());
    std::exit(code);
}

// The process's side of the configuration: --help, the entry layout, the
// password on standard input and the hostname.
Config configure(int argc, char** argv) {
    Environment env;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string entry = *e;
        if (const size_t eq = entry.find('='); eq != std::string::npos)
            env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
    }
    Config c;
    try {
        c = gpe::agent::resolve(std::vector<std::string>(argv + 1, argv + argc), env);
    } catch (const gpe::settings::SettingError& e) {
        fail(e.what());
    }
    if (c.help) {
        std::fputs(gpe::settings::usage().c_str(), stdout);
        std::exit(0);
    }
    if (c.value_only_files) gpe::set_entry_layout(gpe::EntryLayout::kValueOnly);
    if (c.password_stdin && c.redis) std::getline(std::cin, c.redis->password);
    if (c.sentinel_password_stdin && c.redis) std::getline(std::cin, c.redis->sentinel.password);
    if (c.instance.empty()) {
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        c.instance = host;
    }
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

// Signals are taken by one thread (the waiter); the others never see them.
sigset_t block_signals() {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    return signals;
}

std::unique_ptr<redis::MirrorService> start_mirror(const Config& config,
                                                   std::shared_ptr<redis::Client> client) {
    auto mirror = std::make_unique<redis::MirrorService>(
        std::move(client),
        redis::MirrorOptions{.directory = config.directory,
                             .prefix = config.prefix,
                             .instance = config.instance,
                             .ttl_seconds = config.ttl,
                             .layout = config.layout},
        config.interval, [](int level, const std::string& message) {
            log(level >= redis::MirrorService::kWarning ? "WARNING" : "INFO", message);
        });
    mirror->start();
    return mirror;
}

// Each connection is a descriptor: raise the soft limit to the hard one, and
// hold no more connections than it leaves room for.
HttpOptions within_file_limit(HttpOptions http) {
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0) {
        files.rlim_cur = files.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &files);
        ::getrlimit(RLIMIT_NOFILE, &files);
        if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur > 64) {
            http.max_connections = std::min<std::size_t>(http.max_connections, files.rlim_cur - 64);
        }
    }
    return http;
}

void bind_or_fail(HttpServer& server, const Config& config, redis::MirrorService* mirror) {
    try {
        server.bind();
    } catch (const std::exception& e) {
        if (mirror) mirror->stop();
        fail(e.what());
    }
    log("INFO", std::string("serving ") +
                    (config.source == "redis" ? "Redis " + config.prefix : config.directory) +
                    " on " + (config.http.certfile.empty() ? "http" : "https") + "://" +
                    config.http.bind + ":" + std::to_string(config.http.port) + "/metrics" +
                    (mirror ? ", mirroring to Redis" : ""));
}

// Until a signal, or the master is gone; then the server stops.
std::thread start_waiter(sigset_t signals, pid_t parent, std::optional<HttpServer>& server) {
    return std::thread([signals, parent, &server] {
        for (;;) {
            timespec timeout{1, 0};
            const int sig = sigtimedwait(&signals, nullptr, &timeout);
            if (sig > 0) break;
            if (parent != 0 && ::getppid() != parent) break;  // the master is gone
        }
        if (server) server->stop();
    });
}

int serve(HttpServer& server) {
    int code = 0;
    try {
        server.serve();
    } catch (const std::exception& e) {
        log("ERROR", e.what());
        code = 1;
    }
    ::kill(::getpid(), SIGTERM);  // wake the waiter if serve() ended by itself
    return code;
}

}  // namespace

int main(int argc, char** argv) {
    const Config config = configure(argc, argv);
    const sigset_t signals = block_signals();
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
    if (config.mirror) mirror = start_mirror(config, client);

    std::optional<HttpServer> server;
    if (config.serve) {
        server.emplace(within_file_limit(config.http), render);
        bind_or_fail(*server, config, mirror.get());
    } else {
        log("INFO", "mirroring " + config.directory + " to Redis (no HTTP)");
    }

    std::thread waiter = start_waiter(signals, config.parent, server);
    const int code = server ? serve(*server) : 0;
    waiter.join();
    if (mirror) stop_within(*mirror, kFinalPassDeadline);  // a last pass
    return code;
}
