#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <set>
#include <thread>

#include "gpe/archive.hpp"
#include "gpe/exposition.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/multiprocess.hpp"
#include "gpe/redis/client.hpp"
#include "gpe/redis/fold.hpp"
#include "gpe/redis/layout.hpp"
#include "gpe/redis/mirror.hpp"
#include "gpe/redis/options.hpp"
#include "gpe/redis/reader.hpp"
#include "gpe/redis/sentinel.hpp"
#include "gpe/redis/writer.hpp"
#include "gpe/series_key.hpp"
#include "redis_server.hpp"
#include "temp_dir.hpp"

namespace gpe::redis {
namespace {

using gpe::testing::RedisServer;
using gpe::testing::TempDir;

#define REQUIRE_REDIS() \
    if (!gpe::testing::redis_server_installed()) GTEST_SKIP() << "redis-server is not installed"

Options local(int port) {
    Options o;
    o.host = "127.0.0.1";
    o.port = port;
    o.connect_timeout = 1;
    o.socket_timeout = 2;
    return o;
}

TEST(RedisUrl, ParsesTheThreeSchemes) {
    Options o = parse_url("redis://alice:p%40ss@cache.internal:6380/3");
    EXPECT_EQ(o.host, "cache.internal");
    EXPECT_EQ(o.port, 6380);
    EXPECT_EQ(o.db, 3);
    EXPECT_EQ(o.username, "alice");
    EXPECT_EQ(o.password, "p@ss");
    EXPECT_FALSE(o.tls.enabled);

    o = parse_url("rediss://:secret@[::1]/1?ssl_ca_certs=/ca.pem&ssl_cert_reqs=none");
    EXPECT_TRUE(o.tls.enabled);
    EXPECT_EQ(o.host, "::1");
    EXPECT_EQ(o.port, 6379);
    EXPECT_EQ(o.password, "secret");
    EXPECT_EQ(o.tls.ca_file, "/ca.pem");
    EXPECT_FALSE(o.tls.verify);

    o = parse_url("unix:///run/redis.sock?db=2&password=pw");
    EXPECT_EQ(o.unix_socket, "/run/redis.sock");
    EXPECT_EQ(o.db, 2);
    EXPECT_EQ(o.password, "pw");
}

TEST(RedisUrl, ParsesSentinelUrls) {
    Options o = parse_url(
        "redis+sentinel://:m%40ster@10.0.0.1:26380,[::1],sentinel-c:5000/my%20master/2"
        "?sentinel_password=sp");
    const std::vector<Address> expected{{"10.0.0.1", 26380}, {"::1", 26379}, {"sentinel-c", 5000}};
    EXPECT_EQ(o.sentinel.sentinels, expected);
    EXPECT_EQ(o.sentinel.master, "my master");
    EXPECT_EQ(o.sentinel.password, "sp");
    EXPECT_EQ(o.password, "m@ster");  // the master's
    EXPECT_EQ(o.db, 2);
    EXPECT_FALSE(o.tls.enabled);
    EXPECT_EQ(format_sentinels(o.sentinel.sentinels), "10.0.0.1:26380,[::1]:26379,sentinel-c:5000");
    EXPECT_EQ(describe(o),
              "master 'my master' of sentinels 10.0.0.1:26380,[::1]:26379,sentinel-c:5000/2");

    o = parse_url("rediss+sentinel://s1/m");
    EXPECT_TRUE(o.tls.enabled);
    EXPECT_EQ(o.sentinel.sentinels, (std::vector<Address>{{"s1", 26379}}));
    EXPECT_EQ(o.sentinel.master, "m");
    EXPECT_EQ(o.db, 0);
}

// What `parse` throws (std::invalid_argument), or "no error".
template <typename F>
std::string refusal(F&& parse) {
    try {
        parse();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "no error";
}

TEST(RedisUrl, BadSentinelUrlsAndListsSayWhy) {
    const std::pair<std::string, std::string> urls[] = {
        {"redis+sentinel://s1:26379", "no master name"},
        {"redis+sentinel://s1:26379/", "no master name"},
        {"redis+sentinel://s1,,s2/m", "empty sentinel address"},
        {"redis+sentinel://s1:0/m", "invalid port"},
        {"redis+sentinel://s1/m/x", "invalid database"},
    };
    for (const auto& [url, words] : urls) {
        EXPECT_NE(refusal([&] { parse_url(url); }).find(words), std::string::npos) << url;
    }
    EXPECT_NE(refusal([] { parse_sentinels("a:1,b:x"); }).find("invalid port 'x' in the sentinel"),
              std::string::npos);
    EXPECT_NE(refusal([] { parse_sentinels(""); }).find("empty sentinel address"),
              std::string::npos);
    SentinelOptions s;
    s.sentinels = parse_sentinels("a:1");
    EXPECT_NE(refusal([&] { check_sentinel(s); }).find("without the master's name"),
              std::string::npos);
    s = SentinelOptions{{}, "m", ""};
    EXPECT_NE(refusal([&] { check_sentinel(s); }).find("without sentinels"), std::string::npos);
}

TEST(RedisSentinel, NoSentinelReachableNamesEachAndItsError) {
    Options o = local(0);
    o.sentinel.sentinels = {{"127.0.0.1", gpe::testing::free_port()},
                            {"127.0.0.1", gpe::testing::free_port()}};
    o.sentinel.master = "mymaster";
    try {
        find_master(o);
        FAIL();
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_EQ(e.kind(), Error::Kind::kConnection);
        EXPECT_NE(what.find("no Redis Sentinel reachable for master 'mymaster'"),
                  std::string::npos);
        for (const Address& a : o.sentinel.sentinels) {
            EXPECT_NE(what.find(format_sentinels({a}) + ": connect: Connection refused"),
                      std::string::npos)
                << what;
        }
    }
}

TEST(RedisUrl, BadUrlsNameTheProblemButNotThePassword) {
    EXPECT_THROW(parse_url("localhost:6379"), std::invalid_argument);
    EXPECT_THROW(parse_url("http://x"), std::invalid_argument);
    try {
        parse_url("redis://u:hunter2@host:99999/0");
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("port"), std::string::npos);
        EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos);
    }
    // An unescaped '?' in the password splits it: the part before is
    // read as the port or the database, and must not be quoted either.
    for (const char* url : {"redis://:hunter?2@host", "redis://u:hunter?db=1@host"}) {
        try {
            parse_url(url);
            ADD_FAILURE() << url;
        } catch (const std::invalid_argument& e) {
            EXPECT_EQ(std::string(e.what()).find("hunter"), std::string::npos) << e.what();
        }
    }
    try {
        parse_url("redis://host:63x9");
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("'63x9'"), std::string::npos) << e.what();
    }
}

TEST(RedisLayout, KeysRoundTripAndForeignKeysAreRejected) {
    const std::string hash = series_hash("[\"m\", \"m_total\", {}, \"h\"]");
    EXPECT_EQ(hash.size(), 32u);
    const std::string key = make_key("app:metrics", "gauge_livesum", "12@web-1", kMetric, hash);
    EXPECT_EQ(key, "app:metrics:gauge_livesum:12@web-1:metric:" + hash);
    const auto parts = parse_key(key, "app:metrics");
    ASSERT_TRUE(parts.has_value());
    EXPECT_EQ(parts->store, "gauge_livesum");
    EXPECT_EQ(parts->process, "12@web-1");
    EXPECT_EQ(parts->hash, hash);
    EXPECT_FALSE(parse_key("app:metrics:foo", "app:metrics"));
    EXPECT_FALSE(parse_key("app:metrics:counter:1@x:metric", "app:metrics"));
    EXPECT_FALSE(parse_key("app:metrics:counter:1@x:other:abc", "app:metrics"));
    EXPECT_FALSE(parse_key("other:counter:1@x:metric:abc", "app:metrics"));
    EXPECT_EQ(process_id("12", "pod:a*b"), "12@pod_a_b");
    EXPECT_EQ(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
}

TEST(RedisLayout, KeysetVersionsDifferAcrossFork) {
    const std::string before = new_keyset_version();
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        const std::string version = new_keyset_version();
        (void)!::write(fds[1], version.data(), version.size());
        ::_exit(0);
    }
    ::close(fds[1]);
    char buf[64] = {};
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    ::close(fds[0]);
    ::waitpid(child, nullptr, 0);
    const std::string in_child(buf, n > 0 ? static_cast<size_t>(n) : 0);
    const std::string in_parent = new_keyset_version();
    EXPECT_EQ(in_child.size(), 32u);
    EXPECT_NE(in_child, in_parent);  // a copied generator state would make these equal
    EXPECT_NE(before, in_parent);
}

TEST(RedisLayout, ValuesReadBackExactly) {
    for (double v : {0.0, -0.0, 0.1, 1e300, -5e-324, 123456789.125}) {
        EXPECT_EQ(*parse_value(format_value(v)), v);
    }
    EXPECT_EQ(format_value(HUGE_VAL), "inf");
    EXPECT_TRUE(std::isnan(*parse_value(format_value(std::nan("")))));
}

TEST(RedisClient, PipelinesAndReportsErrorsByKind) {
    REQUIRE_REDIS();
    RedisServer server;
    Client client(local(server.port()));
    const auto replies =
        client.pipeline({{"SET", "k", "v"}, {"GET", "k"}, {"INCR", "k"}, {"GET", "missing"}});
    ASSERT_EQ(replies.size(), 4u);
    EXPECT_EQ(replies[0].str, "OK");
    EXPECT_EQ(replies[1].str, "v");
    EXPECT_TRUE(replies[2].is_error());
    EXPECT_EQ(replies[3].type, Reply::Type::kNil);
    try {
        client.command({"NOSUCHCOMMAND"});
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), Error::Kind::kServer);
    }
    EXPECT_NO_THROW(client.ping());  // the connection survived the error reply
}

// A child forked while a thread of the parent is in the middle of a command
// (a Gunicorn worker forked during a mirror pass) lets the parent's
// connection go without freeing its half-changed state, and talks to Redis
// on a connection of its own.
TEST(RedisClient, AChildForkedMidCommandStartsAfresh) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    std::vector<Command> batch;
    for (int i = 0; i < 300; ++i)
        batch.push_back({"HSET", "big", std::to_string(i), std::string(1000, 'v')});
    batch.push_back({"HGETALL", "big"});
    std::atomic<bool> stop{false};
    std::thread busy([&] {
        while (!stop) client->pipeline(batch);
    });
    int failures = 0;
    for (int i = 0; i < 200; ++i) {
        const pid_t child = ::fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            client->reset_after_fork();
            const Reply pong = client->command({"PING"});
            ::_exit(pong.str == "PONG" ? 0 : 3);
        }
        int status = 0;
        ::waitpid(child, &status, 0);
        failures += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop = true;
    busy.join();
    EXPECT_EQ(failures, 0);
    EXPECT_EQ(client->command({"HLEN", "big"}).integer, 300);  // the parent's connection goes on
}

TEST(RedisClient, WrongPasswordIsAnAuthenticationError) {
    REQUIRE_REDIS();
    RedisServer server({"--requirepass", "right"});
    Options o = local(server.port());
    o.password = "wrong";
    Client client(o);
    try {
        client.ping();
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), Error::Kind::kAuthentication);
        EXPECT_EQ(std::string(e.what()).find("wrong"), std::string::npos);
    }
    o.password = "right";
    Client good(o);
    EXPECT_NO_THROW(good.ping());
}

TEST(RedisClient, ReconnectsAfterARestartWithANewEpoch) {
    REQUIRE_REDIS();
    RedisServer server;
    Client client(local(server.port()));
    client.ping();
    const uint64_t first = client.connection_epoch();
    server.stop();
    EXPECT_THROW(client.ping(), Error);
    EXPECT_THROW(client.ping(), Error);  // during backoff: at once, no network
    server.start();
    bool back = false;
    for (int i = 0; i < 100 && !back; ++i) {
        try {
            client.ping();
            back = true;
        } catch (const Error&) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    EXPECT_TRUE(back);
    EXPECT_GT(client.connection_epoch(), first);
    EXPECT_GT(client.server_time(), 1.6e9);
}

void put(const TempDir& dir, const std::string& file, const std::string& metric,
         const std::string& sample, std::vector<std::string> names, std::vector<std::string> values,
         double value) {
    MmapFile f(dir.file(file));
    f.slot(encode_series_key(metric, sample, names, values, "help"))[0] = value;
}

std::string render_redis(const std::shared_ptr<Client>& client, const std::string& prefix) {
    Reader reader(client, prefix);
    Diagnostics diagnostics;
    return reader.render(Format::kText, diagnostics);
}

TEST(RedisMirror, RedisShowsWhatTheDirectoryShows) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {"m"}, {"GET"}, 2);
    put(dir, "counter_2.db", "reqs", "reqs_total", {"m"}, {"GET"}, 3);
    put(dir, "gauge_livesum_1.db", "busy", "busy", {}, {}, 1);
    put(dir, "gauge_livesum_2.db", "busy", "busy", {}, {}, 1);
    Mirror mirror(client, MirrorOptions{dir.path(), "app:m", "host", 300});
    Diagnostics diagnostics;
    const PassReport first = mirror.pass(diagnostics);
    EXPECT_EQ(first.written, 4u);
    EXPECT_TRUE(first.refreshed);
    EXPECT_EQ(mirror.pass(diagnostics).written, 0u);  // nothing changed

    const std::string out = render_redis(client, "app:m");
    EXPECT_NE(out.find("reqs_total{m=\"GET\"} 5.0"), std::string::npos) << out;
    EXPECT_NE(out.find("busy 2.0"), std::string::npos) << out;

    // Every key of the instance expires at the same moment.
    std::set<long long> deadlines;
    for (const auto& reply : client->command({"KEYS", "app:m:*:*:*:*"}).elements) {
        deadlines.insert(client->command({"EXPIRETIME", reply.str}).integer);
    }
    EXPECT_EQ(deadlines.size(), 1u);
    EXPECT_GT(*deadlines.begin(), 0);
}

TEST(RedisWriter, WritesAsTheMirrorDoesWithItsAbsoluteDeadline) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    const std::string series = encode_series_key("reqs", "reqs_total", {}, {}, "help");
    put(dir, "counter_1.db", "reqs", "reqs_total", {}, {}, 2);
    Mirror mirror(client, MirrorOptions{dir.path(), "app", "mirrored", 300});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    SeriesWriter writer(client, "app", 300);
    writer.write("counter", "1@direct", series, "counter", "", 2, 0);

    const auto expiry = [&](const std::string& process, int data_type) {
        const SeriesKeys keys = series_keys("app", "counter", process, series);
        return client->command({"PEXPIRETIME", data_type == 0 ? keys.metric : keys.meta}).integer;
    };
    const long long mirrored = expiry("1@mirrored", 0);
    const long long written = expiry("1@direct", 0);
    EXPECT_EQ(expiry("1@direct", 1), written);
    EXPECT_LT(std::llabs(written - mirrored), 1000);
    EXPECT_EQ(client->command({"HGETALL", series_keys("app", "counter", "1@direct", series).meta})
                  .elements.size(),
              6u);  // original_key, typ, multiprocess_mode
    // Within a third of the TTL the deadline stays: not pushed on by writes.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    writer.write("counter", "1@direct", series, "counter", "", 3, 0);
    EXPECT_EQ(expiry("1@direct", 0), written);
    const auto read = writer.read("counter", "1@direct", series);
    ASSERT_TRUE(read.has_value());
    EXPECT_EQ(read->first, 3);
    EXPECT_FALSE(writer.read("counter", "2@direct", series).has_value());
}

TEST(RedisMirror, ArchivedProcessMovesInOneTransaction) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {}, {}, 2);
    put(dir, "counter_2.db", "reqs", "reqs_total", {}, {}, 3);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 0});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    const std::string created = client->command({"GET", keyset_key("gunicorn")}).str;
    EXPECT_EQ(created.size(), 32u);  // keys created: a new version
    mark_process_dead(dir.path(), "2", diagnostics);
    const PassReport report = mirror.pass(diagnostics);
    EXPECT_EQ(report.deleted, 2u);  // metric and meta key of process 2
    EXPECT_NE(client->command({"GET", keyset_key("gunicorn")}).str, created);  // keys deleted
    EXPECT_EQ(client->command({"KEYS", "gunicorn:counter:2@h:*"}).elements.size(), 0u);
    EXPECT_NE(render_redis(client, "gunicorn").find("reqs_total 5.0"), std::string::npos);
    EXPECT_EQ(client
                  ->command({"TTL", make_key("gunicorn", "counter", "1@h", kMetric,
                                             series_hash(encode_series_key("reqs", "reqs_total", {},
                                                                           {}, "help")))})
                  .integer,
              -1);  // ttl 0: no expiry
}

TEST(RedisMirror, EverythingIsSentAgainAfterRedisLostItsData) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {}, {}, 7);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 300});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    server.stop();
    server.start();  // empty
    for (int i = 0; i < 100; ++i) {
        try {
            mirror.pass(diagnostics);
            if (render_redis(client, "gunicorn").find("reqs_total 7.0") != std::string::npos) break;
        } catch (const Error&) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_NE(render_redis(client, "gunicorn").find("reqs_total 7.0"), std::string::npos);
}

// Another server behind the same address (a failover, a restart): the pass
// that reaches it with only the changes sends everything at once, whatever
// the marker says (here the new server has the marker's last value, and
// none of the series).
TEST(RedisMirror, APassReachingANewConnectionSendsEverythingAtOnce) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {"m"}, {"GET"}, 7);
    put(dir, "counter_2.db", "reqs", "reqs_total", {"m"}, {"PUT"}, 1);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 300});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    const std::string marker = client->command({"KEYS", "gunicorn:mirror@*"}).elements.at(0).str;
    const std::string written = client->command({"GET", marker}).str;
    server.stop();
    server.start();  // empty
    {
        Client other(local(server.port()));
        other.command({"SET", marker, written});
    }
    put(dir, "counter_2.db", "reqs", "reqs_total", {"m"}, {"PUT"}, 2);
    bool through = false;
    for (int i = 0; i < 100 && !through; ++i) {
        try {
            mirror.pass(diagnostics);  // the first fails on the old connection
            through = true;
        } catch (const Error&) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    ASSERT_TRUE(through);
    const std::string out = render_redis(client, "gunicorn");
    EXPECT_NE(out.find("reqs_total{m=\"GET\"} 7.0"), std::string::npos) << out;
    EXPECT_NE(out.find("reqs_total{m=\"PUT\"} 2.0"), std::string::npos) << out;
}

TEST(RedisReader, SteadyScrapeIsFourCommandsAndSeesNewSeries) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {"m"}, {"GET"}, 1);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 0});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    Reader reader(client, "gunicorn");
    reader.render(Format::kText, diagnostics);
    reader.render(Format::kText, diagnostics);
    // GET version and the node set (one round trip), one read script, the
    // fleet archive
    EXPECT_EQ(reader.last_stats().commands, 4u);
    put(dir, "counter_2.db", "reqs", "reqs_total", {"m"}, {"PUT"}, 5);
    mirror.pass(diagnostics);
    const std::string out = reader.render(Format::kText, diagnostics);
    EXPECT_NE(out.find("reqs_total{m=\"PUT\"} 5.0"), std::string::npos) << out;
    EXPECT_GT(reader.last_stats().commands, 4u);  // listed the keys again
}

TEST(RedisReader, ForeignAndBrokenKeysAreSkippedWithWarnings) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {}, {}, 4);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 0});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    client->pipeline(
        {{"HSET", "gunicorn:weird:metric:x", "value", "1"},
         {"HSET", "gunicorn:counter:9@h:metric:nometa", "value", "1", "timestamp", "0"},
         {"HSET", "gunicorn:info:9@h:metric:abc", "value", "1"}});
    Reader reader(client, "gunicorn");
    const std::string out = reader.render(Format::kText, diagnostics);
    EXPECT_EQ(out, "# HELP reqs_total help\n# TYPE reqs_total counter\nreqs_total 4.0\n");
    EXPECT_EQ(diagnostics.warnings.size(), 3u);
}

TEST(RedisFold, FoldsADeadProcessServerSide) {
    REQUIRE_REDIS();
    RedisServer server;
    Client client(local(server.port()));
    const std::string counter = encode_series_key("reqs", "reqs_total", {}, {}, "h");
    const std::string gauge = encode_series_key("peak", "peak", {}, {}, "h");
    auto write = [&](const std::string& store, const std::string& process, const std::string& json,
                     const std::string& value) {
        const std::string hash = series_hash(json);
        client.pipeline(
            {{"HSET", make_key("g", store, process, kMetric, hash), "value", value, "timestamp",
              "0"},
             {"HSET", make_key("g", store, process, kMeta, hash), "original_key", json}});
    };
    write("counter", "1@h", counter, "2");
    write("counter", "archive@h", counter, "5");
    write("gauge_max", "1@h", gauge, "9");
    write("gauge_livesum", "1@h", gauge, "1");
    const FoldReport report = fold_process(client, "g", "1@h", "archive@h");
    EXPECT_EQ(report.folded, 2);
    EXPECT_EQ(client.command({"KEYS", "g:*:1@h:*"}).elements.size(), 0u);
    EXPECT_EQ(
        client
            .command({"HGET", make_key("g", "counter", "archive@h", kMetric, series_hash(counter)),
                      "value"})
            .str,
        "7");
    EXPECT_EQ(
        client
            .command({"HGET", make_key("g", "gauge_max", "archive@h", kMetric, series_hash(gauge)),
                      "value"})
            .str,
        "9");
}

}  // namespace
}  // namespace gpe::redis
