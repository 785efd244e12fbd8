// Redis Cluster: the slot function, the keys of commands, the cluster
// settings, and a real cluster of redis-server processes (3 primaries, 3
// replicas): routing, transactions, MOVED and ASK during a slot migration,
// per-node commands, and a primary SIGKILLed mid-run.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <thread>

#include "gpe/redis/client.hpp"
#include "gpe/redis/cluster.hpp"
#include "gpe/redis/options.hpp"
#include "redis_server.hpp"

namespace gpe::redis {
namespace {

using gpe::testing::RedisCluster;
using gpe::testing::RedisServer;

#define REQUIRE_REDIS() \
    if (!gpe::testing::redis_server_installed()) GTEST_SKIP() << "redis-server is not installed"

Options cluster_options(int port) {
    Options o;
    o.cluster.nodes = {{"127.0.0.1", port}};
    o.connect_timeout = 1;
    o.socket_timeout = 5;
    return o;
}

// ------------------------------------------------------------ no server --

TEST(RedisClusterSlot, KnownValuesAndHashTags) {
    EXPECT_EQ(key_slot("123456789"), 12739);  // the spec's CRC16 check value 0x31C3
    EXPECT_EQ(key_slot("foo"), 12182);
    EXPECT_EQ(key_slot(""), 0);
    EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
    EXPECT_EQ(key_slot("{user1000}.following"), key_slot("user1000"));
    EXPECT_EQ(key_slot("foo{bar}{zap}"), key_slot("bar"));   // the first tag only
    EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));  // up to the first '}'
    EXPECT_NE(key_slot("foo{}{bar}"), key_slot("bar"));      // an empty tag: the whole key
    EXPECT_EQ(key_slot("{}x"), key_slot(std::string_view("{}x")));
}

TEST(RedisClusterSlot, KeysOfCommands) {
    using V = std::vector<std::string_view>;
    EXPECT_EQ(command_keys({"HSET", "h", "f", "v"}), V{"h"});
    EXPECT_EQ(command_keys({"pexpireat", "k", "1"}), V{"k"});
    EXPECT_EQ(command_keys({"DEL", "a", "b"}), (V{"a", "b"}));
    EXPECT_EQ(command_keys({"MSET", "a", "1", "b", "2"}), (V{"a", "b"}));
    EXPECT_EQ(command_keys({"EVAL", "return 1", "2", "k1", "k2", "arg"}), (V{"k1", "k2"}));
    EXPECT_EQ(command_keys({"EVALSHA", "abc", "0", "arg"}), V{});
    EXPECT_EQ(command_keys({"FCALL", "f", "1", "k", "arg"}), V{"k"});
    EXPECT_EQ(command_keys({"ZUNIONSTORE", "d", "2", "a", "b"}), (V{"d", "a", "b"}));
    for (const char* keyless : {"PING", "TIME", "INFO", "MULTI", "EXEC", "SCAN"})
        EXPECT_EQ(command_keys({keyless, "x"}), V{}) << keyless;
    EXPECT_EQ(command_keys({"SCRIPT", "LOAD", "return 1"}), V{});
}

TEST(RedisClusterSlot, TransactionsAreOneUnitAndMayNotSpanSlots) {
    const std::vector<Command> batch{
        {"SET", "{a}1", "x"},     {"MULTI"}, {"HSET", "{t}x", "f", "1"},
        {"PEXPIRE", "{t}y", "5"}, {"EXEC"},  {"PING"}};
    const std::vector<RoutingUnit> units = split_units(batch);
    ASSERT_EQ(units.size(), 3u);
    EXPECT_EQ(units[0].slot, key_slot("a"));
    EXPECT_EQ(units[1].begin, 1u);
    EXPECT_EQ(units[1].end, 5u);
    EXPECT_EQ(units[1].slot, key_slot("t"));
    EXPECT_EQ(units[2].slot, -1);

    try {
        split_units({{"MULTI"}, {"SET", "alpha", "1"}, {"SET", "beta", "2"}, {"EXEC"}});
        FAIL() << "keys of two slots in one transaction";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), Error::Kind::kProtocol);
        const std::string what = e.what();
        EXPECT_NE(what.find("'alpha' (slot " + std::to_string(key_slot("alpha")) + ")"),
                  std::string::npos)
            << what;
        EXPECT_NE(what.find("'beta'"), std::string::npos) << what;
        EXPECT_NE(what.find("one MULTI transaction"), std::string::npos) << what;
    }
    try {
        split_units({{"DEL", "alpha", "beta"}});
        FAIL() << "DEL of two slots";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("one DEL command"), std::string::npos) << e.what();
    }
}

TEST(RedisClusterSettings, UrlNodesAndErrors) {
    Options o =
        parse_url("redis+cluster://u:p%40w@10.0.0.1:7000,[::1],node-c/0?ssl_cert_reqs=none");
    const std::vector<Address> seeds{{"10.0.0.1", 7000}, {"::1", 6379}, {"node-c", 6379}};
    EXPECT_EQ(o.cluster.nodes, seeds);
    EXPECT_EQ(o.password, "p@w");
    EXPECT_EQ(o.username, "u");
    EXPECT_FALSE(o.tls.enabled);
    EXPECT_EQ(describe(o), "cluster of 10.0.0.1:7000,[::1]:6379,node-c:6379/0 as u");
    EXPECT_TRUE(parse_url("rediss+cluster://h").tls.enabled);
    EXPECT_THROW(parse_url("redis+cluster://h/3"), std::invalid_argument);
    try {
        parse_url("redis+cluster://h:1,h:2/2");
        FAIL();
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("Redis Cluster has only database 0"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_THROW(parse_url("redis+cluster://h,,i"), std::invalid_argument);

    Options v;
    v.host = "seed";
    v.port = 7001;
    apply_cluster_settings(v, true, "");
    EXPECT_EQ(v.cluster.nodes, (std::vector<Address>{{"seed", 7001}}));
    apply_cluster_settings(v, false, "a:1,b");
    EXPECT_EQ(v.cluster.nodes, (std::vector<Address>{{"a", 1}, {"b", 6379}}));
    Options off;
    apply_cluster_settings(off, false, "");
    EXPECT_FALSE(off.cluster.enabled());

    Options both = v;
    both.sentinel.sentinels = {{"s", 26379}};
    both.sentinel.master = "m";
    EXPECT_THROW(check_cluster(both), std::invalid_argument);
    Options db = v;
    db.db = 1;
    EXPECT_THROW(check_cluster(db), std::invalid_argument);
    Options unix_socket;
    unix_socket.unix_socket = "/run/redis.sock";
    EXPECT_THROW(apply_cluster_settings(unix_socket, true, ""), std::invalid_argument);
}

// ------------------------------------------------------- a real cluster --

class RedisClusterTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        if (gpe::testing::redis_server_installed()) cluster_ = std::make_unique<RedisCluster>();
    }
    static void TearDownTestSuite() { cluster_.reset(); }
    void SetUp() override { REQUIRE_REDIS(); }

    static RedisCluster& cluster() { return *cluster_; }
    static Options options() { return cluster_options(cluster_->ports().back()); }

    // Moves `slot` to the primary at `to_port` with its keys, as redis-cli
    // --cluster reshard does; `finish` false stops after the keys given moved
    // (the slot stays MIGRATING / IMPORTING: ASK).
    static void migrate(int slot, int to_port, const std::vector<std::string>& keys, bool finish) {
        const int from_port = cluster().owner(slot);
        const std::string from = cluster().node_id(from_port);
        const std::string to = cluster().node_id(to_port);
        const std::string s = std::to_string(slot);
        ASSERT_FALSE(RedisCluster::command(to_port, {"CLUSTER", "SETSLOT", s, "IMPORTING", from})
                         .is_error());
        ASSERT_FALSE(RedisCluster::command(from_port, {"CLUSTER", "SETSLOT", s, "MIGRATING", to})
                         .is_error());
        for (const std::string& key : keys) {
            const Reply r = RedisCluster::command(
                from_port, {"MIGRATE", "127.0.0.1", std::to_string(to_port), key, "0", "5000"});
            ASSERT_FALSE(r.is_error()) << r.str;
        }
        if (!finish) return;
        for (int port : {to_port, from_port})
            ASSERT_FALSE(
                RedisCluster::command(port, {"CLUSTER", "SETSLOT", s, "NODE", to}).is_error());
        cluster().wait_ready();
    }

    // A primary other than the one serving `slot`.
    static int other_primary(int slot) {
        for (int port : cluster().ports()) {
            if (RedisCluster::command(port, {"ROLE"}).elements[0].str == "master" &&
                port != cluster().owner(slot))
                return port;
        }
        return 0;
    }

    static std::unique_ptr<RedisCluster> cluster_;
};

std::unique_ptr<RedisCluster> RedisClusterTest::cluster_;

TEST_F(RedisClusterTest, TheSlotIsClusterKeyslot) {
    std::mt19937 random(42);
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_int_distribution<int> length(0, 24);
    const int port = cluster().ports().front();
    for (int i = 0; i < 200; ++i) {
        std::string key;
        for (int n = length(random); n > 0; --n) key.push_back(static_cast<char>(byte(random)));
        if (i % 2 == 1) {  // a hash tag somewhere, sometimes empty or unclosed
            const std::string tag = i % 6 == 1 ? "{}" : i % 6 == 3 ? "{tag" : "{t" + key + "}";
            key.insert(key.size() / 2, tag);
        }
        const Reply answer = RedisCluster::command(port, {"CLUSTER", "KEYSLOT", key});
        ASSERT_EQ(answer.integer, key_slot(key)) << "key #" << i;
    }
}

TEST_F(RedisClusterTest, DiscoveryByShardsAndBySlotsAgree) {
    const int port = cluster().ports().front();
    const Address asked{"127.0.0.1", port};
    const SlotMap shards =
        slot_map_from_shards(RedisCluster::command(port, {"CLUSTER", "SHARDS"}), asked, false);
    const SlotMap slots =
        slot_map_from_slots(RedisCluster::command(port, {"CLUSTER", "SLOTS"}), asked);
    ASSERT_EQ(shards.primaries.size(), 3u);
    ASSERT_EQ(slots.primaries.size(), 3u);
    for (int slot = 0; slot < kSlotCount; ++slot) {
        ASSERT_NE(shards.primary_of(slot), nullptr) << slot;
        ASSERT_EQ(*shards.primary_of(slot), *slots.primary_of(slot)) << slot;
    }
    Client client(options());
    const std::vector<Address> primaries = client.primaries();
    ASSERT_EQ(primaries.size(), 3u);
    for (const Address& a : primaries)
        EXPECT_EQ(RedisCluster::command(a.port, {"ROLE"}).elements[0].str, "master") << a.port;
    EXPECT_TRUE(Client(Options{}).primaries().empty());  // not a cluster: no connection
}

TEST_F(RedisClusterTest, AMixedBatchIsRoutedByKeyAndAnsweredInOrder) {
    Client client(options());
    std::vector<Command> batch;
    for (int i = 0; i < 300; ++i) {
        batch.push_back({"SET", "mixed:" + std::to_string(i), std::to_string(i * 7)});
        if (i % 50 == 0) batch.push_back({"PING"});
    }
    for (int i = 0; i < 300; ++i) batch.push_back({"GET", "mixed:" + std::to_string(i)});
    const std::vector<Reply> replies = client.pipeline(batch);
    ASSERT_EQ(replies.size(), batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
        const std::string& name = batch[i][0];
        const std::string expected = name == "SET" ? "OK"
                                     : name == "PING"
                                         ? "PONG"
                                         : std::to_string(std::stoi(batch[i][1].substr(6)) * 7);
        ASSERT_EQ(replies[i].str, expected) << i << " " << name << " " << batch[i][1];
    }
    // Each key is where its slot's primary is: readable there without a redirection.
    std::set<int> nodes;
    for (int i = 0; i < 300; ++i) {
        const std::string key = "mixed:" + std::to_string(i);
        const int owner = cluster().owner(key_slot(key));
        nodes.insert(owner);
        EXPECT_EQ(RedisCluster::command(owner, {"GET", key}).str, std::to_string(i * 7)) << key;
    }
    EXPECT_EQ(nodes.size(), 3u);
    EXPECT_GT(client.server_time(), 1.6e9);
    EXPECT_EQ(client.command({"GET", "mixed:5"}).str, "35");
}

TEST_F(RedisClusterTest, ATransactionRunsOnItsSlotsPrimary) {
    Client client(options());
    const std::vector<Reply> replies = client.pipeline({{"SET", "before", "1"},
                                                        {"MULTI"},
                                                        {"HSET", "{inst-1}:counter", "a", "1"},
                                                        {"HSET", "{inst-1}:gauge", "b", "2"},
                                                        {"PEXPIRE", "{inst-1}:gauge", "60000"},
                                                        {"EXEC"},
                                                        {"HGETALL", "{inst-1}:counter"}});
    ASSERT_EQ(replies.size(), 7u);
    EXPECT_EQ(replies[1].str, "OK");
    EXPECT_EQ(replies[2].str, "QUEUED");
    ASSERT_EQ(replies[5].type, Reply::Type::kArray) << replies[5].str;
    ASSERT_EQ(replies[5].elements.size(), 3u);
    EXPECT_EQ(replies[5].elements[2].integer, 1);
    ASSERT_EQ(replies[6].elements.size(), 2u);
    const int owner = cluster().owner(key_slot("inst-1"));
    EXPECT_EQ(RedisCluster::command(owner, {"HGET", "{inst-1}:gauge", "b"}).str, "2");

    try {
        client.pipeline({{"MULTI"}, {"SET", "{x}1", "1"}, {"SET", "{y}2", "2"}, {"EXEC"}});
        FAIL() << "a transaction over two slots";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), Error::Kind::kProtocol);
        EXPECT_NE(std::string(e.what()).find("'{x}1'"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("'{y}2'"), std::string::npos) << e.what();
    }
    // A bug of the caller does not make the client wait.
    EXPECT_EQ(client.command({"GET", "before"}).str, "1");
}

TEST_F(RedisClusterTest, AMigratedSlotIsFollowedThroughMoved) {
    Client client(options());
    ASSERT_EQ(client.command({"SET", "{moving}a", "1"}).str, "OK");  // the map is known
    const int slot = key_slot("moving");
    const int to = other_primary(slot);
    migrate(slot, to, {"{moving}a"}, true);
    ASSERT_EQ(cluster().owner(slot), to);
    const std::vector<Reply> replies =
        client.pipeline({{"GET", "{moving}a"}, {"SET", "{moving}b", "2"}, {"PING"}});
    EXPECT_EQ(replies[0].str, "1");
    EXPECT_EQ(replies[1].str, "OK");
    EXPECT_EQ(RedisCluster::command(to, {"GET", "{moving}b"}).str, "2");
}

TEST_F(RedisClusterTest, AKeyMidMigrationIsFollowedThroughAsk) {
    Client client(options());
    ASSERT_EQ(
        client.pipeline({{"SET", "{asking}stays", "s"}, {"SET", "{asking}goes", "g"}}).back().str,
        "OK");
    const int slot = key_slot("asking");
    const int from = cluster().owner(slot);
    const int to = other_primary(slot);
    migrate(slot, to, {"{asking}goes"}, false);  // MIGRATING on `from`, IMPORTING on `to`
    ASSERT_EQ(RedisCluster::command(from, {"GET", "{asking}goes"}).str.substr(0, 3), "ASK");
    const std::vector<Reply> replies = client.pipeline(
        {{"GET", "{asking}stays"}, {"GET", "{asking}goes"}, {"SET", "{asking}new", "n"}});
    EXPECT_EQ(replies[0].str, "s");
    EXPECT_EQ(replies[1].str, "g");
    EXPECT_EQ(replies[2].str, "OK");
    // A new key of a migrating slot is made where the slot goes.
    EXPECT_EQ(RedisCluster::command(from, {"EXISTS", "{asking}new"}).integer, 0);
    // The rest moves, the slot is handed over: now a MOVED for the client.
    ASSERT_FALSE(RedisCluster::command(from, {"MIGRATE", "127.0.0.1", std::to_string(to),
                                              "{asking}stays", "0", "5000"})
                     .is_error());
    const std::string s = std::to_string(slot);
    const std::string to_id = cluster().node_id(to);
    for (int port : {to, from}) {
        const Reply r = RedisCluster::command(port, {"CLUSTER", "SETSLOT", s, "NODE", to_id});
        ASSERT_FALSE(r.is_error()) << r.str;
    }
    cluster().wait_ready();
    EXPECT_EQ(client.command({"GET", "{asking}new"}).str, "n");
    EXPECT_EQ(client.command({"GET", "{asking}stays"}).str, "s");
}

TEST_F(RedisClusterTest, PerNodeCommandsSeeThatNodesKeys) {
    Client client(options());
    std::vector<Command> writes;
    for (int i = 0; i < 100; ++i) writes.push_back({"SET", "scan:" + std::to_string(i), "v"});
    client.pipeline(writes);
    std::set<std::string> seen;
    for (const Address& node : client.primaries()) {
        std::string cursor = "0";
        do {
            const Reply page =
                client.pipeline_on(node, {{"SCAN", cursor, "MATCH", "scan:*"}}).front();
            ASSERT_EQ(page.elements.size(), 2u) << page.str;
            cursor = page.elements[0].str;
            for (const Reply& key : page.elements[1].elements) {
                EXPECT_EQ(cluster().owner(key_slot(key.str)), node.port) << key.str;
                EXPECT_TRUE(seen.insert(key.str).second) << key.str;
            }
        } while (cursor != "0");
    }
    EXPECT_EQ(seen.size(), 100u);
    try {
        client.pipeline_on({"127.0.0.1", 1}, {{"PING"}});
        FAIL() << "not a primary";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("not a primary of the cluster"), std::string::npos);
    }
}

TEST_F(RedisClusterTest, ErrorsNameTheCause) {
    RedisServer plain;  // not a cluster node
    Client not_cluster(cluster_options(plain.port()));
    try {
        not_cluster.ping();
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("cluster support disabled"), std::string::npos)
            << e.what();
    }
    const int nobody = gpe::testing::free_port();
    Options gone = cluster_options(nobody);
    gone.socket_timeout = 0.5;  // the budget for the cluster to come back
    gone.cluster.nodes.push_back({"127.0.0.1", gpe::testing::free_port()});
    Client unreachable(gone);
    try {
        unreachable.ping();
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), Error::Kind::kConnection);
        const std::string what = e.what();
        EXPECT_NE(what.find("no Redis Cluster node gave the slot map"), std::string::npos) << what;
        for (const Address& a : gone.cluster.nodes)
            EXPECT_NE(what.find("127.0.0.1:" + std::to_string(a.port)), std::string::npos) << what;
    }
}

// Its own cluster: it kills a primary.
TEST(RedisClusterFailover, WritesContinueAfterAPrimaryIsKilled) {
    REQUIRE_REDIS();
    RedisCluster cluster;
    Options o = cluster_options(cluster.ports().front());
    o.socket_timeout = 5;
    Client client(o);
    const std::string victim_key = "{victim}counter";
    const int victim = cluster.owner(key_slot("victim"));
    std::vector<std::string> keys{victim_key};
    for (int i = 0; i < 30; ++i) keys.push_back("failover:" + std::to_string(i));
    auto write = [&](int round) {
        std::vector<Command> batch;
        for (const std::string& key : keys) batch.push_back({"SET", key, std::to_string(round)});
        for (const Reply& r : client.pipeline(batch))
            if (r.str != "OK") throw Error(Error::Kind::kServer, "SET answered " + r.str);
    };
    for (int round = 0; round < 10; ++round) write(round);
    const uint64_t epoch = client.connection_epoch();
    cluster.kill(victim);
    int failed = 0;
    int last = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int round = 10; round < 40; ++round) {
        try {
            write(round);
            last = round;
        } catch (const Error& e) {  // the failover outlasted one call's socket timeout
            ++failed;
            ASSERT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30))
                << e.what();
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
    }
    EXPECT_EQ(last, 39);
    EXPECT_LE(failed, 3);
    for (const std::string& key : keys) EXPECT_EQ(client.command({"GET", key}).str, "39") << key;
    EXPECT_GT(client.connection_epoch(), epoch);  // the mirror resends everything
    const std::vector<Address> primaries = client.primaries();
    EXPECT_EQ(primaries.size(), 3u);
    for (const Address& a : primaries) EXPECT_NE(a.port, victim);
    const int promoted = cluster.owner(key_slot("victim"));
    EXPECT_NE(promoted, victim);
    EXPECT_EQ(RedisCluster::command(promoted, {"GET", victim_key}).str, "39");
}

}  // namespace
}  // namespace gpe::redis
