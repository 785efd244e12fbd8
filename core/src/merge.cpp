#include "gpe/merge.hpp"

#include <atomic>
#include <cmath>
#include <map>
#include <optional>
#include <unordered_map>

#include "gpe/float_format.hpp"

namespace gpe {

namespace {

using Key = SeriesCache::Key;

// Each merge gets a new number, so that families cached in keys by an
// earlier merge over the same cache are looked up again.
uint64_t next_epoch() {
    static std::atomic<uint64_t> epoch{0};  // process-wide: epochs must never repeat
    return ++epoch;
}

struct FamilyBuild {
    std::string name;
    std::string help;
    MetricType type;
    GaugeMode mode = GaugeMode::all;  // the last gauge store's, as prometheus_client
    std::vector<SourceSample> raw;
    std::vector<const SourceExemplar*> exemplars;
};

// Whether `candidate` replaces `kept` as the most recent exemplar.
bool more_recent(const ExemplarValue& candidate, const std::optional<ExemplarValue>& kept) {
    if (!kept) return true;
    if (std::isnan(kept->timestamp)) return !std::isnan(candidate.timestamp);
    return candidate.timestamp > kept->timestamp;
}

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
    double& at(uint32_t group, uint32_t name, uint32_t labels, double initial) {
        return entry(group, name, labels, initial).value;
    }

    MergedSample& entry(uint32_t group, uint32_t name, uint32_t labels, double initial) {
        auto [it, is_new] = index_.try_emplace(EntryKey{group, name, labels},
                                               static_cast<uint32_t>(entries_.size()));
        if (is_new) {
            entries_.push_back(MergedSample{name, labels, initial, -1});
            auto [g, new_group] =
                group_index_.try_emplace(group, static_cast<uint32_t>(groups_.size()));
            if (new_group) groups_.emplace_back();
            groups_[g->second].push_back(it->second);
        }
        return entries_[it->second];
    }

    MergedSample* find(uint32_t group, uint32_t name, uint32_t labels) {
        auto it = index_.find(EntryKey{group, name, labels});
        return it == index_.end() ? nullptr : &entries_[it->second];
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

// prometheus_client's merge() of one family: gauges by their mode, histogram
// buckets by upper bound, everything else added up.
class FamilyMerge {
  public:
    FamilyMerge(SeriesCache& cache, Diagnostics& diagnostics, const FamilyBuild& family)
        : names_(cache.names),
          sets_(cache.label_sets),
          diagnostics_(diagnostics),
          family_(family) {}

    void add(const SourceSample& r) {
        if (family_.type == MetricType::gauge) {
            add_gauge(r);
        } else {
            add_other(r);
        }
    }

    // prometheus_client has exemplars on counters' _total and histogram buckets.
    void add_exemplar(const SourceExemplar& e) {
        const Key& k = *e.key;
        if (family_.type == MetricType::counter && k.key.sample_name == family_.name + "_total") {
            std::optional<ExemplarValue>& kept = counter_exemplars_[k.labels_id];
            if (more_recent(e.exemplar, kept)) kept = e.exemplar;
        } else if (family_.type == MetricType::histogram && k.has_le && k.le) {
            std::optional<ExemplarValue>& kept = bucket_exemplars_[{k.without_le_id, *k.le}];
            if (more_recent(e.exemplar, kept)) kept = e.exemplar;
        }
    }

    std::vector<MergedSample> finish(bool accumulate) {
        if (family_.type == MetricType::histogram) add_buckets(accumulate);
        for (const auto& [labels, exemplar] : counter_exemplars_) {
            const uint32_t total = names_.intern(family_.name + "_total");
            if (MergedSample* sample = samples_.find(labels, total, labels))
                attach(*sample, *exemplar);
        }
        return samples_.flatten();
    }

    std::vector<MergedExemplar> take_exemplars() { return std::move(exemplars_); }

  private:
    void add_gauge(const SourceSample& r) {
        const Key& k = *r.key;
        const GaugeMode mode = family_.mode;
        const uint32_t labels = is_aggregated(mode)         ? k.without_pid_id
                                : r.pid_labels != kNoLabels ? r.pid_labels
                                                            : k.labels_id;
        switch (base_mode(mode)) {
            case GaugeMode::min:
            case GaugeMode::max: {
                double& current = samples_.at(labels, k.name_id, labels, r.value);
                const bool min = base_mode(mode) == GaugeMode::min;
                if (min ? r.value < current : r.value > current) current = r.value;
                break;
            }
            case GaugeMode::sum:
                samples_.at(labels, k.name_id, labels, 0.0) += r.value;
                break;
            case GaugeMode::mostrecent: {
                double& latest = timestamps_[EntryKey{labels, k.name_id, labels}];
                if (latest < r.timestamp) {
                    samples_.at(labels, k.name_id, labels, 0.0) = r.value;
                    latest = r.timestamp;
                }
                break;
            }
            default:  // all, liveall
                samples_.at(labels, k.name_id, labels, 0.0) = r.value;
        }
    }

    void add_other(const SourceSample& r) {
        const Key& k = *r.key;
        uint32_t labels = k.labels_id;
        uint32_t without_le = k.without_le_id;
        if (r.pid_labels != kNoLabels) {  // a gauge store's sample in a family of another type
            labels = r.pid_labels;
            without_le = sets_.intern(without_label(label_views(sets_.labels(labels)), "le"));
        }
        if (family_.type == MetricType::histogram && k.has_le) {
            if (!k.le) {
                diagnostics_.warn(concat("skipped a bucket of ", family_.name,
                                         " whose le label is not a number"));
                return;
            }
            auto [b, is_new] = bucket_index_.try_emplace(without_le, buckets_.size());
            if (is_new) buckets_.emplace_back(without_le, std::map<double, double>{});
            buckets_[b->second].second[*k.le] += r.value;
            return;
        }
        samples_.at(labels, k.name_id, labels, 0.0) += r.value;
    }

    void add_buckets(bool accumulate) {
        const uint32_t bucket_name = names_.intern(family_.name + "_bucket");
        const uint32_t count_name = names_.intern(family_.name + "_count");
        for (const auto& [group, bounds] : buckets_) {
            double acc = 0.0;
            LabelViews labels = label_views(sets_.labels(group));
            labels.emplace_back("le", std::string_view());
            for (const auto& [bound, value] : bounds) {
                if (bound != bound) continue;  // NaN has no place in the order
                const std::string le = go_float(bound);
                labels.back().second = le;
                acc += value;
                MergedSample& sample =
                    samples_.entry(group, bucket_name, sets_.intern(labels), 0.0);
                sample.value = accumulate ? acc : value;
                if (auto it = bucket_exemplars_.find({group, bound});
                    it != bucket_exemplars_.end()) {
                    attach(sample, *it->second);
                }
            }
            if (accumulate) samples_.at(group, count_name, group, 0.0) = acc;
        }
    }

    void attach(MergedSample& sample, const ExemplarValue& exemplar) {
        sample.exemplar = static_cast<int32_t>(exemplars_.size());
        exemplars_.push_back(MergedExemplar{exemplar.labels, exemplar.value, exemplar.timestamp});
    }

    Names& names_;
    LabelSets& sets_;
    Diagnostics& diagnostics_;
    const FamilyBuild& family_;
    OrderedSamples samples_;
    std::unordered_map<EntryKey, double, EntryKeyHash> timestamps_;  // mostrecent modes
    // buckets[labels without le][upper bound] += value; groups in insertion order
    std::vector<std::pair<uint32_t, std::map<double, double>>> buckets_;
    std::unordered_map<uint32_t, size_t> bucket_index_;
    std::unordered_map<uint32_t, std::optional<ExemplarValue>> counter_exemplars_;  // by labels
    std::map<std::pair<uint32_t, double>, std::optional<ExemplarValue>> bucket_exemplars_;
    std::vector<MergedExemplar> exemplars_;
};

}  // namespace

struct Merger::Impl {
    explicit Impl(SeriesCache& c) : cache(c) {}
    SeriesCache& cache;
    uint64_t epoch = next_epoch();
    StringMap<uint32_t> family_index;
    std::vector<FamilyBuild> families;
    std::vector<SourceExemplar> exemplars;
    MergeResult result;

    void merge_family(FamilyBuild& family, bool accumulate);
};

Merger::Merger(SeriesCache& cache) : impl_(std::make_unique<Impl>(cache)) {}
Merger::~Merger() = default;

Diagnostics& Merger::diagnostics() { return impl_->result.diagnostics; }

void Merger::add_exemplars(std::vector<SourceExemplar> exemplars) {
    std::vector<SourceExemplar>& all = impl_->exemplars;
    if (all.empty()) {
        all = std::move(exemplars);
    } else {
        all.insert(all.end(), std::make_move_iterator(exemplars.begin()),
                   std::make_move_iterator(exemplars.end()));
    }
}

void Merger::add_source(Store store, const std::vector<SourceSample>& samples,
                        std::string_view origin) {
    Impl& m = *impl_;
    const bool gauge = store.type == MetricType::gauge;
    for (const SourceSample& sample : samples) {
        Key& key = *sample.key;
        if (key.epoch != m.epoch) {
            if (key.key.metric_name.empty()) {
                m.result.diagnostics.warn(
                    concat("skipped a sample with an empty metric name in ", origin));
                continue;
            }
            auto [it, is_new] = m.family_index.try_emplace(
                key.key.metric_name, static_cast<uint32_t>(m.families.size()));
            if (is_new) {
                m.families.push_back(FamilyBuild{
                    key.key.metric_name, key.key.help, store.type, GaugeMode::all, {}, {}});
            }
            key.family = it->second;
            key.epoch = m.epoch;
        }
        FamilyBuild& family = m.families[key.family];
        if (gauge) family.mode = store.mode;
        family.raw.push_back(sample);
    }
}

void Merger::Impl::merge_family(FamilyBuild& family, bool accumulate) {
    FamilyMerge merge(cache, result.diagnostics, family);
    for (const SourceSample& r : family.raw) merge.add(r);
    for (const SourceExemplar* e : family.exemplars) merge.add_exemplar(*e);
    std::vector<MergedSample> samples = merge.finish(accumulate);
    result.families.push_back(MergedFamily{std::move(family.name), std::move(family.help),
                                           family.type, std::move(samples),
                                           merge.take_exemplars()});
}

MergeResult Merger::finish(bool accumulate) {
    Impl& m = *impl_;
    m.result.families.reserve(m.families.size());
    for (const SourceExemplar& e : m.exemplars) {
        // A series no store of this merge has (its values archived meanwhile): no sample to carry
        // it.
        if (e.key->epoch == m.epoch) m.families[e.key->family].exemplars.push_back(&e);
    }
    for (FamilyBuild& family : m.families) m.merge_family(family, accumulate);
    m.result.names = &m.cache.names;
    m.result.label_sets = &m.cache.label_sets;
    return std::move(m.result);
}

}  // namespace gpe
