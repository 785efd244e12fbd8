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
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gpe::redis {

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

// Values as Redis stores them: shortest text that reads back exactly
// ("inf", "-inf", "nan" for the specials, as Python's float() reads them).
std::string format_value(double value);
std::optional<double> parse_value(std::string_view text);

}  // namespace gpe::redis
