// The instance layout against a real redis-server: views, the node set, the
// fleet archive and its fold protocol (view_mirror.hpp, fleet.hpp).
#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "fake_redis.hpp"
#include "gpe/exposition.hpp"
#include "gpe/float_format.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/redis/client.hpp"
#include "gpe/redis/fleet.hpp"
#include "gpe/redis/layout.hpp"
#include "gpe/redis/reader.hpp"
#include "gpe/redis/view_mirror.hpp"
#include "gpe/series_key.hpp"
#include "redis_server.hpp"
#include "temp_dir.hpp"

namespace gpe::redis {
namespace {

using gpe::testing::RedisServer;
using gpe::testing::TempDir;

#define REQUIRE_REDIS() \
    if (!gpe::testing::redis_server_installed()) GTEST_SKIP() << "redis-server is not installed"

std::shared_ptr<Client> connect(const RedisServer& server) {
    Options o;
    o.host = "127.0.0.1";
    o.port = server.port();
    o.socket_timeout = 5;
    return std::make_shared<Client>(o);
}

void put(const TempDir& dir, const std::string& file, const std::string& metric,
         const std::string& sample, double value, double timestamp = 0) {
    MmapFile f(dir.file(file));
    double* slot = f.slot(encode_series_key(metric, sample, {}, {}, "help"));
    slot[0] = value;
    slot[1] = timestamp;
}

MirrorOptions options(const TempDir& dir, const std::string& instance, int ttl = 300) {
    return MirrorOptions{.directory = dir.path(), .instance = instance, .ttl_seconds = ttl};
}

std::string render(const std::shared_ptr<Client>& client) {
    Reader reader(client, "gunicorn");
    Diagnostics diagnostics;
    return reader.render(Format::kText, diagnostics);
}

bool shows(const std::string& out, const std::string& line) {
    return out.find("\n" + line + "\n") != std::string::npos;
}

TEST(RedisView, FieldsAndValuesRoundTrip) {
    const Store all{MetricType::gauge, GaugeMode::all};
    const std::string field = node::view_field(all, "12@h", "[\"x\"]");
    EXPECT_EQ(field, "gauge_all:12@h:[\"x\"]");
    const auto parsed = node::parse_view_field(field);
    ASSERT_TRUE(parsed);
    EXPECT_EQ(parsed->process, "12@h");
    EXPECT_EQ(parsed->json, "[\"x\"]");
    EXPECT_EQ(node::view_field(Store{MetricType::counter}, "12@h", "[1]"), "counter:[1]");
    EXPECT_FALSE(node::parse_view_field("counter:x"));      // not a series key
    EXPECT_FALSE(node::parse_view_field("gauge_all:[1]"));  // without its process
    EXPECT_FALSE(node::parse_view_field("gauge_x:[1]"));
    const Store recent{MetricType::gauge, GaugeMode::mostrecent};
    EXPECT_EQ(node::view_value(recent, 0.1, 5), "0.1 5");
    EXPECT_EQ(node::parse_view_value("0.1 5"), std::make_pair(0.1, 5.0));
    EXPECT_EQ(node::parse_view_value("inf"),
              std::make_pair(std::numeric_limits<double>::infinity(), 0.0));
    EXPECT_FALSE(node::parse_view_value("1 x"));
    EXPECT_EQ(node::node_id("a:b{c}", "t"), "a_b_c_@t");  // never ends the hash tag
    EXPECT_EQ(node::node_key("p", "n", node::kView), "p:{n}:view");
}

TEST(RedisView, AnInstanceIsOneHashOfItsMerge) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", 2);
    put(dir, "counter_2.db", "reqs", "reqs_total", 3);
    put(dir, "gauge_livesum_1.db", "busy", "busy", 1);
    put(dir, "gauge_livesum_2.db", "busy", "busy", 1);
    put(dir, "gauge_max_1.db", "peak", "peak", 7);
    put(dir, "gauge_max_2.db", "peak", "peak", 9);
    put(dir, "gauge_mostrecent_1.db", "last", "last", 4, 20);
    put(dir, "gauge_mostrecent_2.db", "last", "last", 5, 10);
    ViewMirror mirror(client, options(dir, "host"));
    Diagnostics diagnostics;
    EXPECT_EQ(mirror.pass(diagnostics).written, 4u);
    EXPECT_EQ(mirror.pass(diagnostics).written, 0u);  // nothing changed, nothing sent
    const std::string view = node::node_key("gunicorn", mirror.node(), node::kView);
    EXPECT_EQ(client->command({"HLEN", view}).integer, 4);
    const std::string out = render(client);
    EXPECT_TRUE(shows(out, "reqs_total 5.0")) << out;
    EXPECT_TRUE(shows(out, "busy 2.0")) << out;
    EXPECT_TRUE(shows(out, "peak 9.0")) << out;
    EXPECT_TRUE(shows(out, "last 4.0")) << out;  // the later timestamp
    // The view outlives the node's liveness by a TTL, for a folder to come.
    const long long alive =
        client->command({"PEXPIRETIME", node::node_key("gunicorn", mirror.node(), node::kAlive)})
            .integer;
    EXPECT_EQ(client->command({"PEXPIRETIME", view}).integer, alive + 300'000);
    EXPECT_EQ(
        client->command({"ZSCORE", node::fleet_key("gunicorn", node::kNodes), mirror.node()}).str,
        std::to_string(alive));
}

// A large pass (the first, a resend) goes in scripts of at most 500
// fields, so that none holds Redis for long; the view ends whole.
TEST(RedisView, ALargePassGoesInScriptsOfFiveHundredFields) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    {
        MmapFile f(dir.file("counter_1.db"));
        for (int i = 0; i < 2500; ++i)
            f.slot(encode_series_key("s" + std::to_string(i), "s" + std::to_string(i) + "_total",
                                     {}, {}, "h"))[0] = i;
    }
    ViewMirror mirror(client, options(dir, "host"));
    Diagnostics diagnostics;
    PassReport report = mirror.pass(diagnostics);
    EXPECT_EQ(report.written, 2500u);
    EXPECT_EQ(report.commands, 5u + 1u);  // five scripts, the node's ZADD
    const std::string view = node::node_key("gunicorn", mirror.node(), node::kView);
    EXPECT_EQ(client->command({"HLEN", view}).integer, 2500);
    EXPECT_TRUE(shows(render(client), "s2499_total 2499.0"));

    // 2,500 fields gone and 1,200 new: eight scripts, and the view is exact.
    ASSERT_EQ(::unlink(dir.file("counter_1.db").c_str()), 0);
    {
        MmapFile f(dir.file("counter_2.db"));
        for (int i = 0; i < 1200; ++i)
            f.slot(encode_series_key("t" + std::to_string(i), "t" + std::to_string(i) + "_total",
                                     {}, {}, "h"))[0] = 1;
    }
    report = mirror.pass(diagnostics);
    EXPECT_EQ(report.written, 1200u);
    EXPECT_EQ(report.deleted, 2500u);
    EXPECT_EQ(report.commands, 8u);
    EXPECT_EQ(client->command({"HLEN", view}).integer, 1200);
    const std::string out = render(client);
    EXPECT_TRUE(shows(out, "t1199_total 1.0")) << out.substr(0, 300);
    EXPECT_EQ(out.find("s0_total"), std::string::npos);
    // Redis lost the view between two passes: the next one sends all again.
    client->command({"FLUSHALL"});
    mirror.pass(diagnostics);
    EXPECT_EQ(client->command({"HLEN", view}).integer, 1200);
    ASSERT_FALSE(diagnostics.warnings.empty());
    EXPECT_NE(diagnostics.warnings.back().find("Redis lost keys"), std::string::npos);
}

TEST(RedisView, ANodeFoldedIntoTheArchiveKeepsItsCounts) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir a, b;
    put(a, "counter_1.db", "reqs", "reqs_total", 0.1);
    put(a, "gauge_livesum_1.db", "busy", "busy", 1);
    put(a, "gauge_min_1.db", "low", "low", 3);
    put(b, "counter_1.db", "reqs", "reqs_total", 0.2);
    put(b, "gauge_min_1.db", "low", "low", 4);
    ViewMirror ma(client, options(a, "a"));
    ViewMirror mb(client, options(b, "b"));
    Diagnostics diagnostics;
    ma.pass(diagnostics);
    mb.pass(diagnostics);
    ma.retire(diagnostics);
    const std::string out = render(client);
    EXPECT_TRUE(shows(out, "reqs_total " + python_repr(0.1 + 0.2))) << out;  // exact
    EXPECT_TRUE(shows(out, "low 3.0")) << out;
    EXPECT_EQ(out.find("busy"), std::string::npos) << out;  // went with its instance
    EXPECT_EQ(client->command({"ZCARD", node::fleet_key("gunicorn", node::kNodes)}).integer, 1);
    // A second fold of the same node finds nothing more to do.
    const FleetReport again = fold_node(*client, "gunicorn", "a@x", false, 8);
    EXPECT_EQ(again.chunks, 0u);
    EXPECT_EQ(render(client), out);
}

// The reader takes live nodes a few per round trip (view_reader.cpp): a
// fleet of several batches, one node retired among them, adds up exactly.
TEST(RedisView, AFleetOfManyBatchesIsReadWhole) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    constexpr int kInstances = 21;
    std::vector<TempDir> dirs(kInstances);
    std::vector<std::unique_ptr<ViewMirror>> mirrors;
    Diagnostics diagnostics;
    for (int i = 0; i < kInstances; ++i) {
        put(dirs[i], "counter_1.db", "reqs", "reqs_total", i + 1);
        put(dirs[i], "gauge_livesum_1.db", "busy", "busy", 1);
        mirrors.push_back(
            std::make_unique<ViewMirror>(client, options(dirs[i], "i" + std::to_string(i))));
        mirrors.back()->pass(diagnostics);
    }
    mirrors[10]->retire(diagnostics);  // its count stays, its gauge goes
    const std::string out = render(client);
    EXPECT_TRUE(shows(out, "reqs_total 231.0")) << out;  // 1 + 2 + ... + 21
    EXPECT_TRUE(shows(out, "busy 20.0")) << out;
    EXPECT_TRUE(diagnostics.warnings.empty());
}

TEST(RedisView, RacingFoldersFoldEveryChunkOnce) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    constexpr int kNodes = 6, kSeries = 1200;  // three chunks a node
    std::vector<std::unique_ptr<TempDir>> dirs;
    Diagnostics diagnostics;
    for (int n = 0; n < kNodes; ++n) {
        dirs.push_back(std::make_unique<TempDir>());
        MmapFile f(dirs.back()->file("counter_1.db"));
        for (int i = 0; i < kSeries; ++i)
            f.slot(encode_series_key("reqs", "reqs_total", {"i"}, {std::to_string(i)}, "h"))[0] = 1;
        ViewMirror(client, options(*dirs.back(), "n" + std::to_string(n), 1)).pass(diagnostics);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // their deadlines pass
    std::atomic<int> failures = 0;
    std::vector<std::thread> folders;
    for (int t = 0; t < 4; ++t) {
        folders.emplace_back([&] {
            try {
                Client own(client->options());
                while (fold_expired(own, "gunicorn", 16, 2).more) {
                }
            } catch (const std::exception&) {
                ++failures;
            }
        });
    }
    for (auto& t : folders) t.join();
    EXPECT_EQ(failures, 0);
    const Reply archive = client->command({"HGETALL", node::fleet_key("gunicorn", node::kArchive)});
    ASSERT_EQ(archive.elements.size(), 2u * kSeries);
    for (size_t i = 1; i < archive.elements.size(); i += 2)
        EXPECT_EQ(archive.elements[i].str, std::to_string(kNodes));
    EXPECT_EQ(client->command({"ZCARD", node::fleet_key("gunicorn", node::kNodes)}).integer, 0);
    EXPECT_EQ(client->command({"ZCARD", node::fleet_key("gunicorn", node::kApplied)}).integer,
              3 * kNodes);
}

// RESP of a reply, for the proxy below.
std::string resp(const Reply& reply) {
    switch (reply.type) {
        case Reply::Type::kString:
            return concat("$", std::to_string(reply.str.size()), "\r\n", reply.str, "\r\n");
        case Reply::Type::kStatus:
            return concat("+", reply.str, "\r\n");
        case Reply::Type::kError:
            return concat("-", reply.str, "\r\n");
        case Reply::Type::kInteger:
            return concat(":", std::to_string(reply.integer), "\r\n");
        case Reply::Type::kNil:
            return "$-1\r\n";
        case Reply::Type::kArray:
            break;
    }
    std::string out = concat("*", std::to_string(reply.elements.size()), "\r\n");
    for (const Reply& element : reply.elements) out += resp(element);
    return out;
}

// A proxy to a real server that runs `between` right after it answered the
// first `times` commands on a key ending in `after`: a writer's step lands
// exactly between two of the reader's commands.
struct InterleavingProxy {
    InterleavingProxy(const RedisServer& server, std::string after, std::function<void()> between,
                      int times = 1)
        : upstream(connect(server)),
          fake([this, times, after = std::move(after), between = std::move(between)](
                   gpe::testing::FakeRedis& proxy, int fd, const std::vector<std::string>& argv) {
              const Reply reply = upstream->command(Command(argv.begin(), argv.end()));
              if (!proxy.send_all(fd, resp(reply))) return false;
              if (fired < times && argv.size() > 1 && argv[1].ends_with(after)) {
                  ++fired;
                  between();
              }
              return true;
          }) {}
    std::shared_ptr<Client> reader_client() const {
        Options o = upstream->options();
        o.port = fake.port();
        return std::make_shared<Client>(o);
    }
    std::shared_ptr<Client> upstream;
    std::atomic<int> fired = 0;  // read by the test after the proxy's thread wrote it
    gpe::testing::FakeRedis fake;
};

// The view read was of other series than the values read after it (the
// mirror wrote between them, a freed slot taken by a new series): read
// again; when that happens twice, in one script.
TEST(RedisView, SeriesChangedBetweenTwoReadsAreReadAgain) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    put(dir, "counter_1.db", "x", "x_total", 1);
    ViewMirror mirror(client, options(dir, "a"));
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    int step = 0;
    InterleavingProxy proxy(
        server, ":view",
        [&] {
            // x goes, y takes its slot; then y goes, z takes it.
            const std::string gone = step == 0 ? "counter_1.db" : "counter_2.db";
            ::unlink(dir.file(gone).c_str());
            ++step;
            put(dir, "counter_" + std::to_string(step + 1) + ".db", step == 1 ? "y" : "z",
                step == 1 ? "y_total" : "z_total", 7 * step);
            mirror.pass(diagnostics);
        },
        2);
    Reader reader(proxy.reader_client(), "gunicorn");
    Diagnostics read;
    const std::string out = reader.render(Format::kText, read);
    EXPECT_EQ(proxy.fired, 2);
    EXPECT_TRUE(shows(out, "z_total 14.0")) << out;
    EXPECT_EQ(out.find("x_total"), std::string::npos) << out;
    EXPECT_EQ(out.find("y_total"), std::string::npos) << out;
}

// The node of an instance whose reqs_total{i} is 1 for `series` values of
// i, mirrored once.
std::string mirrored_node(const std::shared_ptr<Client>& client, const TempDir& dir,
                          const std::string& instance, int series) {
    {
        MmapFile f(dir.file("counter_1.db"));
        for (int i = 0; i < series; ++i)
            f.slot(encode_series_key("reqs", "reqs_total", {"i"}, {std::to_string(i)}, "h"))[0] = 1;
    }
    ViewMirror mirror(client, options(dir, instance));
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    return mirror.node();
}

// A chunk was taken between the reads of a retired node's `folding` and
// its `chunk`: its series would be in both; read again.
TEST(RedisView, AChunkTakenBetweenTwoReadsIsCountedOnce) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    const std::string node = mirrored_node(client, dir, "a", 1200);  // three chunks
    fold_node(*client, "gunicorn", node, false, 0);                  // retired, nothing folded yet
    InterleavingProxy proxy(server, ":folding",
                            [&] { fold_node(*client, "gunicorn", node, false, 1); });
    Reader reader(proxy.reader_client(), "gunicorn");
    Diagnostics read;
    const std::string out = reader.render(Format::kText, read);
    EXPECT_EQ(proxy.fired, 1);
    EXPECT_TRUE(shows(out, "reqs_total{i=\"0\"} 1.0")) << out.substr(0, 300);
    EXPECT_EQ(out.find("} 2.0"), std::string::npos) << out.substr(0, 300);
}

// A node was live when its values and marker were read, and was retired
// and a chunk of it folded before the archive was read: its series would
// be in both; read again.
TEST(RedisView, ANodeFoldedAfterItsLiveReadIsCountedOnce) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    const std::string node = mirrored_node(client, dir, "a", 1200);  // three chunks
    bool armed = false;  // the first scrape reads the node's series, the second only its values
    size_t folded = 0;
    InterleavingProxy proxy(
        server, ":marker",
        [&] {
            if (armed && !folded) folded = fold_node(*client, "gunicorn", node, false, 1).chunks;
        },
        100);
    Reader reader(proxy.reader_client(), "gunicorn");
    Diagnostics read;
    EXPECT_TRUE(shows(reader.render(Format::kText, read), "reqs_total{i=\"0\"} 1.0"));
    armed = true;
    const std::string out = reader.render(Format::kText, read);
    EXPECT_EQ(folded, 1u);
    EXPECT_TRUE(shows(out, "reqs_total{i=\"0\"} 1.0")) << out.substr(0, 300);
    EXPECT_EQ(out.find("} 2.0"), std::string::npos) << out.substr(0, 300);
}

// A node retired with one chunk taken and not applied (its folder died
// between the two: its connection drops at its third script).
std::string half_folded_node(const std::shared_ptr<Client>& client, const TempDir& dir,
                             const std::string& instance) {
    const std::string node = mirrored_node(client, dir, instance, 600);  // two chunks
    int scripts = 0;
    gpe::testing::FakeRedis dying(
        [&](gpe::testing::FakeRedis& proxy, int fd, const std::vector<std::string>& argv) {
            if (argv[0] == "EVAL" && ++scripts > 2) return false;  // retire, take; not apply
            return proxy.send_all(fd, resp(client->command(Command(argv.begin(), argv.end()))));
        });
    Options o = client->options();
    o.port = dying.port();
    Client folder(o);
    EXPECT_THROW(fold_node(folder, "gunicorn", node, false, 1), Error);
    return node;
}

// The archive is read between two reads of the chunks' scores; a chunk
// applied between them (here the taken chunk of a node whose folder died,
// by another folder) makes the archive be read again, and after two such
// pairs, by one script: the chunk is counted once, and nothing is missed.
TEST(RedisView, AChunkAppliedWhileTheArchiveIsReadIsCountedOnce) {
    REQUIRE_REDIS();
    for (int nodes : {1, 2}) {  // 2: the script
        RedisServer server;
        auto client = connect(server);
        std::vector<TempDir> dirs(static_cast<size_t>(nodes));
        std::vector<std::string> names;
        for (int n = 0; n < nodes; ++n)
            names.push_back(
                half_folded_node(client, dirs[static_cast<size_t>(n)], "h" + std::to_string(n)));
        size_t next = 0;
        InterleavingProxy proxy(
            server, ":applied", [&] { fold_node(*client, "gunicorn", names.at(next++), false, 1); },
            nodes);
        Reader reader(proxy.reader_client(), "gunicorn");
        Diagnostics read;
        const std::string out = reader.render(Format::kText, read);
        EXPECT_EQ(proxy.fired, nodes);
        const std::string full = concat("} ", std::to_string(nodes), ".0\n");
        int exact = 0;
        for (size_t at = out.find(full); at != std::string::npos; at = out.find(full, at + 1))
            ++exact;
        EXPECT_EQ(exact, 600) << nodes << " nodes: " << out.substr(0, 300);
        EXPECT_TRUE(read.warnings.empty()) << read.warnings.front();
    }
}

// A scrape is exact while one node's series keep changing and another node
// is folded chunk by chunk, all at once (the two tests before place a write
// between two reads exactly; this one races them).
TEST(RedisView, ScrapesStayExactWhileSeriesChangeAndANodeFolds) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    constexpr int kSeries = 1200;
    TempDir a, b;
    for (TempDir* dir : {&a, &b}) {
        MmapFile f(dir->file("counter_1.db"));
        for (int i = 0; i < kSeries; ++i)
            f.slot(encode_series_key("reqs", "reqs_total", {"i"}, {std::to_string(i)}, "h"))[0] =
                dir == &a ? 1 : 2;
    }
    Diagnostics diagnostics;
    ViewMirror mb(client, options(b, "b"));
    mb.pass(diagnostics);
    const std::string node_b = mb.node();
    std::atomic<bool> done = false, started = false;
    std::atomic<int> failures = 0;
    std::thread churn([&] {
        try {
            ViewMirror ma(std::make_shared<Client>(client->options()), options(a, "a"));
            Diagnostics own;
            for (int pass = 0; !done; ++pass) {
                ::unlink(a.file("counter_2.db").c_str());
                const std::string k = std::to_string(pass);
                put(a, "counter_2.db", "churn" + k, "churn" + k + "_total", pass);
                ma.pass(own);
                started = true;
            }
        } catch (const std::exception&) {
            ++failures;
        }
    });
    std::thread folder([&] {
        try {
            Client own(client->options());
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            while (fold_node(own, "gunicorn", node_b, false, 1).folded == 0)
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
        } catch (const std::exception&) {
            ++failures;
        }
    });
    while (!started && failures == 0) std::this_thread::yield();
    Reader reader(client, "gunicorn");
    int exact = 0, scrapes = 0;
    for (; scrapes < 150; ++scrapes) {
        Diagnostics read;
        const std::string out = reader.render(Format::kText, read);
        int threes = 0;
        for (size_t at = out.find("\nreqs_total{"); at != std::string::npos;
             at = out.find("\nreqs_total{", at + 1))
            threes += out.compare(out.find('\n', at + 1) - 4, 4, " 3.0") == 0;
        // The one churning series, with its own value (churnK_total K.0).
        const size_t churn_at = out.find("\nchurn");
        const size_t name_end = out.find("_total ", churn_at);
        const bool churn_exact =
            churn_at != std::string::npos && name_end != std::string::npos &&
            out.compare(name_end + 7, out.find('\n', name_end) - name_end - 7,
                        out.substr(churn_at + 6, name_end - churn_at - 6) + ".0") == 0;
        exact += threes == kSeries && churn_exact;
    }
    done = true;
    churn.join();
    folder.join();
    EXPECT_EQ(failures, 0);
    EXPECT_EQ(exact, scrapes);
    const std::string out = render(client);
    EXPECT_TRUE(shows(out, "reqs_total{i=\"1199\"} 3.0")) << out.substr(0, 400);
}

TEST(RedisView, AMirrorTakenForGoneGoesOnAsANewNode) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", 5);
    ViewMirror mirror(client, options(dir, "h", 1));
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    const std::string old = mirror.node();
    fold_node(*client, "gunicorn", old, false, 8);  // as a sidecar would after its TTL
    put(dir, "counter_1.db", "reqs", "reqs_total", 7);
    mirror.pass(diagnostics);
    EXPECT_NE(mirror.node(), old);
    EXPECT_TRUE(shows(render(client), "reqs_total 7.0"));
    ASSERT_FALSE(diagnostics.warnings.empty());
    EXPECT_NE(diagnostics.warnings.back().find("taken for gone"), std::string::npos);
    // The new node lives in the directory: a restarted agent continues it.
    ViewMirror restarted(client, options(dir, "h", 1));
    restarted.pass(diagnostics);
    EXPECT_EQ(restarted.node(), mirror.node());
}

TEST(RedisView, AKeyOfAnotherTypeIsNamed) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", 5);
    ViewMirror mirror(client, options(dir, "h"));
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    const std::string view = node::node_key("gunicorn", mirror.node(), node::kView);
    client->command({"DEL", view});
    client->command({"SET", view, "foreign"});
    put(dir, "counter_1.db", "reqs", "reqs_total", 6);
    try {
        mirror.pass(diagnostics);
        FAIL() << "a string where the view belongs was written over";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("is a string, not a hash"), std::string::npos)
            << e.what();
    }
    Reader reader(client, "gunicorn");
    Diagnostics read;
    reader.render(Format::kText, read);  // the scrape goes on, naming the key
    ASSERT_FALSE(read.warnings.empty());
    EXPECT_NE(read.warnings.front().find("WRONGTYPE"), std::string::npos);
}

// The values string: a header whose version changes only when series come
// or go, then 16 bytes per slot; a freed slot is taken by the next series.
TEST(RedisView, ValuesAreOneStringOfSlots) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    put(dir, "counter_1.db", "a", "a_total", 1);
    put(dir, "counter_1.db", "b", "b_total", 2);
    ViewMirror mirror(client, options(dir, "host"));
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    const std::string values_key = node::node_key("gunicorn", mirror.node(), node::kValues);
    const std::string view = node::node_key("gunicorn", mirror.node(), node::kView);
    auto values = [&] { return client->command({"GET", values_key}).str; };
    std::string bytes = values();
    ASSERT_EQ(bytes.size(), node::slot_offset(2));
    EXPECT_EQ(bytes.substr(0, 8), node::kValuesMagic);
    const std::string field_b = node::view_field(Store{MetricType::counter}, "",
                                                 encode_series_key("b", "b_total", {}, {}, "help"));
    const std::string slot_b = client->command({"HGET", view, field_b}).str;
    ASSERT_TRUE(node::parse_slot(slot_b));
    EXPECT_EQ(node::read_slot(bytes, *node::parse_slot(slot_b)), std::make_pair(2.0, 0.0));

    Reader reader(client, "gunicorn");  // one reader: its series are kept between scrapes
    Diagnostics read;
    EXPECT_TRUE(shows(reader.render(Format::kText, read), "b_total 2.0"));
    put(dir, "counter_1.db", "b", "b_total", 5);
    EXPECT_EQ(mirror.pass(diagnostics).written, 1u);
    std::string after = values();
    EXPECT_EQ(after.substr(0, 16), bytes.substr(0, 16));  // the same series: the same header
    EXPECT_TRUE(shows(reader.render(Format::kText, read), "b_total 5.0"));

    // `a` goes, `c` comes: a new header, and `c` takes the slot `a` left.
    ASSERT_EQ(::unlink(dir.file("counter_1.db").c_str()), 0);
    put(dir, "counter_2.db", "b", "b_total", 5);
    put(dir, "counter_2.db", "c", "c_total", 9);
    const PassReport report = mirror.pass(diagnostics);
    EXPECT_EQ(report.deleted, 1u);
    after = values();
    EXPECT_NE(after.substr(0, 16), bytes.substr(0, 16));
    EXPECT_EQ(after.size(), bytes.size());
    EXPECT_EQ(client->command({"HLEN", view}).integer, 2);
    const std::string out = reader.render(Format::kText, read);
    EXPECT_TRUE(shows(out, "c_total 9.0")) << out;
    EXPECT_TRUE(shows(out, "b_total 5.0")) << out;
    EXPECT_EQ(out.find("a_total"), std::string::npos) << out;
    EXPECT_TRUE(read.warnings.empty()) << read.warnings.front();
}

// Redis lost the values but not the view (eviction of one key): the mirror's
// next write finds no header and sends everything again.
TEST(RedisView, LostValuesAreSentAgain) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    put(dir, "counter_1.db", "a", "a_total", 1);
    put(dir, "counter_1.db", "b", "b_total", 2);
    ViewMirror mirror(client, options(dir, "host"));
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    client->command({"DEL", node::node_key("gunicorn", mirror.node(), node::kValues)});
    put(dir, "counter_1.db", "a", "a_total", 3);
    mirror.pass(diagnostics);
    ASSERT_FALSE(diagnostics.warnings.empty());
    EXPECT_NE(diagnostics.warnings.back().find("Redis lost keys"), std::string::npos);
    const std::string out = render(client);
    EXPECT_TRUE(shows(out, "a_total 3.0")) << out;
    EXPECT_TRUE(shows(out, "b_total 2.0")) << out;
}

TEST(RedisView, ValuesOfAnotherTypeAreNamed) {
    REQUIRE_REDIS();
    RedisServer server;
    auto client = connect(server);
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", 5);
    ViewMirror mirror(client, options(dir, "h"));
    Diagnostics diagnostics;
    mirror.pass(diagnostics);
    const std::string values = node::node_key("gunicorn", mirror.node(), node::kValues);
    client->command({"DEL", values});
    client->command({"HSET", values, "x", "1"});
    put(dir, "counter_1.db", "reqs", "reqs_total", 6);
    try {
        mirror.pass(diagnostics);
        FAIL() << "a hash where the values belong was written over";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(values + " is a hash, not a string"),
                  std::string::npos)
            << e.what();
    }
    Reader reader(client, "gunicorn");
    Diagnostics read;
    reader.render(Format::kText, read);
    ASSERT_FALSE(read.warnings.empty());
    EXPECT_NE(read.warnings.front().find("WRONGTYPE"), std::string::npos) << read.warnings.front();
}

}  // namespace
}  // namespace gpe::redis
