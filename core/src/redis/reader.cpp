#include "gpe/redis/reader.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <optional>

#include "gpe/redis/layout.hpp"
#include "gpe/redis/view_reader.hpp"
#include "gpe/strings.hpp"

namespace gpe::redis {

namespace {

constexpr int kMaxAttempts = 3;
constexpr const char* kScanCount = "1000";
// A script blocks the server for every other client while it runs: at a few
// microseconds a key, 500 keys keep each one to a few milliseconds at any
// fleet size (10,000 took 29-74 ms in bench/bench_fleet.py, 1,000 up to 6.5 ms
// on a loaded machine); the batches stay one consistent snapshot through the
// key set version each returns.
constexpr size_t kKeysPerScript = 500;
constexpr std::chrono::seconds kKeyListMaxAge{5};
// A SCAN walk ends when its cursor comes back to 0. A server whose cursor
// never does (a broken proxy, something else on the address) must not hold
// the scrape, and every scrape queued behind it, for ever: the walk is
// refused after this many pages, or after the socket timeout in all.
constexpr size_t kMaxScanPages = 100000;

// KEYS: metric keys, then the key set version key; ARGV[1]: how many of the
// keys (the first ones) need no timestamp, ARGV[2..3]: the value and
// timestamp fields (layout.hpp). Returns the version, then each
// key's value (and timestamp, for the others), all read at one moment.
constexpr const char* kReadScript = R"lua(
local plain = tonumber(ARGV[1])
local VALUE, STAMP = ARGV[2], ARGV[3]
local n = #KEYS - 1
-- pcall for every key: any of them may hold another type (a foreign writer).
local version = redis.pcall('GET', KEYS[n + 1])
if type(version) == 'table' then version = '\1wrongtype' end
local out = {version}
local j = 1
for i = 1, plain do
  j = j + 1
  local value = redis.pcall('HGET', KEYS[i], VALUE)
  if type(value) == 'table' then value = '\1wrongtype' end
  out[j] = value
end
for i = plain + 1, n do
  local pair = redis.pcall('HMGET', KEYS[i], VALUE, STAMP)
  if pair.err then pair = {'\1wrongtype', false} end
  out[j + 1] = pair[1]
  out[j + 2] = pair[2]
  j = j + 2
end
return out
)lua";

// What the read script answers for a key that is not a hash.
constexpr std::string_view kWrongType = "\1wrongtype";

// The store a key names: gauge_{mode}, or a type followed by anything (a
// foreign `counter_x` has always been read as a counter).
std::optional<Store> store_of(std::string_view store) {
    const std::optional<MetricType> type = parse_metric_type(store.substr(0, store.find('_')));
    if (!type) return std::nullopt;
    if (*type != MetricType::gauge) return Store{*type, GaugeMode::all};
    return parse_store(store);
}

size_t store_index(Store store) {
    for (size_t i = 0; i < kStores.size(); ++i) {
        if (kStores[i] == store) return i;
    }
    return 0;
}

struct Found {
    std::string key;
    KeyParts parts;  // views into `key`
    Store store;
};

}  // namespace

struct Reader::Impl {
    std::shared_ptr<Client> client;
    std::string prefix;
    std::string match;
    std::mutex mutex;
    SeriesCache cache;
    StringMap<std::string> json_by_hash;
    StringMap<std::string> meta_errors;  // hash -> "meta key: server's error", this scrape
    struct Resolved {
        SeriesCache::Key* key;
        uint32_t pid_labels;
        uint64_t generation;
    };
    StringMap<Resolved> resolved;  // metric key or view field -> its series
    ReadStats stats;
    size_t last_series = 0;
    // The metric keys as listed by the last SCAN, valid while the key set
    // version stays `keys_version`.
    std::vector<Found> keys;
    std::vector<std::string> scan_warnings;
    std::string keys_version;
    std::chrono::steady_clock::time_point keys_listed;
    bool keys_valid = false;
    FleetSnapshot fleet;  // the instance layout's nodes and archive

    std::vector<Reply> run(const std::vector<Command>& commands) {
        stats.commands += commands.size();
        return client->pipeline(commands);
    }

    std::vector<Found> scan(Diagnostics& diagnostics) {
        std::vector<Found> found;
        StringMap<bool> seen;  // SCAN may return a key more than once
        std::string cursor = "0";
        const double limit = client->options().socket_timeout;
        const auto deadline = std::chrono::steady_clock::now() +
                              std::chrono::microseconds(static_cast<long long>(limit * 1e6));
        size_t pages = 0;
        // The listing is bounded like a reply: its keys (16 bytes more each)
        // may take twice REDIS_MAX_REPLY_BYTES, about 700,000 series by default.
        const size_t max_bytes = 2 * client->options().max_reply_bytes;
        size_t listed = 0;
        do {
            if (++pages > kMaxScanPages || std::chrono::steady_clock::now() > deadline) {
                throw Error(Error::Kind::kProtocol,
                            concat("SCAN of ", match,
                                   " did not finish (its cursor never came back "
                                   "to 0) within ",
                                   std::to_string(kMaxScanPages), " pages and ",
                                   format_seconds(limit), " s (the socket timeout); refused"));
            }
            const Reply page = run({{"SCAN", cursor, "MATCH", match, "COUNT", kScanCount}}).front();
            if (page.is_error()) throw Error(Error::Kind::kServer, "SCAN failed: " + page.str);
            if (page.type != Reply::Type::kArray || page.elements.size() != 2 ||
                page.elements[0].type != Reply::Type::kString ||
                page.elements[1].type != Reply::Type::kArray) {
                throw Error(Error::Kind::kProtocol, "unexpected SCAN reply");
            }
            cursor = page.elements[0].str;
            for (const Reply& element : page.elements[1].elements) {
                if (element.type != Reply::Type::kString) {
                    throw Error(Error::Kind::kProtocol, "unexpected SCAN reply");
                }
                if (!seen.try_emplace(element.str, true).second) continue;
                listed += element.str.size() + 16;
                if (listed > max_bytes) {
                    throw Error(
                        Error::Kind::kProtocol,
                        concat("SCAN of ", match, " listed more than ", std::to_string(max_bytes),
                               " bytes of keys (twice REDIS_MAX_REPLY_BYTES); refused"));
                }
                Found item{element.str, {}, {}};
                const auto parts = parse_key(item.key, prefix);
                const auto store = parts ? store_of(parts->store) : std::nullopt;
                if (!parts || parts->data_type != kMetric || !store) {
                    diagnostics.warn(concat("skipped Redis key ", element.str,
                                            ": not of the layout ", prefix,
                                            ":{type}_{mode}:{pid}@{instance}:metric:{hash}"));
                    continue;
                }
                item.store = *store;
                found.push_back(std::move(item));
            }
        } while (cursor != "0");
        // Views into the strings are taken once they stopped moving.
        for (Found& item : found) item.parts = *parse_key(item.key, prefix);
        return found;
    }

    // The key set version; a key of another type there (a foreign writer)
    // is named in a warning and gives a version that never matches, so the
    // keys are listed again every scrape until our mirror replaces it.
    std::string version_of(const Reply& reply, Diagnostics* diagnostics = nullptr) {
        if (reply.type == Reply::Type::kString && reply.str != kWrongType) return reply.str;
        if (reply.is_error() || reply.type == Reply::Type::kString) {
            if (diagnostics != nullptr) {
                diagnostics->warn(concat("ignored Redis key ", keyset_key(prefix),
                                         ": not a string (",
                                         reply.is_error() ? reply.str : "WRONGTYPE",
                                         "); the key list is read again every scrape"));
            }
            return std::string(kWrongType);
        }
        return "0";
    }

    // [value, timestamp] of every key (timestamp nil where not needed), read
    // by scripts so that each batch is one consistent snapshot; nullopt if
    // the key set version is no longer `version`.
    std::optional<std::vector<Reply>> read_values(const std::vector<Found>& found,
                                                  const std::string& version) {
        std::vector<Command> batches;
        std::vector<std::vector<size_t>> orders;  // key indexes of each batch, in script order
        size_t start = 0;
        do {  // at least one batch: it also reads the version
            const size_t end = std::min(found.size(), start + kKeysPerScript);
            std::vector<size_t> order;
            for (size_t i = start; i < end; ++i) {
                if (!has_timestamp(found[i].store)) order.push_back(i);
            }
            const size_t plain = order.size();
            for (size_t i = start; i < end; ++i) {
                if (has_timestamp(found[i].store)) order.push_back(i);
            }
            Command eval{"EVAL", kReadScript, std::to_string(order.size() + 1)};
            for (size_t i : order) eval.push_back(found[i].key);
            eval.push_back(keyset_key(prefix));
            eval.push_back(std::to_string(plain));
            eval.emplace_back(field::kValue);
            eval.emplace_back(field::kTimestamp);
            batches.push_back(std::move(eval));
            orders.push_back(std::move(order));
            start = end;
        } while (start < found.size());

        std::vector<Reply> values(found.size());
        // One exchange per script, so that each has the whole socket timeout
        // (a deadline for a whole exchange): a large scrape is not refused
        // for being large.
        std::vector<Reply> replies;
        replies.reserve(batches.size());
        for (Command& batch : batches)
            replies.push_back(std::move(run({std::move(batch)}).front()));
        for (size_t b = 0; b < replies.size(); ++b) {
            Reply& batch = replies[b];
            if (batch.is_error())
                throw Error(Error::Kind::kServer, "reading values failed: " + batch.str);
            if (batch.type != Reply::Type::kArray || batch.elements.empty()) {
                throw Error(Error::Kind::kProtocol, "unexpected reply to the read script");
            }
            if (version_of(batch.elements[0]) != version) return std::nullopt;
            size_t at = 1;
            for (size_t i : orders[b]) {
                Reply& pair = values[i];
                pair.type = Reply::Type::kArray;
                pair.elements.resize(2);
                if (at < batch.elements.size()) pair.elements[0] = std::move(batch.elements[at++]);
                if (has_timestamp(found[i].store) && at < batch.elements.size()) {
                    pair.elements[1] = std::move(batch.elements[at++]);
                }
            }
        }
        return values;
    }

    MergeResult read(bool accumulate) {
        // #lizard forgives: the retry loop of one consistent read
        stats = ReadStats{};
        for (;;) {
            ++stats.attempts;
            cache.trim(last_series);
            // Keys and fields of processes and instances long gone: bounded
            // like the cache.
            if (resolved.size() > 2 * last_series + 10000) resolved.clear();
            Diagnostics diagnostics;
            // The series layout's key set version and the instance layout's
            // node set, in one round trip.
            std::vector<Reply> first =
                run({{"GET", keyset_key(prefix)}, fleet.nodes_command(prefix)});
            const std::string version = version_of(first[0], &diagnostics);
            // Writers other than our mirror do not move the version: list
            // the keys again every few seconds anyway.
            const auto now = std::chrono::steady_clock::now();
            if (!keys_valid || version != keys_version || version == kWrongType ||
                now - keys_listed > kKeyListMaxAge) {
                keys_listed = now;
                keys = scan(diagnostics);
                scan_warnings = diagnostics.warnings;
                keys_version = version;
                keys_valid = true;
            } else {
                diagnostics.warnings = scan_warnings;  // the same foreign keys are still there
            }
            // No key of the series layout: nothing to read (one appearing
            // now is read by the next scrape).
            std::optional<std::vector<Reply>> values =
                keys.empty() ? std::vector<Reply>{} : read_values(keys, version);
            if (!values) {  // keys were created or deleted meanwhile: list them again
                keys_valid = false;
                if (stats.attempts < kMaxAttempts) continue;
                values = read_values(keys = scan(diagnostics),
                                     version_of(run({{"GET", keyset_key(prefix)}}).front()));
                if (!values)
                    throw Error(Error::Kind::kServer, "the key set keeps changing; try again");
            }
            // The instance layout, after the series layout's keys: an
            // instance switching layouts is counted in one of them.
            read_fleet(std::move(first[1]), diagnostics);

            // Series keys of hashes not seen before, from their meta keys.
            std::vector<Command> metas;
            std::vector<std::string> meta_hashes;
            StringMap<bool> asked;
            meta_errors.clear();
            for (const Found& item : keys) {
                const std::string_view hash = item.parts.hash;
                if (json_by_hash.contains(hash) ||
                    !asked.try_emplace(std::string(hash), true).second)
                    continue;
                meta_hashes.emplace_back(hash);
                metas.push_back(
                    {"HGET", make_key(prefix, item.parts.store, item.parts.process, kMeta, hash),
                     std::string(field::kOriginalKey)});
            }
            if (!metas.empty()) {
                const std::vector<Reply> replies = run(metas);
                for (size_t i = 0; i < replies.size(); ++i) {
                    if (replies[i].type == Reply::Type::kString) {
                        json_by_hash[meta_hashes[i]] = replies[i].str;
                    } else if (replies[i].is_error()) {  // e.g. WRONGTYPE: not a hash
                        meta_errors[meta_hashes[i]] = concat(metas[i][1], ": ", replies[i].str);
                    }
                }
            }
            return merge(keys, *values, diagnostics, accumulate);
        }
    }

    MergeResult merge(const std::vector<Found>& found, const std::vector<Reply>& values,
                      Diagnostics& diagnostics, bool accumulate) {
        // One source per process store, in a stable order.
        std::vector<size_t> order(found.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
            const KeyParts& x = found[a].parts;
            const KeyParts& y = found[b].parts;
            return std::tie(x.store, x.process) < std::tie(y.store, y.process);
        });
        Merger merger(cache);
        merger.diagnostics() = std::move(diagnostics);
        std::vector<SourceSample> samples;
        size_t series = 0;
        for (size_t at = 0; at < order.size();) {
            const KeyParts& group = found[order[at]].parts;
            const Store store = found[order[at]].store;
            const bool gauge = store.type == MetricType::gauge;
            samples.clear();
            size_t end = at;
            for (; end < order.size(); ++end) {
                const Found& item = found[order[end]];
                if (item.parts.store != group.store || item.parts.process != group.process) break;
                const Reply& reply = values[order[end]];
                if (reply.type != Reply::Type::kArray || reply.elements.size() != 2 ||
                    reply.elements[0].type != Reply::Type::kString) {
                    continue;  // deleted since the SCAN
                }
                const auto value = parse_value(reply.elements[0].str);
                const auto timestamp = reply.elements[1].type == Reply::Type::kString
                                           ? parse_value(reply.elements[1].str)
                                           : std::optional<double>(0.0);
                if (reply.elements[0].str == kWrongType) {
                    merger.diagnostics().warn(
                        concat("skipped Redis key ", item.key, ": not a hash"));
                    continue;
                }
                if (!value || !timestamp) {
                    merger.diagnostics().warn(
                        concat("skipped Redis key ", item.key, ": value is not a number"));
                    continue;
                }
                const Resolved* resolution = resolve(item, gauge, merger.diagnostics());
                if (resolution == nullptr) continue;
                samples.push_back(
                    SourceSample{resolution->key, resolution->pid_labels, *value, *timestamp});
            }
            series += samples.size();
            merger.add_source(store, samples,
                              concat("Redis ", prefix, ":", group.store, ":", group.process));
            at = end;
        }
        series += add_views(merger);
        last_series = series;
        return merger.finish(accumulate);
    }

    void read_fleet(Reply nodes, Diagnostics& diagnostics) {
        fleet.read(*client, prefix, std::move(nodes), diagnostics);
        stats.commands += fleet.commands();
        stats.keys = keys.size() + fleet.fields();
    }

    // Each node's samples, one source per store.
    size_t add_views(Merger& merger) {
        size_t series = 0;
        std::array<std::vector<SourceSample>, kStores.size()> by_store;
        for (const ViewSource& source : fleet.sources()) {
            for (auto& samples : by_store) samples.clear();
            for (const ViewSample& sample : source.samples) {
                // One lookup by the field (series and process) in steady scrapes.
                const Resolved* resolution = resolve(sample, merger.diagnostics(), source.origin);
                if (resolution == nullptr) continue;
                by_store[store_index(sample.store)].push_back(SourceSample{
                    resolution->key, resolution->pid_labels, sample.value, sample.timestamp});
            }
            for (size_t i = 0; i < kStores.size(); ++i) {
                if (by_store[i].empty()) continue;
                series += by_store[i].size();
                merger.add_source(kStores[i], by_store[i], source.origin);
            }
        }
        return series;
    }

    // A view field's series, parsed once while the cache keeps it.
    const Resolved* resolve(const ViewSample& sample, Diagnostics& diagnostics,
                            std::string_view origin) {
        if (auto it = resolved.find(sample.field);
            it != resolved.end() && it->second.generation == cache.generation()) {
            return &it->second;
        }
        SeriesCache::Key* key = nullptr;
        try {
            key = cache.lookup(sample.json);
        } catch (const std::exception& e) {
            diagnostics.warn(concat("skipped a series of ", origin, ": ", e.what()));
            return nullptr;
        }
        const uint32_t pid_labels =
            sample.process.empty() ? kNoLabels : cache.labels_with_pid(*key, sample.process);
        Resolved& slot = resolved[std::string(sample.field)];
        slot = Resolved{key, pid_labels, cache.generation()};
        return &slot;
    }

    const Resolved* resolve(const Found& item, bool gauge, Diagnostics& diagnostics) {
        if (auto it = resolved.find(item.key);
            it != resolved.end() && it->second.generation == cache.generation()) {
            return &it->second;
        }
        auto json = json_by_hash.find(item.parts.hash);
        if (json == json_by_hash.end()) {
            const auto error = meta_errors.find(item.parts.hash);
            diagnostics.warn(concat("skipped Redis key ", item.key,
                                    error == meta_errors.end()
                                        ? std::string(": its meta key has no original_key")
                                        : concat(": its meta key ", error->second)));
            return nullptr;
        }
        SeriesCache::Key* key = nullptr;
        try {
            key = cache.lookup(json->second);
        } catch (const std::exception& e) {
            diagnostics.warn(concat("skipped Redis key ", item.key, ": ", e.what()));
            return nullptr;
        }
        const uint32_t pid_labels =
            gauge ? cache.labels_with_pid(*key, item.parts.process) : kNoLabels;
        Resolved& slot = resolved[item.key];
        slot = Resolved{key, pid_labels, cache.generation()};
        return &slot;
    }
};

Reader::Reader(std::shared_ptr<Client> client, std::string prefix)
    : impl_(std::make_unique<Impl>()) {
    impl_->client = std::move(client);
    impl_->match = concat(glob_escape(prefix), ":*:", kMetric, ":*");
    impl_->prefix = std::move(prefix);
}

Reader::~Reader() = default;

Collected Reader::collect(bool accumulate) {
    std::unique_lock lock(impl_->mutex);
    MergeResult result = impl_->read(accumulate);
    return Collected{std::move(lock), std::move(result)};
}

ReadStats Reader::last_stats() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->stats;
}

}  // namespace gpe::redis
