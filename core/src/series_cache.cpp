#include "gpe/detail/series_cache.hpp"

#include "gpe/exposition.hpp"
#include "gpe/float_format.hpp"

namespace gpe {

LabelViews label_views(const Labels& labels) {
    LabelViews out;
    out.reserve(labels.size() + 1);
    for (const auto& [name, value] : labels) out.emplace_back(name, value);
    return out;
}

LabelViews without_label(const LabelViews& labels, std::string_view name) {
    LabelViews out;
    out.reserve(labels.size());
    for (const auto& label : labels) {
        if (label.first != name) out.push_back(label);
    }
    return out;
}

namespace {

void append_sized(std::string& out, std::string_view s) {
    const auto n = static_cast<uint32_t>(s.size());
    out.append(reinterpret_cast<const char*>(&n), sizeof n);
    out.append(s);
}

}  // namespace

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

void LabelSets::clear() {
    sets_.clear();
    index_.clear();
}

uint32_t Names::intern(std::string_view name) {
    if (auto it = index_.find(name); it != index_.end()) return it->second;
    const auto id = static_cast<uint32_t>(names_.size());
    names_.emplace_back(name);
    index_.emplace(std::string(name), id);
    return id;
}

void Names::clear() {
    names_.clear();
    index_.clear();
}

// ---- series cache ----

SeriesCache::SeriesCache() = default;
SeriesCache::~SeriesCache() = default;

SeriesCache::Key* SeriesCache::lookup(std::string_view json) {
    if (auto it = keys_.find(json); it != keys_.end()) return it->second.get();
    auto key = std::make_unique<Key>();
    key->key = decode_series_key(json);  // throws std::invalid_argument
    const LabelViews labels = label_views(key->key.labels);
    for (const auto& [name, value] : labels) {
        if (name == "le") {
            key->has_le = true;
            key->le = parse_python_float(value);
            break;
        }
    }
    key->name_id = names.intern(key->key.sample_name);
    key->labels_id = label_sets.intern(labels);
    key->without_pid_id = label_sets.intern(without_label(labels, "pid"));
    key->without_le_id =
        key->has_le ? label_sets.intern(without_label(labels, "le")) : key->labels_id;
    Key* raw = key.get();
    auto [it, inserted] = keys_.emplace(std::string(json), std::move(key));
    raw->json = it->first;  // node-based map: the string stays put
    return raw;
}

uint32_t SeriesCache::labels_with_pid(const Key& key, std::string_view pid) {
    LabelViews labels = label_views(key.key.labels);
    labels.emplace_back("pid", pid);
    return label_sets.intern(labels);
}

void SeriesCache::trim(size_t series_in_use) {
    if (keys_.size() > 2 * series_in_use + 10000 || label_sets.size() > 4 * series_in_use + 10000) {
        keys_.clear();
        label_sets.clear();
        names.clear();
        ++generation_;
    }
}

}  // namespace gpe
