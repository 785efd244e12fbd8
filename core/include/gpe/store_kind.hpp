// The vocabulary of stores: metric types, gauge multiprocess modes and every
// rule that depends on them (which modes are live, which aggregate across
// processes, which keep timestamps, what becomes of a dead process's values,
// and the store names in file and key names), so that no other file spells a
// type or a mode. The semantics are prometheus_client's (multiprocess.py,
// values.py); as its _MULTIPROC_MODES list, each live mode is derived from the
// mode it is the live half of.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace gpe {

enum class MetricType : uint8_t { counter, gauge, histogram, summary };

// In pairs: each mode, then its live half.
enum class GaugeMode : uint8_t {
    all,
    liveall,
    min,
    livemin,
    max,
    livemax,
    sum,
    livesum,
    mostrecent,
    livemostrecent,
};

inline constexpr std::array<MetricType, 4> kMetricTypes = {
    MetricType::counter, MetricType::gauge, MetricType::histogram, MetricType::summary};

inline constexpr std::array<GaugeMode, 10> kGaugeModes = {
    GaugeMode::all,        GaugeMode::liveall,       GaugeMode::min, GaugeMode::livemin,
    GaugeMode::max,        GaugeMode::livemax,       GaugeMode::sum, GaugeMode::livesum,
    GaugeMode::mostrecent, GaugeMode::livemostrecent};

constexpr std::string_view name(MetricType type) {
    constexpr std::array<std::string_view, 4> names = {"counter", "gauge", "histogram", "summary"};
    return names[static_cast<size_t>(type)];
}

constexpr std::string_view name(GaugeMode mode) {
    constexpr std::array<std::string_view, 10> names = {
        "all",     "liveall", "min",     "livemin",    "max",
        "livemax", "sum",     "livesum", "mostrecent", "livemostrecent"};
    return names[static_cast<size_t>(mode)];
}

constexpr std::optional<MetricType> parse_metric_type(std::string_view text) {
    for (MetricType type : kMetricTypes) {
        if (name(type) == text) return type;
    }
    return std::nullopt;
}

constexpr std::optional<GaugeMode> parse_gauge_mode(std::string_view text) {
    for (GaugeMode mode : kGaugeModes) {
        if (name(mode) == text) return mode;
    }
    return std::nullopt;
}

// The mode a live mode is the live half of (all for liveall, ...).
constexpr GaugeMode base_mode(GaugeMode mode) {
    return static_cast<GaugeMode>(static_cast<uint8_t>(mode) & ~uint8_t{1});
}

// Live gauges show only processes that are alive: a dead one's are removed.
constexpr bool is_live(GaugeMode mode) { return base_mode(mode) != mode; }

// One value per label set across processes (no pid label): all but all/liveall.
constexpr bool is_aggregated(GaugeMode mode) { return base_mode(mode) != GaugeMode::all; }

// mostrecent/livemostrecent merge by the timestamp written beside each value.
constexpr bool has_timestamp(GaugeMode mode) { return base_mode(mode) == GaugeMode::mostrecent; }

// What becomes of a dead process's values (mark_process_dead): folded into
// the archive by sum, min, max or latest timestamp, kept per pid (an `all`
// gauge's pid label is the data) or dropped (live gauges).
enum class Fold : uint8_t { sum, min, max, mostrecent, keep, drop };

constexpr std::string_view name(Fold fold) {
    constexpr std::array<std::string_view, 6> names = {"sum",        "min",  "max",
                                                       "mostrecent", "keep", "drop"};
    return names[static_cast<size_t>(fold)];
}

// A process's store of one type, as in {type}_{pid}.db or gauge_{mode}_{pid}.db.
struct Store {
    MetricType type = MetricType::counter;
    GaugeMode mode = GaugeMode::all;  // gauges only; `all` for the other types
    bool operator==(const Store&) const = default;
};

// Every store: the three other types, then a gauge of each mode.
inline constexpr std::array<Store, 3 + kGaugeModes.size()> kStores = [] {
    std::array<Store, 3 + kGaugeModes.size()> out{
        {{MetricType::counter}, {MetricType::histogram}, {MetricType::summary}}};
    for (size_t i = 0; i < kGaugeModes.size(); ++i)
        out[3 + i] = {MetricType::gauge, kGaugeModes[i]};
    return out;
}();

constexpr Fold fold_rule(Store store) {
    if (store.type != MetricType::gauge) return Fold::sum;
    if (is_live(store.mode)) return Fold::drop;
    switch (store.mode) {
        case GaugeMode::min:
            return Fold::min;
        case GaugeMode::max:
            return Fold::max;
        case GaugeMode::mostrecent:
            return Fold::mostrecent;
        case GaugeMode::sum:
            return Fold::sum;
        default:
            return Fold::keep;  // all
    }
}

constexpr bool has_timestamp(Store store) {
    return store.type == MetricType::gauge && has_timestamp(store.mode);
}

// The store's name as prometheus_client's file names use it: `counter`,
// `gauge_livesum`, ...
constexpr std::string_view store_name(Store store) {
    constexpr std::array<std::string_view, 10> gauges = {
        "gauge_all",        "gauge_liveall",       "gauge_min", "gauge_livemin",
        "gauge_max",        "gauge_livemax",       "gauge_sum", "gauge_livesum",
        "gauge_mostrecent", "gauge_livemostrecent"};
    if (store.type == MetricType::gauge) return gauges[static_cast<size_t>(store.mode)];
    return name(store.type);
}

// `counter`, `gauge_livesum`, ...; nullopt for anything else (`gauge`, `gauge_x`).
constexpr std::optional<Store> parse_store(std::string_view text) {
    for (Store store : kStores) {
        if (store_name(store) == text) return store;
    }
    return std::nullopt;
}

}  // namespace gpe
