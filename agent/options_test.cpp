// The agent's flags and environment, resolved through the settings table.
#include "options.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpe/redis/mirror.hpp"
#include "gpe/settings.hpp"

namespace gpe::agent {
namespace {

using settings::SettingError;

Config files(std::vector<std::string> args, const Environment& env = {}) {
    args.insert(args.begin(), {"--directory", "/tmp/mp"});
    return resolve(args, env);
}

std::string refusal(const std::vector<std::string>& args, const Environment& env = {}) {
    try {
        resolve(args, env);
    } catch (const SettingError& e) {
        return e.what();
    }
    return "";
}

TEST(AgentOptions, DefaultsComeFromTheTable) {
    const Config c = files({});
    EXPECT_EQ(c.source, "files");
    EXPECT_EQ(c.http.bind, "0.0.0.0");
    EXPECT_EQ(c.http.port, 9091);
    EXPECT_EQ(c.http.request_timeout, std::chrono::milliseconds(10000));
    EXPECT_EQ(c.http.max_connections, 4096u);
    EXPECT_EQ(c.prefix, "gunicorn");
    EXPECT_EQ(c.ttl, 300);
    EXPECT_DOUBLE_EQ(c.interval, 1.0);
    EXPECT_FALSE(c.mirror);
    EXPECT_FALSE(c.redis.has_value());
    EXPECT_TRUE(c.serve);
}

TEST(AgentOptions, SourceIsRedisWithoutADirectory) {
    const Config c = resolve({}, {});
    EXPECT_EQ(c.source, "redis");
    ASSERT_TRUE(c.redis.has_value());
    EXPECT_EQ(c.redis->host, "localhost");
    EXPECT_EQ(c.redis->port, 6379);
    EXPECT_TRUE(c.redis->tls.verify);
}

TEST(AgentOptions, FlagsWinOverVariables) {
    const Environment env = {{"PROMETHEUS_METRICS_PORT", "9100"}, {"REDIS_KEY_PREFIX", "env"}};
    EXPECT_EQ(files({}, env).http.port, 9100);
    EXPECT_EQ(files({"--port", "9200"}, env).http.port, 9200);
    EXPECT_EQ(files({"--port=9300"}, env).http.port, 9300);
    EXPECT_EQ(files({}, env).prefix, "env");
    EXPECT_EQ(files({"--redis-prefix", "flag"}, env).prefix, "flag");
}

// What hooks.py passes (its _agent_args), every flag of it.
TEST(AgentOptions, TheMastersFlags) {
    const Config c = resolve({"--directory",
                              "/tmp/mp",
                              "--source",
                              "files",
                              "--bind",
                              "127.0.0.1",
                              "--port",
                              "9101",
                              "--parent-pid",
                              "42",
                              "--client-capath",
                              "/etc/ssl",
                              "--client-auth-required",
                              "--upgrade",
                              "--value-only-files",
                              "--mirror",
                              "--redis-prefix",
                              "app:",
                              "--redis-instance",
                              "pod-1",
                              "--redis-ttl",
                              "0",
                              "--flush-interval",
                              "0.5",
                              "--no-http"},
                             {});
    EXPECT_EQ(c.http.bind, "127.0.0.1");
    EXPECT_EQ(c.http.port, 9101);
    EXPECT_EQ(c.parent, 42);
    EXPECT_EQ(c.http.client_capath, "/etc/ssl");
    EXPECT_TRUE(c.http.client_auth_required);
    EXPECT_TRUE(c.http.upgrade);
    EXPECT_TRUE(c.value_only_files);
    EXPECT_TRUE(c.mirror);
    EXPECT_FALSE(c.serve);
    EXPECT_EQ(c.prefix, "app:");
    EXPECT_EQ(c.instance, "pod-1");
    EXPECT_EQ(c.ttl, 0);
    EXPECT_DOUBLE_EQ(c.interval, 0.5);
    ASSERT_TRUE(c.redis.has_value());
}

TEST(AgentOptions, RedisTimeoutsFromTheEnvironment) {
    const Config c =
        resolve({}, {{"REDIS_SOCKET_TIMEOUT", "0.25"}, {"REDIS_CONNECT_TIMEOUT", "2"}});
    ASSERT_TRUE(c.redis.has_value());
    EXPECT_DOUBLE_EQ(c.redis->socket_timeout, 0.25);
    EXPECT_DOUBLE_EQ(c.redis->connect_timeout, 2.0);
    const Config url =
        resolve({"--redis-url", "redis://h:7000/1"}, {{"REDIS_SOCKET_TIMEOUT", "3"}});
    EXPECT_EQ(url.redis->port, 7000);
    EXPECT_DOUBLE_EQ(url.redis->socket_timeout, 3.0);
}

TEST(AgentOptions, RedisEnabledMirrorsAFilesAgent) {
    EXPECT_TRUE(files({}, {{"REDIS_ENABLED", "yes"}}).mirror);
    EXPECT_FALSE(resolve({}, {{"REDIS_ENABLED", "yes"}}).mirror);  // a sidecar reads only
    EXPECT_EQ(files({}, {{"REDIS_TTL_DISABLED", "true"}}).ttl, 0);
}

TEST(AgentOptions, CertReqsAsPythonReadsThem) {
    EXPECT_FALSE(resolve({}, {{"REDIS_SSL_CERT_REQS", " None "}}).redis->tls.verify);
    EXPECT_TRUE(resolve({}, {{"REDIS_SSL_CERT_REQS", "REQUIRED"}}).redis->tls.verify);
    EXPECT_EQ(refusal({}, {{"REDIS_SSL_CERT_REQS", "optional"}}),
              "REDIS_SSL_CERT_REQS='optional' must be 'required' or 'none'");
}

TEST(AgentOptions, GlobCharactersInThePrefixAreRefused) {
    EXPECT_EQ(refusal({"--redis-prefix", "app*"}),
              "--redis-prefix='app*' must not contain * ? [ ] or \\");
    EXPECT_NE(refusal({}, {{"REDIS_KEY_PREFIX", "a[b]"}}).find("REDIS_KEY_PREFIX='a[b]'"),
              std::string::npos);
}

TEST(AgentOptions, ErrorsNameTheVariableOrFlagAndTheValue) {
    EXPECT_EQ(refusal({}, {{"PROMETHEUS_METRICS_PORT", "0"}}),
              "PROMETHEUS_METRICS_PORT='0' must be a whole number from 1 to 65535");
    EXPECT_EQ(refusal({"--port", "x"}), "--port='x' must be a whole number from 1 to 65535");
    EXPECT_EQ(refusal({"--source", "ftp"}), "--source='ftp' must be files or redis");
    EXPECT_EQ(refusal({"--request-timeout", "0"}),
              "--request-timeout='0' must be a number of seconds above 0, at most 3600");
    EXPECT_EQ(refusal({}, {{"REDIS_FLUSH_INTERVAL", "1s"}}),
              "REDIS_FLUSH_INTERVAL='1s' must be a number of seconds above 0, at most 86400");
    EXPECT_EQ(refusal({}, {{"REDIS_ENABLED", "maybe"}}),
              "REDIS_ENABLED='maybe' is not a boolean (use true/false, 1/0, yes/no, on/off)");
    EXPECT_EQ(refusal({"--no-such-option"}), "unknown option --no-such-option (see --help)");
    EXPECT_EQ(refusal({"--port"}), "option --port needs a value (see --help)");
    EXPECT_EQ(refusal({"stray"}), "unexpected argument 'stray' (see --help)");
    EXPECT_EQ(refusal({"--source", "files"}),
              "--source files needs --directory or PROMETHEUS_MULTIPROC_DIR");
    EXPECT_EQ(refusal({"--directory", "/tmp/mp", "--no-http"}),
              "--no-http needs --mirror: there would be nothing to do");
}

TEST(AgentOptions, TheSourceIsNoLongerAVariable) {
    // Learnt from --source (the master passes it) or from --directory.
    EXPECT_EQ(files({}, {{"GPE_AGENT_SOURCE", "redis"}}).source, "files");
}

TEST(AgentOptions, HelpListsEveryFlagAndVariableOfTheAgent) {
    EXPECT_TRUE(resolve({"-h"}, {}).help);
    const std::string usage = settings::usage();
    for (const settings::Setting& s : settings::table()) {
        if (s.section == "Python") continue;
        const std::string_view name = s.flag.empty() ? s.variable : s.flag;
        EXPECT_NE(usage.find(name), std::string::npos) << name;
    }
}

TEST(SettingsTable, DefaultsParse) {
    for (const settings::Setting& s : settings::table()) {
        EXPECT_NO_THROW(settings::parse(s, std::nullopt, s.flag)) << s.flag << s.variable;
    }
    const auto bytes = settings::parse(*settings::find("REDIS_MAX_REPLY_BYTES"), std::nullopt, "");
    EXPECT_EQ(std::get<long long>(bytes), static_cast<long long>(redis::kDefaultMaxReplyBytes));
}

// The structs' own defaults (what a library user of the core gets without
// the table) are the table's: a default has one value, whoever reads it.
template <typename T>
T table_default(std::string_view variable) {
    const settings::Setting* row = settings::find(variable);
    EXPECT_NE(row, nullptr) << variable;
    return std::get<T>(settings::parse(*row, std::nullopt, variable));
}

TEST(AgentOptions, BuiltInDefaultsAreTheTables) {
    const redis::Options redis_options;
    EXPECT_EQ(redis_options.host, table_default<std::string>("REDIS_HOST"));
    EXPECT_EQ(redis_options.port, table_default<long long>("REDIS_PORT"));
    EXPECT_EQ(redis_options.db, table_default<long long>("REDIS_DB"));
    EXPECT_DOUBLE_EQ(redis_options.connect_timeout, table_default<double>("REDIS_CONNECT_TIMEOUT"));
    EXPECT_DOUBLE_EQ(redis_options.socket_timeout, table_default<double>("REDIS_SOCKET_TIMEOUT"));
    const redis::MirrorOptions mirror;
    EXPECT_EQ(mirror.prefix, table_default<std::string>("REDIS_KEY_PREFIX"));
    EXPECT_EQ(mirror.ttl_seconds, table_default<long long>("REDIS_TTL_SECONDS"));
    EXPECT_EQ(mirror.layout, redis::parse_layout(table_default<std::string>("REDIS_LAYOUT")));
    const HttpOptions http;
    EXPECT_EQ(http.bind, table_default<std::string>("PROMETHEUS_BIND_ADDRESS"));
    EXPECT_EQ(http.port, table_default<long long>("PROMETHEUS_METRICS_PORT"));
}

}  // namespace
}  // namespace gpe::agent
