// gpe::Source over a multiprocess directory: collect and render through the
// interface the agent and the bindings use, and how file names map to stores.
#include "gpe/source.hpp"

#include <gtest/gtest.h>

#include <memory>

#include "gpe/mmap_file.hpp"
#include "gpe/series_key.hpp"
#include "temp_dir.hpp"

namespace gpe {
namespace {

using testing::TempDir;

void put(const TempDir& dir, const std::string& file, const std::string& metric,
         const std::string& sample, double value) {
    MmapFile f(dir.file(file));
    double* slot = f.slot(encode_series_key(metric, sample, {}, {}, "help"));
    slot[0] = value;
    slot[1] = 0;
}

TEST(DirectorySource, CollectsAndRendersTheDirectory) {
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", 2);
    put(dir, "counter_2.db", "reqs", "reqs_total", 3);
    MultiprocessReader reader;
    const std::unique_ptr<Source> source = std::make_unique<DirectorySource>(reader, dir.path());

    {
        const Collected collected = source->collect(true);
        ASSERT_EQ(collected.result.families.size(), 1u);
        const MergedFamily& family = collected.result.families[0];
        EXPECT_EQ(family.type, MetricType::counter);
        ASSERT_EQ(family.samples.size(), 1u);
        EXPECT_EQ(family.samples[0].value, 5.0);
    }  // the reader's lock goes with `collected`

    Diagnostics diagnostics;
    diagnostics.warn("from before");
    EXPECT_EQ(source->render(Format::kText, diagnostics),
              "# HELP reqs_total help\n# TYPE reqs_total counter\nreqs_total 5.0\n");
    EXPECT_TRUE(diagnostics.warnings.empty());  // replaced by this scrape's
}

TEST(DirectorySource, MovesTheWarningsOfTheScrape) {
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", 1);
    put(dir, "nonsense.db", "x", "x", 1);
    MultiprocessReader reader;
    DirectorySource source(reader, dir.path());
    Diagnostics diagnostics;
    const std::string body = source.render(Format::kOpenMetrics, diagnostics);
    EXPECT_EQ(body, "# HELP reqs help\n# TYPE reqs counter\nreqs_total 1.0\n# EOF\n");
    ASSERT_EQ(diagnostics.warnings.size(), 1u);
    EXPECT_NE(diagnostics.warnings[0].find("nonsense.db"), std::string::npos);
}

TEST(FileNames, NameTheirStore) {
    const FileName counter = parse_file_name("/d/counter_12.db");
    ASSERT_TRUE(counter.valid);
    EXPECT_EQ(counter.kind, (Store{MetricType::counter, GaugeMode::all}));
    const FileName gauge = parse_file_name("/d/gauge_livemostrecent_12.db");
    ASSERT_TRUE(gauge.valid);
    EXPECT_EQ(gauge.kind, (Store{MetricType::gauge, GaugeMode::livemostrecent}));
    EXPECT_EQ(gauge.pid, "12");
}

// prometheus_client reads a gauge file of any mode, and its merge treats a
// mode it does not know as `all`: one sample per pid.
TEST(FileNames, AGaugeOfAnUnknownModeMergesAsAll) {
    const FileName name = parse_file_name("/d/gauge_sometimes_12.db");
    ASSERT_TRUE(name.valid);
    EXPECT_EQ(name.mode, "sometimes");
    EXPECT_EQ(name.kind, (Store{MetricType::gauge, GaugeMode::all}));

    TempDir dir;
    put(dir, "gauge_sometimes_1.db", "g", "g", 5);
    put(dir, "gauge_sometimes_2.db", "g", "g", 2);
    MultiprocessReader reader;
    Diagnostics diagnostics;
    EXPECT_EQ(DirectorySource(reader, dir.path()).render(Format::kText, diagnostics),
              "# HELP g help\n# TYPE g gauge\ng{pid=\"1\"} 5.0\ng{pid=\"2\"} 2.0\n");
}

}  // namespace
}  // namespace gpe
