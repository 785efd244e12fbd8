#include "gpe/redis/fleet.hpp"

#include "gpe/redis/layout.hpp"
#include "gpe/strings.hpp"

namespace gpe::redis {

namespace {

using namespace std::string_view_literals;

constexpr const char* kDayMs = "86400000";

// KEYS: view, marker, alive, folding, values, folding values. ARGV: only
// if expired ("1"), the retired marker word. Answers "alive", "retired"
// (before) or "ok".
constexpr const char* kRetireScript = R"lua(
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return 'alive' end
local marker = redis.pcall('GET', KEYS[2])
local word = ARGV[2] .. ':'
if type(marker) == 'string' and string.sub(marker, 1, #word) == word then return 'retired' end
for _, pair in ipairs({{1, 4}, {5, 6}}) do
  if redis.call('EXISTS', KEYS[pair[1]]) == 1 then
    redis.call('RENAME', KEYS[pair[1]], KEYS[pair[2]])
    redis.call('PERSIST', KEYS[pair[2]])
  end
end
-- Kept until the fold is done (then a day): it counts the chunks taken.
redis.call('SET', KEYS[2], word .. '0')
redis.call('DEL', KEYS[3])
return 'ok'
)lua";

// Lua: fmt(x), a double as text that reads back exactly (format_value's
// form), for the scripts that write values as text.
#define GPE_LUA_FMT                                                                           \
    "local function fmt(x)\n"                                                                 \
    "  if x ~= x then return 'nan' elseif x == math.huge then return 'inf'\n"                 \
    "  elseif x == -math.huge then return '-inf' end\n"                                       \
    "  if math.floor(x) == x and math.abs(x) < 1e15 then return string.format('%d', x) end\n" \
    "  return string.format('%.17g', x)\n"                                                    \
    "end\n"

// KEYS: folding, chunk, marker, folding values. ARGV: node, fields per
// chunk, the retired word, the chunk id field. Moves up to that many
// fields of `folding` into `chunk`, each with its slot's value as
// view_value text ("v", or "v t" when it has a timestamp; a field whose
// slot is missing is dropped; without values, fields hold the text).
// Answers the chunk (field, value, ..., with its id among them), or
// nothing when `folding` is empty.
constexpr const char* kTakeScript = R"lua(
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return redis.call('HGETALL', KEYS[2]) end
local word = ARGV[3] .. ':'
local marker = redis.call('GET', KEYS[3]) or (word .. '0')
local taken = tonumber(string.sub(marker, #word + 1)) or 0
local limit = tonumber(ARGV[2])
local values = redis.call('GET', KEYS[4]) or ''
)lua" GPE_LUA_FMT R"lua(local function text(slot)
  -- A node mirrored before the values key existed held the text itself.
  if string.sub(values, 1, 8) ~= 'gpeview1' then return slot end
  local at = 16 + 16 * (tonumber(slot) or -1)
  if at < 16 or at + 16 > #values then return nil end
  local v, t = struct.unpack('<d<d', values, at + 1)
  if t ~= 0 then return fmt(v) .. ' ' .. fmt(t) end
  return fmt(v)
end
local pairs_, names = {}, {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', limit)
  cursor = page[1]
  local items = page[2]
  for i = 1, #items, 2 do
    if #names < limit then
      names[#names + 1] = items[i]
      local value = text(items[i + 1])
      if value then
        pairs_[#pairs_ + 1] = items[i]
        pairs_[#pairs_ + 1] = value
      end
    end
  end
until cursor == '0' or #names >= limit
if #names == 0 then return {} end
pairs_[#pairs_ + 1] = ARGV[4]
pairs_[#pairs_ + 1] = ARGV[1] .. '#' .. taken
redis.call('HSET', KEYS[2], unpack(pairs_))
redis.call('HDEL', KEYS[1], unpack(names))
redis.call('SET', KEYS[3], word .. (taken + 1))
return redis.call('HGETALL', KEYS[2])
)lua";

// KEYS: archive, applied. ARGV: chunk id, fold rules, then field, value,
// ... Values are "v" or "v t" (view_value); sums are taken in doubles and
// written so that they read back exactly.
constexpr const char* kApplyScript = R"lua(
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local rules = {}
for store, rule in string.gmatch(ARGV[2], '(%S+)=(%S+)') do rules[store] = rule end
local function num(s)
  if s == 'inf' then return math.huge elseif s == '-inf' then return -math.huge
  elseif s == 'nan' then return 0 / 0 end
  return tonumber(s)
end
)lua" GPE_LUA_FMT R"lua(local function split(text)
  local v, t = string.match(text, '^(%S+) (%S+)$')
  if v then return v, t end
  return text, nil
end
for i = 3, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local rule = rules[string.match(field, '^([^:]+):') or ''] or 'drop'
  if rule ~= 'drop' then
    local old = redis.call('HGET', KEYS[1], field)
    local new = value
    if old then
      local v, vt = split(value)
      local o, ot = split(old)
      local a, b = num(v), num(o)
      if rule == 'sum' then
        if a and b then new = fmt(a + b) end
      elseif rule == 'min' then
        if a and b and b <= a then new = old end
      elseif rule == 'max' then
        if a and b and b >= a then new = old end
      elseif rule == 'mostrecent' then
        if (num(vt or '0') or 0) <= (num(ot or '0') or 0) then new = old end
      end
    end
    redis.call('HSET', KEYS[1], field, new)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now, ARGV[1])
-- Readers ask for the ids of chunks they saw moments ago: a day is plenty.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 86400000)
return 1
)lua";

// KEYS: chunk, folding, marker, folding values. ARGV: chunk id ("" for
// none), id field, how long the marker stays once the fold is done (ms).
// Answers 1 when the node is folded completely.
constexpr const char* kDoneScript = R"lua(
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  return 1
end
return 0
)lua";

// KEYS: the node set. ARGV: how many. The nodes whose deadline passed, by
// the server's clock.
constexpr const char* kExpiredScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[1]))
)lua";

Reply run(Client& client, const Command& command) {
    Reply reply = client.command(command);
    if (reply.is_error()) {
        throw Error(Error::Kind::kServer, concat("folding a gone instance failed: ", reply.str));
    }
    return reply;
}

struct NodeKeys {
    std::string view, values, marker, alive, folding, folding_values, chunk;
    NodeKeys(const std::string& prefix, const std::string& node)
        : view(node::node_key(prefix, node, node::kView)),
          values(node::node_key(prefix, node, node::kValues)),
          marker(node::node_key(prefix, node, node::kMarker)),
          alive(node::node_key(prefix, node, node::kAlive)),
          folding(node::node_key(prefix, node, node::kFolding)),
          folding_values(node::node_key(prefix, node, node::kFoldingValues)),
          chunk(node::node_key(prefix, node, node::kChunk)) {}
};

// Moves one chunk into the archive; the chunk's id, or "" when `folding`
// was empty.
std::string fold_chunk(Client& client, const std::string& prefix, const std::string& node,
                       const NodeKeys& keys) {
    const Reply taken =
        run(client, {"EVAL", kTakeScript, "4", keys.folding, keys.chunk, keys.marker,
                     keys.folding_values, node, std::to_string(kChunkFields),
                     std::string(node::kRetired), std::string(node::kChunkId)});
    if (taken.type != Reply::Type::kArray || taken.elements.empty()) return "";
    Command apply{"EVAL",
                  kApplyScript,
                  "2",
                  node::fleet_key(prefix, node::kArchive),
                  node::fleet_key(prefix, node::kApplied),
                  "",
                  fleet_fold_rules()};
    std::string id;
    for (size_t i = 0; i + 1 < taken.elements.size(); i += 2) {
        const std::string& field = taken.elements[i].str;
        if (field == node::kChunkId) {
            id = taken.elements[i + 1].str;
            continue;
        }
        apply.push_back(field);
        apply.push_back(taken.elements[i + 1].str);
    }
    if (id.empty()) throw Error(Error::Kind::kProtocol, "a chunk without its id in " + keys.chunk);
    apply[5] = id;
    run(client, apply);
    return id;
}

}  // namespace

std::string fleet_fold_rules() {
    std::string out;
    for (const Store store : kStores) {
        if (!out.empty()) out.push_back(' ');
        out += concat(store_name(store), "=", name(fleet_fold_rule(store)));
    }
    return out;
}

FleetReport fold_node(Client& client, const std::string& prefix, const std::string& node,
                      bool only_if_expired, size_t max_chunks) {
    FleetReport report;
    const NodeKeys keys(prefix, node);
    const Reply retired = run(client, {"EVAL", kRetireScript, "6", keys.view, keys.marker,
                                       keys.alive, keys.folding, keys.values, keys.folding_values,
                                       only_if_expired ? "1" : "0", std::string(node::kRetired)});
    if (retired.str == "alive") return report;
    if (retired.str == "ok") report.retired = 1;
    for (size_t n = 0;; ++n) {
        if (n == max_chunks) {
            report.more = true;
            return report;
        }
        const std::string id = fold_chunk(client, prefix, node, keys);
        if (!id.empty()) ++report.chunks;
        const Reply done =
            run(client, {"EVAL", kDoneScript, "4", keys.chunk, keys.folding, keys.marker,
                         keys.folding_values, id, std::string(node::kChunkId), kDayMs});
        if (done.integer == 1) break;
        if (id.empty()) {  // nothing taken, yet not done: a chunk of another folder
            report.more = true;
            return report;
        }
    }
    run(client, {"ZREM", node::fleet_key(prefix, node::kNodes), node});
    report.folded = 1;
    return report;
}

FleetReport fold_expired(Client& client, const std::string& prefix, size_t max_nodes,
                         size_t max_chunks) {
    FleetReport total;
    const Reply expired =
        run(client, {"EVAL", kExpiredScript, "1", node::fleet_key(prefix, node::kNodes),
                     std::to_string(max_nodes)});
    for (const Reply& item : expired.elements) {
        if (total.chunks >= max_chunks) {
            total.more = true;
            break;
        }
        const FleetReport one =
            fold_node(client, prefix, item.str, true, max_chunks - total.chunks);
        total.retired += one.retired;
        total.chunks += one.chunks;
        total.folded += one.folded;
        total.more = total.more || one.more;
    }
    return total;
}

}  // namespace gpe::redis
