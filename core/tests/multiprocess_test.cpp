#include "gpe/multiprocess.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <latch>
#include <thread>

#include "gpe/exposition.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/series_key.hpp"
#include "temp_dir.hpp"

namespace gpe {
namespace {

using testing::TempDir;

// Writes one sample the way prometheus_client's MmapedValue does.
void put(const TempDir& dir, const std::string& file, const std::string& metric,
         const std::string& sample, std::vector<std::string> names, std::vector<std::string> values,
         double value, double timestamp = 0) {
    MmapFile f(dir.file(file));
    double* slot = f.slot(encode_series_key(metric, sample, names, values, "help"));
    slot[0] = value;
    slot[1] = timestamp;
}

std::string render_dir(const TempDir& dir, Diagnostics* diagnostics = nullptr,
                       Format format = Format::kText) {
    MultiprocessReader reader;
    Diagnostics found;
    std::string out = reader.render_directory(dir.path(), format, found);
    if (diagnostics) *diagnostics = found;
    return out;
}

TEST(Merge, CountersAreSummedAcrossProcesses) {
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {"m"}, {"GET"}, 2);
    put(dir, "counter_2.db", "reqs", "reqs_total", {"m"}, {"GET"}, 3);
    EXPECT_EQ(render_dir(dir),
              "# HELP reqs_total help\n# TYPE reqs_total counter\nreqs_total{m=\"GET\"} 5.0\n");
}

TEST(Merge, GaugeModes) {
    struct Case {
        std::string mode;
        std::string expected_samples;
    };
    const std::vector<Case> cases = {
        {"sum", "g 7.0\n"},        {"livesum", "g 7.0\n"},
        {"max", "g 5.0\n"},        {"livemax", "g 5.0\n"},
        {"min", "g 2.0\n"},        {"livemin", "g 2.0\n"},
        {"mostrecent", "g 2.0\n"}, {"livemostrecent", "g 2.0\n"},
    };
    for (const auto& c : cases) {
        TempDir dir;
        put(dir, "gauge_" + c.mode + "_1.db", "g", "g", {}, {}, 5, /*timestamp=*/10);
        put(dir, "gauge_" + c.mode + "_2.db", "g", "g", {}, {}, 2, /*timestamp=*/20);
        EXPECT_EQ(render_dir(dir), "# HELP g help\n# TYPE g gauge\n" + c.expected_samples)
            << c.mode;
    }
}

TEST(Merge, AllModeKeepsOneSeriesPerPid) {
    TempDir dir;
    put(dir, "gauge_all_11.db", "g", "g", {"z"}, {"1"}, 5);
    const std::string out = render_dir(dir);
    EXPECT_EQ(out, "# HELP g help\n# TYPE g gauge\ng{pid=\"11\",z=\"1\"} 5.0\n");
}

TEST(Merge, MostRecentWithoutTimestampIsNotShown) {
    TempDir dir;
    put(dir, "gauge_mostrecent_1.db", "g", "g", {}, {}, 5, 0);
    EXPECT_EQ(render_dir(dir), "# HELP g help\n# TYPE g gauge\n");
}

TEST(Merge, HistogramBucketsAreCumulativeAndCountComesFromBuckets) {
    TempDir dir;
    for (const char* file : {"histogram_1.db", "histogram_2.db"}) {
        put(dir, file, "lat", "lat_sum", {}, {}, 1.5);
        put(dir, file, "lat", "lat_bucket", {"le"}, {"0.5"}, 1);
        put(dir, file, "lat", "lat_bucket", {"le"}, {"1.0"}, 0);
        put(dir, file, "lat", "lat_bucket", {"le"}, {"+Inf"}, 2);
    }
    EXPECT_EQ(render_dir(dir),
              "# HELP lat help\n# TYPE lat histogram\nlat_sum 3.0\n"
              "lat_bucket{le=\"0.5\"} 2.0\nlat_bucket{le=\"1.0\"} 2.0\n"
              "lat_bucket{le=\"+Inf\"} 6.0\nlat_count 6.0\n");
}

TEST(Merge, MergeWithoutAccumulateKeepsRawBuckets) {
    TempDir dir;
    put(dir, "histogram_1.db", "lat", "lat_bucket", {"le"}, {"0.5"}, 1);
    put(dir, "histogram_1.db", "lat", "lat_bucket", {"le"}, {"+Inf"}, 2);
    MultiprocessReader reader;
    auto collected = reader.merge_files({dir.file("histogram_1.db")}, /*accumulate=*/false);
    ASSERT_EQ(collected.result.families.size(), 1u);
    const auto& samples = collected.result.families[0].samples;
    ASSERT_EQ(samples.size(), 2u);  // no _count without accumulation
    EXPECT_EQ(samples[1].value, 2);
}

TEST(Robustness, BadFilesAreSkippedWithAWarningNamingThem) {
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {}, {}, 4);
    std::ofstream(dir.file("counter_2.db")).close();                                      // empty
    std::ofstream(dir.file("notes_3.db")) << "hello";                                     // foreign
    std::ofstream(dir.file("counter_4.db"), std::ios::binary) << "\xff\xff\xff\x7f....";  // corrupt
    {
        // Valid layout, key is not JSON.
        MmapFile f(dir.file("summary_5.db"));
        f.slot("not json")[0] = 1;
    }
    Diagnostics diagnostics;
    const std::string out = render_dir(dir, &diagnostics);
    EXPECT_EQ(out, "# HELP reqs_total help\n# TYPE reqs_total counter\nreqs_total 4.0\n");
    ASSERT_EQ(diagnostics.warnings.size(), 4u);
    std::string all;
    for (const auto& w : diagnostics.warnings) all += w + "\n";
    for (const char* name : {"counter_2.db", "notes_3.db", "counter_4.db", "summary_5.db"}) {
        EXPECT_NE(all.find(name), std::string::npos) << name << " not named in:\n" << all;
    }
}

TEST(Robustness, DotFilesAndOtherExtensionsAreIgnored) {
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {}, {}, 4);
    std::ofstream(dir.file(".hidden.db")) << "x";
    std::ofstream(dir.file("counter_2.db.corrupt")) << "x";
    Diagnostics diagnostics;
    render_dir(dir, &diagnostics);
    EXPECT_TRUE(diagnostics.warnings.empty());
}

TEST(Merge, OpenMetricsEndsWithEofAndKeepsCounterFamilyName) {
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {}, {}, 1);
    EXPECT_EQ(render_dir(dir, nullptr, Format::kOpenMetrics),
              "# HELP reqs help\n# TYPE reqs counter\nreqs_total 1.0\n# EOF\n");
}

TEST(Merge, ReaderCacheIsReusedAcrossScrapes) {
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", {}, {}, 1);
    MultiprocessReader reader;
    Diagnostics diagnostics;
    const std::string first = reader.render_directory(dir.path(), Format::kText, diagnostics);
    put(dir, "counter_1.db", "reqs", "reqs_total", {}, {}, 2);
    put(dir, "counter_2.db", "reqs", "reqs_total", {}, {}, 5);
    const std::string second = reader.render_directory(dir.path(), Format::kText, diagnostics);
    EXPECT_NE(first.find("reqs_total 1.0"), std::string::npos);
    EXPECT_NE(second.find("reqs_total 7.0"), std::string::npos) << second;
}

// A child forked while another thread holds the directory shared (a mirror
// pass) must not keep the lock: the parent's mark_process_dead would wait for
// the child's whole life.
TEST(DirectoryLock, AChildForkedWhileItIsHeldDoesNotKeepIt) {
    TempDir dir;
    std::latch locked(1);
    std::latch forked(1);
    std::thread reader([&] {
        const DirectoryLock lock(dir.path(), DirectoryLock::Mode::kShared);
        locked.count_down();
        forked.wait();
    });
    locked.wait();
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::sleep(30);
        ::_exit(0);
    }
    forked.count_down();
    reader.join();
    auto exclusive = std::async(std::launch::async, [&] {
        const DirectoryLock lock(dir.path(), DirectoryLock::Mode::kExclusive);
    });
    const bool taken = exclusive.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    exclusive.get();
    EXPECT_TRUE(taken) << "the forked child kept the directory lock";
}

}  // namespace
}  // namespace gpe
