#include "gpe/redis/cluster.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <optional>
#include <thread>

namespace gpe::redis {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kFirstWait = 0.1;  // seconds; doubles, as Client's backoff
// Redirections followed in one call before the replies are returned as they
// are (a slot moving back and forth, or a node that keeps redirecting).
constexpr int kMaxRounds = 16;

constexpr std::array<uint16_t, 256> make_crc_table() {
    std::array<uint16_t, 256> table{};
    for (int byte = 0; byte < 256; ++byte) {
        uint16_t crc = static_cast<uint16_t>(byte << 8);
        for (int bit = 0; bit < 8; ++bit)
            crc = static_cast<uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
        table[byte] = crc;
    }
    return table;
}
constexpr std::array<uint16_t, 256> kCrcTable = make_crc_table();

uint16_t crc16(std::string_view data) {
    uint16_t crc = 0;
    for (const unsigned char c : data)
        crc = static_cast<uint16_t>((crc << 8) ^ kCrcTable[((crc >> 8) ^ c) & 0xff]);
    return crc;
}

std::string upper(std::string_view text) {
    std::string out(text);
    for (char& c : out)
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    return out;
}

template <size_t N>
bool one_of(const std::string& name, const std::array<std::string_view, N>& names) {
    return std::find(names.begin(), names.end(), name) != names.end();
}

constexpr std::array<std::string_view, 44> kKeyless = {
    "ACL",      "ASKING",    "AUTH",     "BGREWRITEAOF", "BGSAVE",    "CLIENT",  "CLUSTER",
    "COMMAND",  "CONFIG",    "DBSIZE",   "DEBUG",        "DISCARD",   "ECHO",    "EXEC",
    "FAILOVER", "FLUSHALL",  "FLUSHDB",  "FUNCTION",     "HELLO",     "INFO",    "KEYS",
    "LASTSAVE", "LATENCY",   "LOLWUT",   "MONITOR",      "MULTI",     "PING",    "PUBLISH",
    "QUIT",     "RANDOMKEY", "READONLY", "READWRITE",    "REPLICAOF", "RESET",   "ROLE",
    "SAVE",     "SCAN",      "SCRIPT",   "SELECT",       "SHUTDOWN",  "SLAVEOF", "SLOWLOG",
    "TIME",     "WAIT"};
// Every argument is a key.
constexpr std::array<std::string_view, 14> kAllKeys = {
    "DEL",    "EXISTS",      "MGET",   "PFCOUNT",     "PFMERGE", "SDIFF",  "SDIFFSTORE",
    "SINTER", "SINTERSTORE", "SUNION", "SUNIONSTORE", "TOUCH",   "UNLINK", "WATCH"};
// Two keys first.
constexpr std::array<std::string_view, 8> kTwoKeys = {"BLMOVE", "BRPOPLPUSH", "COPY",      "LMOVE",
                                                      "RENAME", "RENAMENX",   "RPOPLPUSH", "SMOVE"};
// numkeys at 2, keys after it.
constexpr std::array<std::string_view, 6> kScripts = {"EVAL",       "EVALSHA", "EVAL_RO",
                                                      "EVALSHA_RO", "FCALL",   "FCALL_RO"};
// A destination key, then numkeys and keys.
constexpr std::array<std::string_view, 3> kStores = {"ZDIFFSTORE", "ZINTERSTORE", "ZUNIONSTORE"};

// `count` keys from command[first], as many as there are.
void add_counted(const Command& command, size_t numkeys_at, size_t first,
                 std::vector<std::string_view>& keys) {
    if (numkeys_at >= command.size()) return;
    size_t count = 0;
    const std::string& text = command[numkeys_at];
    std::from_chars(text.data(), text.data() + text.size(), count);
    for (size_t i = first; i < command.size() && i < first + count; ++i) keys.push_back(command[i]);
}

std::string quoted(std::string_view key) {
    constexpr size_t kShown = 80;
    return "'" + std::string(key.substr(0, kShown)) + (key.size() > kShown ? "...'" : "'");
}

bool is_multi(const Command& command) { return upper(command[0]) == "MULTI"; }
bool ends_multi(const Command& command) {
    const std::string name = upper(command[0]);
    return name == "EXEC" || name == "DISCARD";
}

std::string name_of(const Address& node) { return format_sentinels({node}); }

// "host:port" of a MOVED or ASK error ("ASK 3999 127.0.0.1:6381").
std::optional<Address> redirect_target(std::string_view error) {
    const size_t space = error.rfind(' ');
    const size_t colon = error.rfind(':');
    if (space == std::string_view::npos || colon == std::string_view::npos || colon < space)
        return std::nullopt;
    Address out;
    out.host = std::string(error.substr(space + 1, colon - space - 1));
    const std::string_view port = error.substr(colon + 1);
    std::from_chars(port.data(), port.data() + port.size(), out.port);
    if (out.port <= 0 || out.port > 65535) return std::nullopt;
    if (out.host.size() > 2 && out.host.front() == '[')
        out.host = out.host.substr(1, out.host.size() - 2);
    return out;
}

bool retryable(const Error& error) {
    return error.kind() == Error::Kind::kConnection || error.kind() == Error::Kind::kTimeout;
}

// A RESP2 map (flat array of names and values): the value of `name`.
const Reply* field(const Reply& map, std::string_view name) {
    for (size_t i = 0; i + 1 < map.elements.size(); i += 2)
        if (map.elements[i].str == name) return &map.elements[i + 1];
    return nullptr;
}

long long integer_of(const Reply* reply) {
    if (reply == nullptr) return 0;
    if (reply->type == Reply::Type::kInteger) return reply->integer;
    long long value = 0;
    std::from_chars(reply->str.data(), reply->str.data() + reply->str.size(), value);
    return value;
}

[[noreturn]] void bad_map(const std::string& what) {
    throw Error(Error::Kind::kProtocol, "unexpected answer to CLUSTER " + what);
}

// Adds `node` as a primary of slots [first, last] (once per address).
void claim(SlotMap& map, const Address& node, long long first, long long last,
           const char* command) {
    if (first < 0 || last >= kSlotCount || first > last) bad_map(command);
    auto it = std::find(map.primaries.begin(), map.primaries.end(), node);
    const int index = static_cast<int>(it - map.primaries.begin());
    if (it == map.primaries.end()) map.primaries.push_back(node);
    std::fill(map.owner.begin() + first, map.owner.begin() + last + 1, index);
}

// Where a node of CLUSTER SHARDS is reached: its endpoint (the announced
// hostname or IP), its IP, or the node asked; its TLS port with TLS.
Address shard_node_address(const Reply& node, const Address& asked, bool tls) {
    Address out;
    for (const char* name : {"endpoint", "ip"}) {
        const Reply* value = field(node, name);
        if (value != nullptr && !value->str.empty() && value->str != "?") {
            out.host = value->str;
            break;
        }
    }
    if (out.host.empty()) out.host = asked.host;
    const Reply* tls_port = field(node, "tls-port");
    const Reply* port = tls && tls_port != nullptr ? tls_port : field(node, "port");
    out.port = static_cast<int>(integer_of(port != nullptr ? port : tls_port));
    if (out.port <= 0 || out.port > 65535) bad_map("SHARDS (a node without a port)");
    return out;
}

}  // namespace

int key_slot(std::string_view key) {
    if (const size_t open = key.find('{'); open != std::string_view::npos) {
        const size_t close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1)
            key = key.substr(open + 1, close - open - 1);
    }
    return crc16(key) & (kSlotCount - 1);
}

std::vector<std::string_view> command_keys(const Command& command) {
    std::vector<std::string_view> keys;
    if (command.size() < 2) return keys;
    const std::string name = upper(command[0]);
    if (one_of(name, kKeyless)) return keys;
    if (one_of(name, kAllKeys)) {
        keys.assign(command.begin() + 1, command.end());
    } else if (name == "MSET" || name == "MSETNX") {
        for (size_t i = 1; i < command.size(); i += 2) keys.push_back(command[i]);
    } else if (one_of(name, kTwoKeys)) {
        keys.assign(command.begin() + 1, command.begin() + std::min<size_t>(3, command.size()));
    } else if (one_of(name, kScripts)) {
        add_counted(command, 2, 3, keys);
    } else if (one_of(name, kStores)) {
        keys.push_back(command[1]);
        add_counted(command, 2, 3, keys);
    } else if (name == "OBJECT" || name == "MEMORY") {
        if (command.size() > 2) keys.push_back(command[2]);
    } else {
        keys.push_back(command[1]);
    }
    return keys;
}

std::vector<RoutingUnit> split_units(const std::vector<Command>& commands) {
    std::vector<RoutingUnit> units;
    for (size_t i = 0; i < commands.size();) {
        if (commands[i].empty()) throw Error(Error::Kind::kProtocol, "empty Redis command");
        RoutingUnit unit{i, i + 1, -1};
        if (is_multi(commands[i])) {
            while (unit.end < commands.size() && !commands[unit.end].empty() &&
                   !ends_multi(commands[unit.end]))
                ++unit.end;
            unit.end = std::min(unit.end + 1, commands.size());
        }
        std::string_view first_key;
        for (size_t c = unit.begin; c < unit.end; ++c) {
            if (commands[c].empty()) throw Error(Error::Kind::kProtocol, "empty Redis command");
            for (const std::string_view key : command_keys(commands[c])) {
                const int slot = key_slot(key);
                if (unit.slot < 0) {
                    unit.slot = slot;
                    first_key = key;
                } else if (slot != unit.slot) {
                    const std::string in = unit.end - unit.begin > 1
                                               ? "one MULTI transaction"
                                               : "one " + upper(commands[c][0]) + " command";
                    throw Error(Error::Kind::kProtocol,
                                "keys " + quoted(first_key) + " (slot " +
                                    std::to_string(unit.slot) + ") and " + quoted(key) + " (slot " +
                                    std::to_string(slot) + ") in " + in +
                                    ": in Redis Cluster they must share a hash slot (give them "
                                    "one hash tag {...})");
                }
            }
        }
        units.push_back(unit);
        i = unit.end;
    }
    return units;
}

void SlotMap::assign(int slot, const Address& node) {
    if (slot < 0 || slot >= kSlotCount) return;
    auto it = std::find(primaries.begin(), primaries.end(), node);
    if (it == primaries.end()) it = primaries.insert(primaries.end(), node);
    owner[static_cast<size_t>(slot)] = static_cast<int>(it - primaries.begin());
}

const Address* SlotMap::primary_of(int slot) const {
    if (slot < 0) return primaries.empty() ? nullptr : &primaries.front();
    const int index = owner[static_cast<size_t>(slot)];
    return index < 0 ? nullptr : &primaries[static_cast<size_t>(index)];
}

SlotMap slot_map_from_shards(const Reply& reply, const Address& asked, bool tls) {
    if (reply.type != Reply::Type::kArray) bad_map("SHARDS");
    SlotMap map;
    for (const Reply& shard : reply.elements) {
        const Reply* slots = field(shard, "slots");
        const Reply* nodes = field(shard, "nodes");
        if (slots == nullptr || nodes == nullptr || slots->elements.size() % 2 != 0)
            bad_map("SHARDS");
        if (slots->elements.empty()) continue;  // a primary without slots serves no key
        const Reply* primary = nullptr;
        for (const Reply& node : nodes->elements) {
            const Reply* role = field(node, "role");
            if (role != nullptr && role->str == "master") primary = &node;
        }
        if (primary == nullptr) continue;  // mid-failover: no slot served until one is
        const Address at = shard_node_address(*primary, asked, tls);
        for (size_t i = 0; i < slots->elements.size(); i += 2) {
            claim(map, at, integer_of(&slots->elements[i]), integer_of(&slots->elements[i + 1]),
                  "SHARDS");
        }
    }
    return map;
}

SlotMap slot_map_from_slots(const Reply& reply, const Address& asked) {
    if (reply.type != Reply::Type::kArray) bad_map("SLOTS");
    SlotMap map;
    for (const Reply& range : reply.elements) {
        if (range.elements.size() < 3 || range.elements[2].elements.size() < 2) bad_map("SLOTS");
        const Reply& node = range.elements[2];  // the primary; replicas follow
        Address at{node.elements[0].str, static_cast<int>(integer_of(&node.elements[1]))};
        if (at.host.empty() || at.host == "?") at.host = asked.host;
        if (at.port <= 0 || at.port > 65535) bad_map("SLOTS (a node without a port)");
        claim(map, at, integer_of(&range.elements[0]), integer_of(&range.elements[1]), "SLOTS");
    }
    return map;
}

// What one pass of pipeline() leaves: the units to send again and whether
// to wait before (the cluster is recovering), with the connection failure
// that made it, if one did.
struct Cluster::Round {
    std::vector<size_t> todo;                    // units to send, in order
    std::vector<std::optional<Address>> asking;  // per unit: ASK target to send it to next
    // Slots a node answered MOVED for, and the node it named: fresher than
    // the map of a node that has not heard of the move yet.
    std::vector<std::pair<int, Address>> moved;
    std::vector<bool> asked;  // per unit: was sent with ASKING once
    std::vector<size_t> retry;
    bool wait = false;
    std::optional<Error> lost;
};

Cluster::Cluster(Options options) : options_(std::move(options)), seeds_(options_.cluster.nodes) {
    options_.cluster = {};
    options_.sentinel = {};
    options_.unix_socket.clear();
    options_.db = 0;
}

Cluster::~Cluster() = default;

Connection& Cluster::connection(const Address& node) {
    std::unique_ptr<Connection>& slot = connections_[name_of(node)];
    if (!slot) {
        Options o = options_;
        o.host = node.host;
        o.port = node.port;
        try {
            slot = std::make_unique<Connection>(o);
        } catch (...) {
            connections_.erase(name_of(node));
            throw;
        }
        ++connections_made_;
    }
    return *slot;
}

void Cluster::drop(const Address& node) { connections_.erase(name_of(node)); }

bool Cluster::is_primary(const Address& node) const {
    return std::find(map_.primaries.begin(), map_.primaries.end(), node) != map_.primaries.end();
}

SlotMap Cluster::ask_map(const Address& node) {
    Connection& c = connection(node);
    const Reply shards = c.pipeline({{"CLUSTER", "SHARDS"}}).front();
    if (!shards.is_error()) return slot_map_from_shards(shards, node, options_.tls.enabled);
    const std::string said = shards.str;
    if (said.find("cluster support disabled") != std::string::npos) {
        throw Error(Error::Kind::kProtocol,
                    "Redis at " + name_of(node) +
                        " is not a Redis Cluster node (cluster support disabled): unset "
                        "REDIS_CLUSTER / REDIS_CLUSTER_NODES or use a cluster node");
    }
    if (upper(said).find("UNKNOWN SUBCOMMAND") == std::string::npos)
        throw Error(Error::Kind::kServer, "CLUSTER SHARDS: " + said);
    const Reply slots = c.pipeline({{"CLUSTER", "SLOTS"}}).front();  // before Redis 7
    if (slots.is_error()) throw Error(Error::Kind::kServer, "CLUSTER SLOTS: " + slots.str);
    return slot_map_from_slots(slots, node);
}

void Cluster::discover() {
    // Nodes already connected first (no new connection, no wait on a dead
    // one), then the other primaries, then the seeds.
    std::vector<Address> candidates;
    auto add = [&](const Address& a) {
        if (std::find(candidates.begin(), candidates.end(), a) == candidates.end())
            candidates.push_back(a);
    };
    for (const Address& a : map_.primaries)
        if (connections_.contains(name_of(a))) add(a);
    for (const Address& a : map_.primaries) add(a);
    for (const Address& a : seeds_) add(a);
    std::string failures;
    bool all_refused_password = true;
    for (const Address& node : candidates) {
        try {
            SlotMap map = ask_map(node);
            if (map.primaries.empty())
                throw Error(Error::Kind::kServer, "it knows no primary serving a slot");
            set_map(std::move(map));
            return;
        } catch (const Error& e) {
            if (e.kind() == Error::Kind::kProtocol) throw;  // not a cluster: no use asking on
            if (e.kind() != Error::Kind::kServer) drop(node);
            failures += (failures.empty() ? "" : "; ") + name_of(node) + ": " + e.what();
            all_refused_password = all_refused_password && e.kind() == Error::Kind::kAuthentication;
        }
    }
    throw Error(all_refused_password ? Error::Kind::kAuthentication : Error::Kind::kConnection,
                "no Redis Cluster node gave the slot map: " + failures);
}

void Cluster::set_map(SlotMap map) {
    map_ = std::move(map);
    stale_ = false;
    // A node that is no primary (a seed that is a replica, a primary demoted
    // after a failover) is never written to: let its connection go.
    std::erase_if(connections_, [&](const auto& entry) {
        return std::none_of(map_.primaries.begin(), map_.primaries.end(),
                            [&](const Address& a) { return name_of(a) == entry.first; });
    });
}

std::vector<std::pair<Address, std::vector<size_t>>> Cluster::by_node(
    const std::vector<RoutingUnit>& units, Round& round, std::vector<Reply>& replies) {
    std::vector<std::pair<Address, std::vector<size_t>>> out;
    for (const size_t u : round.todo) {
        const Address* target =
            round.asking[u] ? &*round.asking[u] : map_.primary_of(units[u].slot);
        if (target == nullptr) {  // a slot no primary serves (yet): as CLUSTERDOWN
            Reply down;
            down.type = Reply::Type::kError;
            down.str = "CLUSTERDOWN Hash slot " + std::to_string(units[u].slot) + " not served";
            std::fill(replies.begin() + units[u].begin, replies.begin() + units[u].end, down);
            round.retry.push_back(u);
            round.wait = true;
            stale_ = true;
            continue;
        }
        auto it = std::find_if(out.begin(), out.end(),
                               [&](const auto& entry) { return entry.first == *target; });
        if (it == out.end()) it = out.insert(out.end(), {*target, {}});
        it->second.push_back(u);
    }
    return out;
}

void Cluster::take_replies(size_t u, const RoutingUnit& unit, std::vector<Reply>& got, size_t& at,
                           Round& round, std::vector<Reply>& replies) {
    if (round.asking[u]) {
        ++at;  // ASKING's OK
        round.asking[u].reset();
        round.asked[u] = true;
    }
    std::optional<Address> ask;
    bool again = false;
    for (size_t i = unit.begin; i < unit.end; ++i, ++at) {
        replies[i] = std::move(got[at]);
        if (!replies[i].is_error() || again || ask) continue;
        // In a transaction the queued command's redirection is the one to follow.
        const std::string& said = replies[i].str;
        if (said.starts_with("MOVED ")) {
            stale_ = again = true;
            if (auto to = redirect_target(said)) round.moved.emplace_back(unit.slot, *to);
        } else if (said.starts_with("ASK ") && !round.asked[u]) {
            ask = redirect_target(said);
        } else if (said.starts_with("TRYAGAIN") || said.starts_with("CLUSTERDOWN")) {
            again = round.wait = true;
            stale_ = stale_ || said.starts_with("CLUSTERDOWN");
        }
    }
    if (ask) round.asking[u] = ask;
    if (again || ask) round.retry.push_back(u);
}

void Cluster::run_round(const std::vector<Command>& commands, const std::vector<RoutingUnit>& units,
                        Round& round, std::vector<Reply>& replies) {
    for (const auto& [node, list] : by_node(units, round, replies)) {
        std::vector<Command> batch;
        for (const size_t u : list) {
            if (round.asking[u]) batch.push_back({"ASKING"});
            batch.insert(batch.end(), commands.begin() + units[u].begin,
                         commands.begin() + units[u].end);
        }
        std::vector<Reply> got;
        try {
            got = connection(node).pipeline(batch);
        } catch (const Error& e) {
            if (!retryable(e)) throw;
            drop(node);  // a failover, perhaps: ask the cluster again, then retry
            stale_ = true;
            round.lost = e;
            round.wait = true;
            for (const size_t u : list) round.asking[u].reset();
            round.retry.insert(round.retry.end(), list.begin(), list.end());
            continue;
        }
        size_t at = 0;
        for (const size_t u : list) take_replies(u, units[u], got, at, round, replies);
    }
}

std::vector<Reply> Cluster::pipeline(const std::vector<Command>& commands) {
    const std::vector<RoutingUnit> units = split_units(commands);
    std::vector<Reply> replies(commands.size());
    Round round;
    round.todo.resize(units.size());
    for (size_t u = 0; u < units.size(); ++u) round.todo[u] = u;
    round.asking.resize(units.size());
    round.asked.resize(units.size(), false);
    const auto deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(options_.socket_timeout));
    double wait = kFirstWait;
    for (int pass = 1; !round.todo.empty(); ++pass) {
        round.retry.clear();
        round.wait = false;
        round.lost.reset();
        try {
            if (stale_) discover();
            for (const auto& [slot, node] : round.moved) map_.assign(slot, node);
            round.moved.clear();
            run_round(commands, units, round, replies);
        } catch (const Error& e) {
            if (!retryable(e)) throw;  // a wrong password, not a cluster: no retry helps
            round.lost = e;
            round.wait = true;
            round.retry = round.todo;
        }
        round.todo = round.retry;
        if (round.todo.empty()) break;
        const auto left = deadline - Clock::now();
        if (pass >= kMaxRounds || (round.wait && left <= Clock::duration::zero())) {
            if (!round.lost) break;  // the redirections or CLUSTERDOWN replies as they are
            throw Error(round.lost->kind(),
                        std::string(round.lost->what()) +
                            "; the cluster did not recover within the socket timeout (" +
                            format_seconds(options_.socket_timeout) + " s)");
        }
        if (round.wait) {
            std::this_thread::sleep_for(std::min<Clock::duration>(
                left,
                std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait))));
            wait *= 2;
        }
    }
    return replies;
}

std::vector<Reply> Cluster::pipeline_on(const Address& node, const std::vector<Command>& commands) {
    if (stale_ || !is_primary(node)) discover();
    if (!is_primary(node)) {
        throw Error(Error::Kind::kConnection,
                    "Redis at " + name_of(node) + " is not a primary of the cluster (any more)");
    }
    try {
        return connection(node).pipeline(commands);
    } catch (const Error& e) {
        if (retryable(e)) {
            drop(node);
            stale_ = true;
        }
        throw;
    }
}

std::vector<Address> Cluster::primaries() {
    if (stale_) discover();
    return map_.primaries;
}

void Cluster::abandon() {
    for (auto& [name, connection] : connections_) connection->abandon();
    connections_.clear();
    stale_ = true;
}

}  // namespace gpe::redis
