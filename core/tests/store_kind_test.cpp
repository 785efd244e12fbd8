// The store vocabulary against prometheus_client's semantics, written out
// here as a table rather than derived from the code under test.
#include "gpe/store_kind.hpp"

#include <gtest/gtest.h>

#include <string>

namespace gpe {
namespace {

struct ModeRow {
    std::string_view name;
    bool live, aggregated, timestamp;
    Fold fold;
};

// multiprocess.py: min/max/sum/mostrecent (and live halves) drop the pid
// label; only mostrecent compares timestamps; mark_process_dead removes
// live* files; archives fold the rest; `all` keeps its per-pid files.
constexpr ModeRow kModeTable[] = {
    {"all", false, false, false, Fold::keep},
    {"liveall", true, false, false, Fold::drop},
    {"min", false, true, false, Fold::min},
    {"livemin", true, true, false, Fold::drop},
    {"max", false, true, false, Fold::max},
    {"livemax", true, true, false, Fold::drop},
    {"sum", false, true, false, Fold::sum},
    {"livesum", true, true, false, Fold::drop},
    {"mostrecent", false, true, true, Fold::mostrecent},
    {"livemostrecent", true, true, true, Fold::drop},
};

TEST(StoreKind, EveryGaugeModeMatchesTheTable) {
    ASSERT_EQ(std::size(kModeTable), kGaugeModes.size());
    for (const ModeRow& row : kModeTable) {
        SCOPED_TRACE(std::string(row.name));
        const std::optional<GaugeMode> mode = parse_gauge_mode(row.name);
        ASSERT_TRUE(mode.has_value());
        EXPECT_EQ(name(*mode), row.name);
        EXPECT_EQ(is_live(*mode), row.live);
        EXPECT_EQ(is_aggregated(*mode), row.aggregated);
        EXPECT_EQ(has_timestamp(*mode), row.timestamp);
        const Store store{MetricType::gauge, *mode};
        EXPECT_EQ(fold_rule(store), row.fold);
        EXPECT_EQ(has_timestamp(store), row.timestamp);
        EXPECT_EQ(store_name(store), "gauge_" + std::string(row.name));
        EXPECT_EQ(parse_store(store_name(store)), store);
        // The live half is the mode with "live" in front.
        if (row.live) {
            EXPECT_EQ(name(base_mode(*mode)), row.name.substr(4));
        } else {
            EXPECT_EQ(base_mode(*mode), *mode);
        }
    }
}

TEST(StoreKind, EveryMetricTypeRoundTrips) {
    const std::string_view names[] = {"counter", "gauge", "histogram", "summary"};
    ASSERT_EQ(std::size(names), kMetricTypes.size());
    for (std::string_view text : names) {
        const std::optional<MetricType> type = parse_metric_type(text);
        ASSERT_TRUE(type.has_value()) << text;
        EXPECT_EQ(name(*type), text);
    }
}

TEST(StoreKind, OtherTypesAreSummedAndNamedByTheirType) {
    for (MetricType type : {MetricType::counter, MetricType::histogram, MetricType::summary}) {
        const Store store{type, GaugeMode::all};
        EXPECT_EQ(fold_rule(store), Fold::sum);
        EXPECT_FALSE(has_timestamp(store));
        EXPECT_EQ(store_name(store), name(type));
        EXPECT_EQ(parse_store(name(type)), store);
    }
}

TEST(StoreKind, EveryStoreIsListedOnceWithAUniqueName) {
    for (size_t i = 0; i < kStores.size(); ++i) {
        EXPECT_EQ(parse_store(store_name(kStores[i])), kStores[i]);
        for (size_t j = i + 1; j < kStores.size(); ++j) {
            EXPECT_NE(store_name(kStores[i]), store_name(kStores[j]));
        }
    }
    EXPECT_EQ(kStores.size(), 3 + kGaugeModes.size());
}

TEST(StoreKind, FoldRulesHaveNames) {
    EXPECT_EQ(name(Fold::sum), "sum");
    EXPECT_EQ(name(Fold::min), "min");
    EXPECT_EQ(name(Fold::max), "max");
    EXPECT_EQ(name(Fold::mostrecent), "mostrecent");
    EXPECT_EQ(name(Fold::keep), "keep");
    EXPECT_EQ(name(Fold::drop), "drop");
}

TEST(StoreKind, RejectsWhatIsNotAName) {
    for (std::string_view text : {"", "Counter", "gauge_", "gauge", "counter_all", "gauge_live",
                                  "gauge_all_", "untyped", "info"}) {
        EXPECT_FALSE(parse_store(text).has_value()) << text;
    }
    for (std::string_view text : {"", "Gauge", "counter ", "untyped", "gauge_all"}) {
        EXPECT_FALSE(parse_metric_type(text).has_value()) << text;
    }
    for (std::string_view text : {"", "live", "ALL", "livelivesum", "most_recent"}) {
        EXPECT_FALSE(parse_gauge_mode(text).has_value()) << text;
    }
}

}  // namespace
}  // namespace gpe
