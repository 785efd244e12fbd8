// Redis Cluster, as the cluster specification describes it: the hash slot of
// a key, the keys of a command, the slot map (CLUSTER SHARDS, or CLUSTER
// SLOTS before Redis 7) and a router that runs a pipeline on the primaries
// owning its keys, following MOVED and ASK redirections and a failover.
// Client (client.hpp) uses it when Options::cluster is set.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gpe/redis/connection.hpp"

namespace gpe::redis {

inline constexpr int kSlotCount = 16384;

// CRC16 (XMODEM) mod 16384 of the key's hash tag - what lies between its
// first '{' and the next '}', if not empty - or else of the whole key: the
// answer of CLUSTER KEYSLOT.
int key_slot(std::string_view key);

// The arguments of `command` that are keys, as a cluster node checks them:
// none for keyless commands (PING, TIME, INFO, SCRIPT, SCAN, MULTI, EXEC,
// ...), the keys after numkeys for EVAL, EVALSHA and FCALL, every argument
// for DEL, EXISTS, MGET, ..., else the first argument.
std::vector<std::string_view> command_keys(const Command& command);

// A command, or a MULTI ... EXEC batch (to the end of the commands if no
// EXEC or DISCARD ends it), as it is routed: commands [begin, end), the slot
// of their keys, -1 when they have none.
struct RoutingUnit {
    size_t begin = 0;
    size_t end = 0;
    int slot = -1;
};

// The units of a pipeline. Throws Error(kProtocol) naming two keys in
// different slots in one command or one transaction: a cluster refuses it
// (CROSSSLOT), so it is a bug of the caller, not something to retry.
std::vector<RoutingUnit> split_units(const std::vector<Command>& commands);

// Which primary serves each slot.
struct SlotMap {
    std::vector<Address> primaries;
    std::vector<int> owner = std::vector<int>(kSlotCount, -1);  // into primaries; -1: none

    // nullptr when no primary serves the slot; for -1 (keyless) the first primary.
    const Address* primary_of(int slot) const;
    // `node` serves `slot` (a MOVED answer said so).
    void assign(int slot, const Address& node);
};

// The map in a reply to CLUSTER SHARDS or CLUSTER SLOTS asked of the node at
// `asked` (a node announcing no endpoint is that one). `tls`: a node's TLS
// port where it announces one. Throws Error(kProtocol) for another shape.
SlotMap slot_map_from_shards(const Reply& reply, const Address& asked, bool tls);
SlotMap slot_map_from_slots(const Reply& reply, const Address& asked);

// The nodes of a cluster, one connection per primary (made when first
// needed, with the Options' TLS, credentials, timeouts and reply limit).
// Not thread-safe: Client serialises the calls.
class Cluster {
  public:
    // `options.cluster.nodes` are the seeds; nothing is connected yet.
    explicit Cluster(Options options);
    ~Cluster();
    Cluster(const Cluster&) = delete;
    Cluster& operator=(const Cluster&) = delete;

    // Connection::pipeline across the cluster: each command (a MULTI ... EXEC
    // batch as one) runs on the primary of its keys' slot, keyless ones on
    // one primary (so SCRIPT LOAD loads on that one only: prefer EVAL, which
    // every node caches); replies in the commands' order. MOVED refreshes the map
    // and retries, ASK retries once with ASKING on the node named; a lost
    // connection, CLUSTERDOWN and TRYAGAIN are retried after a rediscovery
    // with waits of 0.1 s doubling, within the socket timeout. Throws
    // Error(kProtocol) naming two keys of one transaction or command in
    // different slots, Error as Connection when the cluster stays unreachable.
    std::vector<Reply> pipeline(const std::vector<Command>& commands);

    // The commands on one primary, as they are (no routing): for what is
    // per node, such as SCAN. Throws Error(kConnection) when `node` is not
    // a primary of the cluster (any more).
    std::vector<Reply> pipeline_on(const Address& node, const std::vector<Command>& commands);

    // The primaries, discovered if not yet known.
    std::vector<Address> primaries();

    // How many node connections were made so far (Client::connection_epoch).
    uint64_t connections_made() const { return connections_made_; }

    // In a forked child: let go of every node connection (see Connection::abandon).
    void abandon();

  private:
    struct Round;  // one pass of pipeline(): what was sent where, what to retry

    Connection& connection(const Address& node);
    void drop(const Address& node);
    void discover();
    SlotMap ask_map(const Address& node);
    void set_map(SlotMap map);
    bool is_primary(const Address& node) const;
    // The units of round.todo by target node, in order; a unit of a slot no
    // primary serves is answered CLUSTERDOWN and left to retry.
    std::vector<std::pair<Address, std::vector<size_t>>> by_node(
        const std::vector<RoutingUnit>& units, Round& round, std::vector<Reply>& replies);
    // Unit u's replies from a node's `got` at `at`; redirected units to retry.
    void take_replies(size_t u, const RoutingUnit& unit, std::vector<Reply>& got, size_t& at,
                      Round& round, std::vector<Reply>& replies);
    void run_round(const std::vector<Command>& commands, const std::vector<RoutingUnit>& units,
                   Round& round, std::vector<Reply>& replies);

    Options options_;  // of one node: host and port set per connection
    std::vector<Address> seeds_;
    SlotMap map_;
    bool stale_ = true;  // the map must be (re)discovered before use
    std::map<std::string, std::unique_ptr<Connection>> connections_;  // by "host:port"
    uint64_t connections_made_ = 0;
};

}  // namespace gpe::redis
