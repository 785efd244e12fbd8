// The seed's Redis key layout:
//
//   {prefix}:{store}:{process}:{data_type}:{hash}
//
// store     = metric type and gauge mode, as in file names: counter,
//             histogram, summary, gauge_{mode}
// process   = {pid}@{instance}: unique across hosts sharing one Redis
//             ({pid} is "archive" for the folded values of dead processes)
// data_type = metric (hash: value, timestamp) or meta (hash: original_key,
//             typ, multiprocess_mode)
// hash      = MD5 of the series key (the JSON of redis_key/mmap_key)
//
// The prefix may itself contain ':'; the other segments never do.
//
// The instance layout (REDIS_LAYOUT=instance, the default) keeps each
// instance's merge of its processes instead of every process's copy; see
// `namespace node` below.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "gpe/store_kind.hpp"

namespace gpe::redis {

// REDIS_LAYOUT: what a mirror writes. Readers read both.
enum class Layout : uint8_t { instance, series };
std::optional<Layout> parse_layout(std::string_view text);

inline constexpr std::string_view kMetric = "metric";
inline constexpr std::string_view kMeta = "meta";

// The fields of the hashes: a metric key holds kValue and kTimestamp, a meta
// key kOriginalKey, kTyp and kMode. Every writer and reader (Lua included,
// which gets them as arguments) spells them through these.
namespace field {
inline constexpr std::string_view kValue = "value";
inline constexpr std::string_view kTimestamp = "timestamp";
inline constexpr std::string_view kOriginalKey = "original_key";
inline constexpr std::string_view kTyp = "typ";
inline constexpr std::string_view kMode = "multiprocess_mode";
}  // namespace field

std::string series_hash(std::string_view series_key);

std::string make_key(std::string_view prefix, std::string_view store, std::string_view process,
                     std::string_view data_type, std::string_view hash);

// The metric and meta key of one series.
struct SeriesKeys {
    std::string metric;
    std::string meta;
};
SeriesKeys series_keys(std::string_view prefix, std::string_view store, std::string_view process,
                       std::string_view series_key);

// A SCAN MATCH pattern for the `data_type` keys of `process` in `store`;
// prefix and process are escaped, `store_glob` is a glob itself ("*": any).
std::string key_pattern(std::string_view prefix, std::string_view store_glob,
                        std::string_view process, std::string_view data_type);

struct KeyParts {
    std::string_view store;
    std::string_view process;
    std::string_view data_type;
    std::string_view hash;
};

// The version of the set of keys under a prefix: replaced in every
// transaction that creates or deletes keys (new series, folded dead
// processes). A reader keeps its key list while it stays the same, and reads
// again when it changed under a read, so that it never counts a dead process
// twice or not at all.
std::string keyset_key(std::string_view prefix);
// A fresh version for keyset_key: random, so that versions never repeat,
// not even after Redis lost its data.
std::string new_keyset_version();

// The marker of one mirror, {prefix}:mirror@{instance}@{mirror}: rewritten
// by every mirror transaction, read by the next one; when it is not what the
// mirror wrote last, Redis lost data and everything is sent again. {mirror}
// is random, one per Mirror: two Gunicorn instances on one host share the
// default instance id (the hostname) and must not share a marker.
std::string marker_key(std::string_view prefix, std::string_view instance, std::string_view mirror);

// The parts of one of our keys under `prefix`; nullopt for anything else.
std::optional<KeyParts> parse_key(std::string_view key, std::string_view prefix);

// "{pid}@{instance}"; characters that would break the layout (':' and glob
// specials) are replaced by '_'.
std::string process_id(std::string_view pid, std::string_view instance);
std::string sanitize_segment(std::string_view text);

// `text` with Redis glob specials escaped, for SCAN MATCH.
std::string glob_escape(std::string_view text);

// The instance layout. Each mirror of a multiprocess directory is a node
// ({instance}@{token}, the token kept in the directory, so that an agent
// restarted on the same directory continues the same node). A node's keys
// share the hash tag {node}, so that its transaction and its read land in
// one slot of a Redis Cluster:
//
//   {prefix}:{node}:view      hash: the instance's series, one field per
//                             series (view_field) holding its slot number
//   {prefix}:{node}:values    string: a header (kValuesMagic, then 8 bytes
//                             that change whenever `view` does), then 16
//                             bytes per slot: value and timestamp, doubles,
//                             little-endian (values_slot)
//   {prefix}:{node}:marker    the mirror's marker (as marker_key); "retired"
//                             once the node was retired
//   {prefix}:{node}:alive     exists while the node is live (expires at its
//                             deadline; the data keys a TTL later)
//   {prefix}:{node}:folding   the view of a retired node, being folded
//   {prefix}:{node}:folding_values  and its values
//   {prefix}:{node}:chunk     hash: the part of it being moved now, in view
//                             fields holding view_value text, and its id
//
// Why two keys: a scrape reads a node in one GET of its values (a copy on
// the server, microseconds) and parses the series of `view` only when its
// header says they changed; a hash of values cost the server a field walk
// and the reader a parse of every field on every scrape. The mirror writes
// what changed, as SETRANGE of its slots.
//
// and the fleet's keys share the tag {fleet}:
//
//   {prefix}:{fleet}:nodes    sorted set: every node, scored by its deadline
//                             (Unix ms; +inf without a TTL)
//   {prefix}:{fleet}:archive  hash: the folded values of retired nodes, in
//                             view fields
//   {prefix}:{fleet}:applied  sorted set: ids of the chunks folded into the
//                             archive, scored by when (kept a day)
namespace node {
inline constexpr std::string_view kView = "view";
inline constexpr std::string_view kMarker = "marker";
inline constexpr std::string_view kAlive = "alive";
inline constexpr std::string_view kValues = "values";
inline constexpr std::string_view kFolding = "folding";
inline constexpr std::string_view kFoldingValues = "folding_values";
inline constexpr std::string_view kChunk = "chunk";
inline constexpr std::string_view kNodes = "nodes";
inline constexpr std::string_view kArchive = "archive";
inline constexpr std::string_view kApplied = "applied";
// The marker of a retired node, and the chunk hash's field holding its id.
inline constexpr std::string_view kRetired = "retired";
inline constexpr std::string_view kChunkId = "\x01id";

// "{instance}@{token}", both sanitized (no ':', globs, '@', braces).
std::string node_id(std::string_view instance, std::string_view token);
// {prefix}:{node}:{what} (kView, kMarker, ...).
std::string node_key(std::string_view prefix, std::string_view node, std::string_view what);
// {prefix}:{fleet}:{what} (kNodes, kArchive, kApplied).
std::string fleet_key(std::string_view prefix, std::string_view what);

// A view field: "{store}:{json}", or "{store}:{process}:{json}" for the
// stores that keep a value per process (gauges all/liveall); `process` is a
// process segment ({pid}@{instance}). The JSON always starts with '['.
std::string view_field(Store store, std::string_view process, std::string_view json);
struct ViewField {
    Store store;
    std::string_view process;  // empty unless the store keeps processes
    std::string_view json;
};
std::optional<ViewField> parse_view_field(std::string_view field);

// "{value}", or "{value} {timestamp}" for the stores that merge by time.
std::string view_value(Store store, double value, double timestamp);
std::optional<std::pair<double, double>> parse_view_value(std::string_view text);

// The values string: kValuesHeader bytes (the magic, then the version of the
// slots), then kSlotBytes per slot.
inline constexpr std::string_view kValuesMagic = "gpeview1";
inline constexpr size_t kValuesHeader = 16;
inline constexpr size_t kSlotBytes = 16;
constexpr size_t slot_offset(uint32_t slot) { return kValuesHeader + kSlotBytes * slot; }
// A slot's 16 bytes.
std::string values_slot(double value, double timestamp);
// The slot's value and timestamp, or nothing when `values` is too short.
std::optional<std::pair<double, double>> read_slot(std::string_view values, uint32_t slot);
// The slot number a view field holds, or nothing when it is not one.
std::optional<uint32_t> parse_slot(std::string_view text);
}  // namespace node

// Values as Redis stores them: shortest text that reads back exactly
// ("inf", "-inf", "nan" for the specials, as Python's float() reads them).
std::string format_value(double value);
std::optional<double> parse_value(std::string_view text);

}  // namespace gpe::redis
