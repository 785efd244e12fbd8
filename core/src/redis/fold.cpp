#include "gpe/redis/fold.hpp"

#include <algorithm>

#include "gpe/redis/layout.hpp"
#include "gpe/store_kind.hpp"
#include "gpe/strings.hpp"

namespace gpe::redis {

namespace {

// ARGV: prefix, process, archive, (unused), key set version key and its new
// version, then the layout's names (the data types metric and meta, the hash
// fields: layout.hpp), the fold rule of each store ("counter=sum
// gauge_all=keep ...", from store_kind.hpp; a store not listed is summed, as
// a counter), then the process's metric keys to fold: a batch of them, so
// that no script walks the keyspace (SCAN pages are the client's). Values are kept
// as the strings the mirror writes; Lua's tonumber() does not read inf/nan, so
// those are taken over as they are.
constexpr const char* kScript = R"lua(
local prefix, process, archive, pattern, keyset = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local METRIC, META = ARGV[7], ARGV[8]
local VALUE, STAMP, ORIGINAL, TYP, MODE = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local rules = {}
for store, rule in string.gmatch(ARGV[14], '(%S+)=(%S+)') do rules[store] = rule end
local folded, deleted = 0, 0
local keys = {}
for i = 15, #ARGV do keys[#keys + 1] = ARGV[i] end
-- Every key here may hold another type (a foreign writer): reads go through
-- pcall and a key of another type is skipped (and named in the answer), never
-- an error that stops the fold half-way. Writes use redis.call after the
-- types were checked, so that a refused write (OOM) stops the script before
-- the keys of that series are deleted.
local skipped = {}
local function hashlike(k)
  local t = redis.pcall('TYPE', k)
  t = type(t) == 'table' and t.ok or t
  return t == 'hash' or t == 'none', t
end
local function read(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then return nil, r.err end
  return r
end
for _, key in ipairs(keys) do
  local rest = string.sub(key, #prefix + 2)
  local store, hash = string.match(rest, '^([^:]+):[^:]+:' .. METRIC .. ':([^:]+)$')
  if store then
    local meta = table.concat({prefix, store, process, META, hash}, ':')
    local target = table.concat({prefix, store, archive, METRIC, hash}, ':')
    local target_meta = table.concat({prefix, store, archive, META, hash}, ':')
    local bad, why = nil, nil
    for _, k in ipairs({key, meta, target, target_meta}) do
      local ok, t = hashlike(k)
      if not ok then bad, why = k, 'not a hash but a ' .. tostring(t); break end
    end
    local pair, old_pair, original, typ, mode
    if not bad then
      pair, why = read('HMGET', key, VALUE, STAMP)
      if pair then old_pair, why = read('HMGET', target, VALUE, STAMP) end
      if old_pair then original, why = read('HGET', meta, ORIGINAL) end
      if original ~= nil then typ = read('HGET', meta, TYP); mode = read('HGET', meta, MODE) end
      if why then bad = key end
    end
    if bad then
      skipped[#skipped + 1] = bad .. ': ' .. tostring(why)
    else
    local value, stamp = pair[1], pair[2]
    local rule = rules[store] or 'sum'
    local keep = rule == 'keep'
    local live = rule == 'drop'
    if not keep and not live and value then
      local old, old_stamp = old_pair[1], old_pair[2]
      local new, new_stamp = value, stamp or '0'
      local v, o = tonumber(value), tonumber(old or '')
      if old then
        if rule == 'max' then
          if not (v and o and v <= o) then new = value else new = old end
        elseif rule == 'min' then
          if not (v and o and v >= o) then new = value else new = old end
        elseif rule == 'mostrecent' then
          if (tonumber(stamp or '0') or 0) > (tonumber(old_stamp or '0') or 0) then
            new, new_stamp = value, stamp
          else
            new, new_stamp = old, old_stamp
          end
        elseif v and o then
          new = tostring(v + o)
          if math.floor(v + o) == v + o and math.abs(v + o) < 1e15 then
            new = string.format('%d', v + o)
          else
            new = string.format('%.17g', v + o)
          end
        end
      end
      redis.call('HSET', target, VALUE, new, STAMP, new_stamp or '0')
      if original then
        redis.call('HSET', target_meta, ORIGINAL, original, TYP, typ or '', MODE, mode or '')
      end
      local ttl = redis.call('PTTL', key)
      if ttl > 0 then
        redis.call('PEXPIRE', target, ttl)
        redis.call('PEXPIRE', target_meta, ttl)
      end
      folded = folded + 1
    end
    if not keep then
      deleted = deleted + redis.call('DEL', key, meta)
    end
    end
  end
end
redis.call('SET', keyset, ARGV[6])
return {folded, deleted, skipped}
)lua";

// A script blocks every other client while it runs: a few microseconds a
// series keeps a batch to a few milliseconds.
constexpr size_t kKeysPerFold = 200;
// A SCAN cursor that never comes back to 0 (not Redis) must not hold us.
constexpr size_t kMaxPages = 100000;

// "counter=sum histogram=sum ... gauge_livemostrecent=drop"
std::string fold_rules() {
    std::string out;
    for (const Store store : kStores) {
        if (!out.empty()) out.push_back(' ');
        out += concat(store_name(store), "=", name(fold_rule(store)));
    }
    return out;
}

}  // namespace

FoldReport fold_process(Client& client, const std::string& prefix, const std::string& process,
                        const std::string& archive) {
    // The keys first, page by page; then the folds, kKeysPerFold at a time.
    // Each batch is one script: a series moves whole, so that a reader
    // between two batches counts every series once (in the process or in
    // the archive).
    std::vector<std::string> keys;
    std::string cursor = "0";
    const std::string pattern = key_pattern(prefix, "*", process, kMetric);
    for (size_t pages = 0; pages < kMaxPages; ++pages) {
        const Reply page = client.command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
        if (page.is_error()) throw Error(Error::Kind::kServer, "SCAN failed: " + page.str);
        if (page.type != Reply::Type::kArray || page.elements.size() != 2)
            throw Error(Error::Kind::kProtocol, "unexpected SCAN reply");
        cursor = page.elements[0].str;
        for (const Reply& key : page.elements[1].elements) keys.push_back(key.str);
        if (cursor == "0") break;
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());  // SCAN may repeat a key
    FoldReport report;
    size_t start = 0;
    do {  // at least once: a process without keys still moves the version
        Command eval{"EVAL",
                     kScript,
                     "0",
                     prefix,
                     process,
                     archive,
                     pattern,
                     keyset_key(prefix),
                     new_keyset_version(),
                     std::string(kMetric),
                     std::string(kMeta),
                     std::string(field::kValue),
                     std::string(field::kTimestamp),
                     std::string(field::kOriginalKey),
                     std::string(field::kTyp),
                     std::string(field::kMode),
                     fold_rules()};
        const size_t end = std::min(keys.size(), start + kKeysPerFold);
        eval.insert(eval.end(), keys.begin() + static_cast<std::ptrdiff_t>(start),
                    keys.begin() + static_cast<std::ptrdiff_t>(end));
        start = end;
        const Reply reply = client.command(eval);
        if (reply.is_error()) throw Error(Error::Kind::kServer, "fold failed: " + reply.str);
        if (reply.type == Reply::Type::kArray && reply.elements.size() == 3) {
            report.folded += reply.elements[0].integer;
            report.deleted += reply.elements[1].integer;
            for (const Reply& item : reply.elements[2].elements) {
                report.skipped.push_back(concat("skipped Redis key ", item.str));
            }
        }
    } while (start < keys.size());
    return report;
}

}  // namespace gpe::redis
