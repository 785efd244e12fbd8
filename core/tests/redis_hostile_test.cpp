// Redis (or whatever answers on its address) misbehaving: replies too large
// or too slow, nesting too deep, a SCAN that never ends (a fake server:
// redis-server cannot do these), and a real redis-server that loses data
// without a disconnect, runs out of memory or holds keys of other types
// under the prefix.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "fake_redis.hpp"
#include "gpe/exposition.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/redis/client.hpp"
#include "gpe/redis/fold.hpp"
#include "gpe/redis/layout.hpp"
#include "gpe/redis/mirror_service.hpp"
#include "gpe/redis/reader.hpp"
#include "gpe/series_key.hpp"
#include "redis_server.hpp"
#include "temp_dir.hpp"

namespace gpe::redis {
namespace {

using gpe::testing::FakeRedis;
using gpe::testing::RedisServer;
using gpe::testing::TempDir;
using Clock = std::chrono::steady_clock;

#define REQUIRE_REDIS() \
    if (!gpe::testing::redis_server_installed()) GTEST_SKIP() << "redis-server is not installed"

Options local(int port, double timeout = 1.0) {
    Options o;
    o.host = "127.0.0.1";
    o.port = port;
    o.connect_timeout = 1;
    o.socket_timeout = timeout;
    return o;
}

bool has(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// PING answered; every other command gets `answer`, then `after` runs.
FakeRedis::Handler answering(std::string answer,
                             std::function<void(FakeRedis&, int)> after = nullptr) {
    return [answer = std::move(answer), after = std::move(after)](
               FakeRedis& server, int fd, const std::vector<std::string>& command) {
        if (!command.empty() && command[0] == "PING") return server.send_all(fd, "+PONG\r\n");
        if (!server.send_all(fd, answer)) return false;
        if (after) after(server, fd);
        return true;
    };
}

// Runs `call`, expecting an Error; returns it and how long the call took.
template <typename F>
std::pair<Error, double> failure_of(F&& call) {
    const auto start = Clock::now();
    try {
        call();
    } catch (const Error& e) {
        return {e, seconds_since(start)};
    }
    ADD_FAILURE() << "no error";
    return {Error(Error::Kind::kServer, ""), seconds_since(start)};
}

TEST(RedisHostile, BulkStringLargerThanTheLimitIsRefusedNamingIt) {
    // $2000000000, then bytes as fast as loopback carries them.
    FakeRedis server(answering("$2000000000\r\n", [](FakeRedis& s, int fd) {
        s.stream(fd, 10, 64 * 1024, std::chrono::milliseconds(0));
    }));
    Options o = local(server.port(), 5);
    o.max_reply_bytes = 1 << 20;
    Client client(o);
    const auto [error, took] = failure_of([&] { client.command({"GET", "x"}); });
    EXPECT_EQ(error.kind(), Error::Kind::kProtocol);
    EXPECT_TRUE(has(error.what(), "REDIS_MAX_REPLY_BYTES")) << error.what();
    EXPECT_TRUE(has(error.what(), "1048576")) << error.what();
    EXPECT_LT(took, 2.0);
    // The rest of that reply is never read: the connection was dropped, and
    // the next call answers on a new one.
    EXPECT_NO_THROW(client.ping());
    EXPECT_EQ(client.connection_epoch(), 2u);
}

TEST(RedisHostile, SocketTimeoutIsADeadlineForTheWholeReply) {
    // A reply that keeps coming, 4 KB every 5 ms: recv never waits, the
    // size limit is far, and still the call ends at the socket timeout.
    FakeRedis server(answering("$100000000\r\n", [](FakeRedis& s, int fd) {
        s.stream(fd, 10, 4096, std::chrono::milliseconds(5));
    }));
    Client client(local(server.port(), 0.5));
    const auto [error, took] = failure_of([&] { client.command({"GET", "x"}); });
    EXPECT_EQ(error.kind(), Error::Kind::kTimeout);
    EXPECT_TRUE(has(error.what(), "0.5 s")) << error.what();
    EXPECT_GE(took, 0.45);
    EXPECT_LT(took, 1.5);
}

TEST(RedisHostile, ArrayAnnouncedLargerThanTheLimitIsRefusedAtOnce) {
    FakeRedis server(answering("*2147483647\r\n:1\r\n"));
    Client client(local(server.port(), 5));
    const auto [error, took] = failure_of([&] { client.command({"SCAN", "0"}); });
    EXPECT_TRUE(has(error.what(), "2147483647 elements")) << error.what();
    EXPECT_TRUE(has(error.what(), "REDIS_MAX_REPLY_BYTES")) << error.what();
    EXPECT_LT(took, 1.0);
}

TEST(RedisHostile, ManySmallElementsCountAgainstTheLimit) {
    // Announced small enough to fit, but the elements, 16 bytes each besides
    // their bytes on the wire, do not.
    std::string flood = "*45000\r\n";
    for (int i = 0; i < 45000; ++i) flood += ":1000000\r\n";
    FakeRedis server(answering(flood));
    Options o = local(server.port(), 5);
    o.max_reply_bytes = 1 << 20;
    Client client(o);
    const auto [error, took] = failure_of([&] { client.command({"X"}); });
    EXPECT_TRUE(has(error.what(), "REDIS_MAX_REPLY_BYTES")) << error.what();
    EXPECT_FALSE(has(error.what(), "elements")) << error.what();  // not refused at the header
    (void)took;
}

TEST(RedisHostile, NestingDeeperThanSevenIsRefused) {
    std::string deep;
    for (int i = 0; i < 9; ++i) deep += "*1\r\n";
    deep += ":1\r\n";
    FakeRedis server(answering(deep));
    Client client(local(server.port()));
    const auto [error, took] = failure_of([&] { client.command({"X"}); });
    EXPECT_EQ(error.kind(), Error::Kind::kProtocol);
    EXPECT_TRUE(has(error.what(), "nested")) << error.what();
    (void)took;

    std::string ok;  // depth 7 is fine
    for (int i = 0; i < kMaxReplyDepth; ++i) ok += "*1\r\n";
    ok += ":5\r\n";
    FakeRedis good(answering(ok));
    Client other(local(good.port()));
    Reply reply = other.command({"X"});
    for (int i = 0; i < kMaxReplyDepth; ++i) {
        ASSERT_EQ(reply.type, Reply::Type::kArray);
        Reply inner = std::move(reply.elements.at(0));
        reply = std::move(inner);
    }
    EXPECT_EQ(reply.integer, 5);
}

TEST(RedisHostile, ScanWhoseCursorNeverReturnsToZeroIsBounded) {
    FakeRedis server([](FakeRedis& s, int fd, const std::vector<std::string>& command) {
        if (command[0] == "PING") return s.send_all(fd, "+PONG\r\n");
        if (command[0] == "GET") return s.send_all(fd, "$-1\r\n");
        // the same key on every page, and the cursor never 0
        const std::string key = "gunicorn:counter:1@h:metric:abc";
        return s.send_all(
            fd, "*2\r\n$1\r\n7\r\n*1\r\n$" + std::to_string(key.size()) + "\r\n" + key + "\r\n");
    });
    auto client = std::make_shared<Client>(local(server.port(), 0.5));
    Reader reader(client, "gunicorn");
    const auto [error, took] = failure_of([&] { reader.collect(); });
    EXPECT_TRUE(has(error.what(), "SCAN")) << error.what();
    EXPECT_TRUE(has(error.what(), "never came back to 0")) << error.what();
    EXPECT_LT(took, 1.5);
    EXPECT_GT(server.commands(), 10u);
    // the next scrape is not stuck behind the first
    const auto second = failure_of([&] { reader.collect(); });
    EXPECT_LT(second.second, 1.5);
}

TEST(RedisHostile, ScanListingMoreKeysThanTheLimitIsRefused) {
    // 1000 new keys on every page, as fast as loopback carries them.
    FakeRedis server(
        [page = 0](FakeRedis& s, int fd, const std::vector<std::string>& command) mutable {
            if (command[0] == "PING") return s.send_all(fd, "+PONG\r\n");
            if (command[0] == "GET") return s.send_all(fd, "$-1\r\n");
            std::string out = "*2\r\n$1\r\n7\r\n*1000\r\n";
            ++page;
            for (int i = 0; i < 1000; ++i) {
                const std::string key = "gunicorn:counter:" + std::to_string(page) +
                                        "@h:metric:" + std::string(64, 'a') + std::to_string(i);
                out += "$" + std::to_string(key.size()) + "\r\n" + key + "\r\n";
            }
            return s.send_all(fd, out);
        });
    Options o = local(server.port(), 5);
    o.max_reply_bytes = 1 << 20;
    auto client = std::make_shared<Client>(o);
    Reader reader(client, "gunicorn");
    const auto [error, took] = failure_of([&] { reader.collect(); });
    EXPECT_TRUE(has(error.what(), "SCAN")) << error.what();
    EXPECT_TRUE(has(error.what(), "REDIS_MAX_REPLY_BYTES")) << error.what();
    EXPECT_LT(took, 2.0);
}

// ---- a real redis-server ----

void put(const TempDir& dir, const std::string& file, const std::string& metric, double value) {
    MmapFile f(dir.file(file));
    f.slot(encode_series_key(metric, metric + "_total", {}, {}, "help"))[0] = value;
}

std::string render(const std::shared_ptr<Client>& client, Diagnostics& diagnostics) {
    Reader reader(client, "gunicorn");
    return reader.render(Format::kText, diagnostics);
}

// The one mirror marker of instance h.
std::string marker_of(Client& client) {
    const Reply keys = client.command({"KEYS", "gunicorn:mirror@h@*"});
    EXPECT_EQ(keys.elements.size(), 1u);
    return keys.elements.empty() ? std::string() : keys.elements[0].str;
}

class RedisHeals : public ::testing::TestWithParam<int> {};

TEST_P(RedisHeals, LostDataWithoutADisconnectIsSentAgainByTheNextPass) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", 7);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", GetParam()});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    put(dir, "counter_1.db", "reqs", 8);  // a pass that writes finds its own marker
    mirror.pass(diagnostics);
    EXPECT_TRUE(diagnostics.warnings.empty()) << diagnostics.warnings.front();
    EXPECT_EQ(mirror.pass(diagnostics).commands, 1u);  // nothing changed: the marker's GET alone
    const uint64_t epoch = client->connection_epoch();
    client->command({"FLUSHALL"});
    // One pass finds the marker gone and sends everything, meta keys too.
    EXPECT_GT(mirror.pass(diagnostics).written, 0u);
    ASSERT_EQ(diagnostics.warnings.size(), 1u);
    EXPECT_TRUE(has(diagnostics.warnings[0], "gunicorn:mirror@h")) << diagnostics.warnings[0];
    EXPECT_EQ(client->connection_epoch(), epoch);  // all on one connection
    Diagnostics read;
    EXPECT_TRUE(has(render(client, read), "reqs_total 8.0"));
    EXPECT_TRUE(read.warnings.empty());
    if (GetParam() > 0) {
        const std::string meta =
            make_key("gunicorn", "counter", "1@h", kMeta,
                     series_hash(encode_series_key("reqs", "reqs_total", {}, {}, "help")));
        EXPECT_GT(client->command({"PTTL", meta}).integer, 0);
    }
    const long long marker_ttl = client->command({"PTTL", marker_of(*client)}).integer;
    EXPECT_GT(marker_ttl, 0);  // without a TTL too: a day
    EXPECT_LE(marker_ttl, 300 * 1000 * (GetParam() > 0 ? 1 : 288));
    EXPECT_EQ(mirror.pass(diagnostics).commands, 1u);  // and quiet again
    EXPECT_EQ(diagnostics.warnings.size(), 1u);
}

TEST_P(RedisHeals, AnOlderMarkerMeansAStaleReplica) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", 1);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", GetParam()});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    const std::string marker = marker_of(*client);
    const std::string old = client->command({"GET", marker}).str;
    put(dir, "counter_2.db", "reqs", 2);  // a new series, then the failover loses it
    mirror.pass(diagnostics);
    client->pipeline({{"FLUSHALL"}, {"SET", marker, old}});  // what a replica had
    mirror.pass(diagnostics);
    EXPECT_TRUE(has(render(client, diagnostics), "reqs_total 3.0"));
}

TEST_P(RedisHeals, EvictedKeysOfASeriesAreSentAgain) {
    // Eviction takes some keys and leaves the marker: found when the keys
    // are renewed (every third of the TTL: 1 s here) or, without a TTL,
    // checked (verify_seconds).
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", 5);
    put(dir, "counter_2.db", "reqs", 6);
    MirrorOptions options{dir.path(), "gunicorn", "h", GetParam() > 0 ? 3 : 0};
    options.verify_seconds = 1;
    Mirror mirror(client, options);
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    const std::string hash = series_hash(encode_series_key("reqs", "reqs_total", {}, {}, "help"));
    client->pipeline({{"DEL", make_key("gunicorn", "counter", "1@h", kMeta, hash)},
                      {"DEL", make_key("gunicorn", "counter", "2@h", kMetric, hash)}});
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    mirror.pass(diagnostics);  // finds them gone
    mirror.pass(diagnostics);  // sends them again (a partial loss is not worth a second pass)
    EXPECT_TRUE(has(render(client, diagnostics), "reqs_total 11.0"));
    EXPECT_TRUE(diagnostics.warnings.empty()) << diagnostics.warnings.front();
}

TEST_P(RedisHeals, TwoInstancesOfOneHostDoNotShareAMarker) {
    // Two Gunicorn masters on one host: the same default instance id (the
    // hostname), other PIDs, so other keys; their mirrors must not take each
    // other's marker for lost data.
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir a;
    TempDir b;
    Mirror first(client, MirrorOptions{a.path(), "gunicorn", "host", GetParam()});
    Mirror second(client, MirrorOptions{b.path(), "gunicorn", "host", GetParam()});
    Diagnostics diagnostics;
    for (int i = 1; i <= 3; ++i) {
        put(a, "counter_1.db", "reqs", i);
        put(b, "counter_2.db", "reqs", 10 * i);
        first.pass(diagnostics);
        second.pass(diagnostics);
    }
    EXPECT_TRUE(diagnostics.warnings.empty()) << diagnostics.warnings.front();
    EXPECT_TRUE(has(render(client, diagnostics), "reqs_total 33.0"));
}

INSTANTIATE_TEST_SUITE_P(Ttl, RedisHeals, ::testing::Values(0, 300));

TEST(RedisHostileReal, ATransactionReplyMayHoldOneElementPerCommandSent) {
    // 20,000 new series with a TTL: EXEC answers 80,000 elements, more than
    // a 1 MiB limit counts for them; the commands sent allow it.
    REQUIRE_REDIS();
    RedisServer server;
    Options o = local(server.port(), 5);
    o.max_reply_bytes = 1 << 20;
    auto client = std::make_shared<Client>(o);
    TempDir dir;
    {
        MmapFile f(dir.file("counter_1.db"));
        for (int i = 0; i < 20000; ++i) {
            f.slot(encode_series_key("n", "n_total", {"i"}, {std::to_string(i)}, "help"))[0] = 1;
        }
    }
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 300});
    Diagnostics diagnostics;
    EXPECT_EQ(mirror.pass(diagnostics).written, 20000u);
    Reader reader(client, "gunicorn");
    reader.render(Format::kText, diagnostics);
    EXPECT_EQ(reader.last_stats().keys, 20000u);
    EXPECT_TRUE(diagnostics.warnings.empty());
}

TEST(RedisHostileReal, OutOfMemoryIsNamedNotOnlyExecabort) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", 1);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 0});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    client->pipeline(
        {{"CONFIG", "SET", "maxmemory-policy", "noeviction"}, {"CONFIG", "SET", "maxmemory", "1"}});
    put(dir, "counter_2.db", "reqs", 2);
    const auto [error, took] = failure_of([&] { mirror.pass(diagnostics); });
    EXPECT_TRUE(has(error.what(), "OOM")) << error.what();
    EXPECT_TRUE(has(error.what(), "EXECABORT")) << error.what();
    (void)took;
    client->command({"CONFIG", "SET", "maxmemory", "0"});
    mirror.pass(diagnostics);  // nothing was lost
    EXPECT_TRUE(has(render(client, diagnostics), "reqs_total 3.0"));
}

TEST(RedisHostileReal, AReadOnlyReplicaIsNamed) {
    // A failover behind a proxy that now reaches a replica: READONLY, said.
    REQUIRE_REDIS();
    RedisServer primary;
    RedisServer replica({"--replicaof", "127.0.0.1", std::to_string(primary.port())});
    auto client = std::make_shared<Client>(local(replica.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", 1);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 300});
    Diagnostics diagnostics;
    const auto [error, took] = failure_of([&] { mirror.pass(diagnostics); });
    EXPECT_TRUE(has(error.what(), "READONLY")) << error.what();
    (void)took;
}

TEST(RedisHostileReal, KeysetHoldingAListDoesNotFailTheScrape) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", 4);
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 0});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    client->pipeline({{"DEL", keyset_key("gunicorn")}, {"RPUSH", keyset_key("gunicorn"), "x"}});
    Reader reader(client, "gunicorn");
    for (int i = 0; i < 2; ++i) {
        Diagnostics read;
        EXPECT_TRUE(has(reader.render(Format::kText, read), "reqs_total 4.0"));
        ASSERT_EQ(read.warnings.size(), 1u);
        EXPECT_TRUE(has(read.warnings[0], "gunicorn:keyset")) << read.warnings[0];
        EXPECT_TRUE(has(read.warnings[0], "WRONGTYPE")) << read.warnings[0];
    }
}

TEST(RedisHostileReal, MirrorNamesAKeyOfAnotherTypeAndTriesAgain) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = std::make_shared<Client>(local(server.port()));
    TempDir dir;
    put(dir, "counter_1.db", "reqs", 4);
    const std::string key =
        make_key("gunicorn", "counter", "1@h", kMetric,
                 series_hash(encode_series_key("reqs", "reqs_total", {}, {}, "help")));
    client->command({"RPUSH", key, "foreign"});
    Mirror mirror(client, MirrorOptions{dir.path(), "gunicorn", "h", 0});
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    mirror.pass(diagnostics);
    ASSERT_EQ(diagnostics.warnings.size(), 1u) << diagnostics.warnings.back();  // once
    EXPECT_TRUE(has(diagnostics.warnings[0], key)) << diagnostics.warnings[0];
    EXPECT_TRUE(has(diagnostics.warnings[0], "WRONGTYPE")) << diagnostics.warnings[0];
    client->command({"DEL", key});
    mirror.pass(diagnostics);
    EXPECT_TRUE(has(render(client, diagnostics), "reqs_total 4.0"));
}

TEST(RedisHostileReal, FoldSkipsKeysOfAnotherTypeAndNamesThem) {
    REQUIRE_REDIS();
    RedisServer server;
    Client client(local(server.port()));
    const std::string json = encode_series_key("reqs", "reqs_total", {}, {}, "h");
    const std::string hash = series_hash(json);
    client.pipeline({{"HSET", make_key("g", "counter", "1@h", kMetric, hash), "value", "2"},
                     {"HSET", make_key("g", "counter", "1@h", kMeta, hash), "original_key", json},
                     {"SET", make_key("g", "counter", "1@h", kMetric, "other"), "a string"},
                     {"RPUSH", make_key("g", "counter", "archive@h", kMetric, "third"), "x"},
                     {"HSET", make_key("g", "counter", "1@h", kMetric, "third"), "value", "1"}});
    const FoldReport report = fold_process(client, "g", "1@h", "archive@h");
    EXPECT_EQ(report.folded, 1);
    ASSERT_EQ(report.skipped.size(), 2u);
    std::string all = report.skipped[0] + "\n" + report.skipped[1];
    EXPECT_TRUE(has(all, "g:counter:1@h:metric:other")) << all;
    EXPECT_TRUE(has(all, "g:counter:archive@h:metric:third")) << all;
    EXPECT_EQ(
        client.command({"HGET", make_key("g", "counter", "archive@h", kMetric, hash), "value"}).str,
        "2");
}

}  // namespace
}  // namespace gpe::redis
