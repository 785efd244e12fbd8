#include "gpe/multiprocess.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <system_error>
#include <unordered_map>

#include "gpe/exposition.hpp"
#include "gpe/float_format.hpp"
#include "gpe/mmap_file.hpp"

namespace gpe {

namespace {

using LabelViews = std::vector<std::pair<std::string_view, std::string_view>>;

LabelViews views_of(const Labels& labels) {
    LabelViews out;
    out.reserve(labels.size() + 1);
    for (const auto& [name, value] : labels) out.emplace_back(name, value);
    return out;
}

LabelViews without(const LabelViews& labels, std::string_view name) {
    LabelViews out;
    out.reserve(labels.size());
    for (const auto& label : labels) {
        if (label.first != name) out.push_back(label);
    }
    return out;
}

void append_sized(std::string& out, std::string_view s) {
    const auto n = static_cast<uint32_t>(s.size());
    out.append(reinterpret_cast<const char*>(&n), sizeof n);
    out.append(s);
}

bool is_aggregated_gauge_mode(std::string_view mode) {
    return mode == "min" || mode == "livemin" || mode == "max" || mode == "livemax" ||
           mode == "sum" || mode == "livesum" || mode == "mostrecent" || mode == "livemostrecent";
}

bool is_metric_type(std::string_view type) {
    return type == "counter" || type == "gauge" || type == "histogram" || type == "summary";
}

// An exclusive (mark_process_dead) or shared (readers) lock on the directory.
class DirectoryLock {
  public:
    DirectoryLock(const std::string& directory, bool exclusive) {
        const std::string path = lock_file_path(directory);
        fd_ = FileDescriptor(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
        if (fd_.get() < 0) fd_ = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        // Without a lock file we cannot lock; a read-only directory has no
        // writer that could fold files under us either.
        if (fd_.get() >= 0) {
            while (::flock(fd_.get(), exclusive ? LOCK_EX : LOCK_SH) != 0 && errno == EINTR) {
            }
        }
    }

  private:
    FileDescriptor fd_;  // closing it releases the lock
};

}  // namespace

std::string lock_file_path(const std::string& directory) { return directory + "/.gpe.lock"; }

// ---- interning ----

uint32_t LabelSets::intern(const LabelViews& labels) {
    scratch_.clear();
    for (const auto& [name, value] : labels) {
        append_sized(scratch_, name);
        append_sized(scratch_, value);
    }
    if (auto it = index_.find(std::string_view(scratch_)); it != index_.end()) return it->second;
    const auto id = static_cast<uint32_t>(sets_.size());
    Set set;
    set.labels.reserve(labels.size());
    for (const auto& [name, value] : labels) set.labels.emplace_back(name, value);
    sets_.push_back(std::move(set));
    index_.emplace(scratch_, id);
    return id;
}

const std::string& LabelSets::rendered(uint32_t id) {
    Set& set = sets_[id];
    if (!set.has_rendered) {
        set.rendered = render_labels(set.labels);
        set.has_rendered = true;
    }
    return set.rendered;
}

uint32_t Names::intern(std::string_view name) {
    if (auto it = index_.find(name); it != index_.end()) return it->second;
    const auto id = static_cast<uint32_t>(names_.size());
    names_.emplace_back(name);
    index_.emplace(std::string(name), id);
    return id;
}

// ---- directory listing ----

std::vector<std::string> list_db_files(const std::string& directory) {
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(directory.c_str()), &::closedir);
    if (!dir) {
        throw std::system_error(errno, std::generic_category(), "cannot list " + directory);
    }
    std::vector<std::string> out;
    while (const dirent* entry = ::readdir(dir.get())) {
        const std::string_view name(entry->d_name);
        if (name.size() < 3 || name.front() == '.' || !name.ends_with(".db")) continue;
        out.push_back(directory + "/" + std::string(name));
    }
    return out;
}

// ---- reader ----

namespace {

// A parsed series key, with ids cached for the merge in progress.
struct CachedKey {
    SeriesKey key;
    const std::string* le_text = nullptr;  // value of the first `le` label
    std::optional<double> le;              // ... as a number, if it is one
    // Ids valid for the merge numbered `epoch`.
    uint64_t epoch = 0;
    uint32_t name_id = 0;
    uint32_t labels_id = 0;
    uint32_t without_pid_id = 0;
    uint32_t without_le_id = 0;
};

}  // namespace

struct MultiprocessReader::Impl {
    StringMap<std::unique_ptr<CachedKey>> keys;
    uint64_t epoch = 0;
    std::string buffer;

    CachedKey* lookup(std::string_view bytes) {
        if (auto it = keys.find(bytes); it != keys.end()) return it->second.get();
        auto cached = std::make_unique<CachedKey>();
        cached->key = decode_series_key(bytes);  // throws std::invalid_argument
        for (const auto& [name, value] : cached->key.labels) {
            if (name == "le") {
                cached->le_text = &value;
                cached->le = parse_python_float(value);
                break;
            }
        }
        CachedKey* raw = cached.get();
        keys.emplace(std::string(bytes), std::move(cached));
        return raw;
    }

    MergeResult merge(const std::vector<std::string>& paths, bool accumulate);
};

namespace {

struct RawSample {
    CachedKey* key;
    const std::string* pid;  // the pid label of a gauge file, else nullptr
    double value;
    double timestamp;
};

struct FamilyBuild {
    std::string name;
    std::string help;
    std::string type;
    std::string mode;  // of the last gauge file read, as prometheus_client
    std::vector<RawSample> raw;
};

struct EntryKey {
    uint32_t group, name, labels;
    bool operator==(const EntryKey&) const = default;
};
struct EntryKeyHash {
    size_t operator()(const EntryKey& k) const noexcept {
        return std::hash<uint64_t>{}((uint64_t{k.group} << 32) ^ (uint64_t{k.name} << 16) ^
                                     k.labels);
    }
};

// prometheus_client's samples[labels][(name, labels)]: dicts in insertion order.
class OrderedSamples {
  public:
    // The value of an entry, inserted with `initial` if new.
    double& at(uint32_t group, uint32_t name, uint32_t labels, double initial, bool* inserted) {
        auto [it, is_new] = index_.try_emplace(EntryKey{group, name, labels},
                                               static_cast<uint32_t>(entries_.size()));
        if (inserted) *inserted = is_new;
        if (is_new) {
            entries_.push_back(MergedSample{name, labels, initial});
            auto [g, new_group] =
                group_index_.try_emplace(group, static_cast<uint32_t>(groups_.size()));
            if (new_group) groups_.emplace_back();
            groups_[g->second].push_back(it->second);
        }
        return entries_[it->second].value;
    }

    std::vector<MergedSample> flatten() const {
        std::vector<MergedSample> out;
        out.reserve(entries_.size());
        for (const auto& group : groups_) {
            for (uint32_t i : group) out.push_back(entries_[i]);
        }
        return out;
    }

  private:
    std::unordered_map<EntryKey, uint32_t, EntryKeyHash> index_;
    std::vector<MergedSample> entries_;
    std::unordered_map<uint32_t, uint32_t> group_index_;
    std::vector<std::vector<uint32_t>> groups_;
};

}  // namespace

MergeResult MultiprocessReader::Impl::merge(const std::vector<std::string>& paths,
                                            bool accumulate) {
    MergeResult result;
    const uint64_t merge_epoch = ++epoch;
    std::deque<std::string> pids;  // stable storage for pid label values
    StringMap<uint32_t> family_index;
    std::vector<FamilyBuild> builds;
    std::vector<RawSample> file_samples;

    for (const auto& path : paths) {
        const size_t slash = path.rfind('/');
        const std::string_view base = slash == std::string::npos
                                          ? std::string_view(path)
                                          : std::string_view(path).substr(slash + 1);
        std::vector<std::string_view> parts;
        for (size_t start = 0;;) {
            const size_t end = base.find('_', start);
            parts.push_back(base.substr(start, end == std::string_view::npos ? end : end - start));
            if (end == std::string_view::npos) break;
            start = end + 1;
        }
        const std::string_view type = parts[0];
        if (!is_metric_type(type) || (type == "gauge" && parts.size() < 3)) {
            result.diagnostics.warn("skipped " + path +
                                    ": not a multiprocess metrics file (expected "
                                    "{counter,histogram,summary}_<pid>.db or "
                                    "gauge_<mode>_<pid>.db)");
            continue;
        }
        try {
            read_used_region(path, buffer);
        } catch (const std::system_error& e) {
            // Removed since the directory was listed (a dead process's file
            // that was just archived): nothing to read, nothing lost.
            if (e.code().value() != ENOENT) {
                result.diagnostics.warn("skipped " + path + ": " + e.what());
            }
            continue;
        } catch (const FormatError& e) {
            result.diagnostics.warn("skipped corrupt file " + path + ": " + e.what());
            continue;
        }
        const std::string* pid = nullptr;
        if (type == "gauge") {
            const std::string_view p = parts[2];
            pids.emplace_back(p.size() >= 3 ? p.substr(0, p.size() - 3) : std::string_view());
            pid = &pids.back();
        }
        file_samples.clear();
        try {
            for_each_entry(buffer, [&](std::string_view key, double value, double timestamp) {
                file_samples.push_back(RawSample{lookup(key), pid, value, timestamp});
            });
        } catch (const std::exception& e) {
            result.diagnostics.warn("skipped corrupt file " + path + ": " + e.what());
            continue;
        }
        for (const RawSample& sample : file_samples) {
            const SeriesKey& key = sample.key->key;
            if (key.metric_name.empty()) {
                result.diagnostics.warn("skipped a sample with an empty metric name in " + path);
                continue;
            }
            auto [it, is_new] =
                family_index.try_emplace(key.metric_name, static_cast<uint32_t>(builds.size()));
            if (is_new)
                builds.push_back(FamilyBuild{key.metric_name, key.help, std::string(type), {}, {}});
            FamilyBuild& family = builds[it->second];
            if (type == "gauge") family.mode = parts[1];
            family.raw.push_back(sample);
        }
    }

    Names& names = result.names;
    LabelSets& sets = result.label_sets;
    auto prepare = [&](CachedKey& k) {
        if (k.epoch == merge_epoch) return;
        k.epoch = merge_epoch;
        k.name_id = names.intern(k.key.sample_name);
        const LabelViews labels = views_of(k.key.labels);
        k.labels_id = sets.intern(labels);
        k.without_pid_id = sets.intern(without(labels, "pid"));
        k.without_le_id = k.le_text ? sets.intern(without(labels, "le")) : k.labels_id;
    };
    auto with_pid = [](const CachedKey& k, const std::string& pid) {
        LabelViews labels = views_of(k.key.labels);
        labels.emplace_back("pid", pid);
        return labels;
    };

    result.families.reserve(builds.size());
    for (FamilyBuild& family : builds) {
        OrderedSamples samples;
        const bool gauge = family.type == "gauge";
        const bool histogram = family.type == "histogram";
        const bool aggregated = gauge && is_aggregated_gauge_mode(family.mode);
        const bool min_mode = family.mode == "min" || family.mode == "livemin";
        const bool max_mode = family.mode == "max" || family.mode == "livemax";
        const bool sum_mode = family.mode == "sum" || family.mode == "livesum";
        std::unordered_map<EntryKey, double, EntryKeyHash> timestamps;  // mostrecent
        // buckets[labels without le][upper bound] += value, groups in insertion order
        std::vector<std::pair<uint32_t, std::map<double, double>>> buckets;
        std::unordered_map<uint32_t, size_t> bucket_index;

        for (const RawSample& r : family.raw) {
            CachedKey& k = *r.key;
            prepare(k);
            if (gauge) {
                uint32_t labels = 0;
                if (aggregated) {
                    labels = k.without_pid_id;
                } else {
                    labels = r.pid ? sets.intern(with_pid(k, *r.pid)) : k.labels_id;
                }
                bool inserted = false;
                if (min_mode || max_mode) {
                    double& current = samples.at(labels, k.name_id, labels, r.value, &inserted);
                    if (min_mode ? r.value < current : r.value > current) current = r.value;
                } else if (sum_mode) {
                    samples.at(labels, k.name_id, labels, 0.0, nullptr) += r.value;
                } else if (aggregated) {  // mostrecent, livemostrecent
                    double& latest = timestamps[EntryKey{labels, k.name_id, labels}];
                    if (latest < r.timestamp) {
                        samples.at(labels, k.name_id, labels, 0.0, nullptr) = r.value;
                        latest = r.timestamp;
                    }
                } else {  // all, liveall
                    samples.at(labels, k.name_id, labels, 0.0, nullptr) = r.value;
                }
                continue;
            }
            uint32_t labels = k.labels_id;
            uint32_t without_le = k.without_le_id;
            if (r.pid) {  // a gauge file's sample in a family of another type
                const LabelViews tuple = with_pid(k, *r.pid);
                labels = sets.intern(tuple);
                without_le = sets.intern(without(tuple, "le"));
            }
            if (histogram && k.le_text) {
                if (!k.le) {
                    result.diagnostics.warn("skipped a bucket of " + family.name +
                                            " whose le label is not a number: '" + *k.le_text +
                                            "'");
                    continue;
                }
                auto [b, is_new] = bucket_index.try_emplace(without_le, buckets.size());
                if (is_new) buckets.emplace_back(without_le, std::map<double, double>{});
                buckets[b->second].second[*k.le] += r.value;
                continue;
            }
            samples.at(labels, k.name_id, labels, 0.0, nullptr) += r.value;
        }

        if (histogram) {
            const uint32_t bucket_name = names.intern(family.name + "_bucket");
            const uint32_t count_name = names.intern(family.name + "_count");
            for (const auto& [group, bounds] : buckets) {
                double acc = 0.0;
                LabelViews labels = views_of(sets.labels(group));
                labels.emplace_back("le", std::string_view());
                for (const auto& [bound, value] : bounds) {
                    if (bound != bound) continue;  // NaN has no place in the order
                    const std::string le = go_float(bound);
                    labels.back().second = le;
                    const uint32_t bucket_labels = sets.intern(labels);
                    acc += value;
                    samples.at(group, bucket_name, bucket_labels, 0.0, nullptr) =
                        accumulate ? acc : value;
                }
                if (accumulate) samples.at(group, count_name, group, 0.0, nullptr) = acc;
            }
        }
        result.families.push_back(MergedFamily{std::move(family.name), std::move(family.help),
                                               std::move(family.type), samples.flatten()});
    }
    return result;
}

MultiprocessReader::MultiprocessReader() : impl_(std::make_unique<Impl>()) {}
MultiprocessReader::~MultiprocessReader() = default;

MergeResult MultiprocessReader::merge_files(const std::vector<std::string>& paths,
                                            bool accumulate) {
    // Parsed keys are kept for the next scrape, but not forever: drop them
    // when far more are cached than the last merge used.
    if (impl_->keys.size() > 200000) impl_->keys.clear();
    return impl_->merge(paths, accumulate);
}

MergeResult MultiprocessReader::collect_directory(const std::string& directory, bool accumulate) {
    DirectoryLock lock(directory, /*exclusive=*/false);
    return merge_files(list_db_files(directory), accumulate);
}

}  // namespace gpe
