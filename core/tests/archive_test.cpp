#include "gpe/archive.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "gpe/exposition.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/series_key.hpp"
#include "temp_dir.hpp"

namespace gpe {
namespace {

using testing::TempDir;

void put(const TempDir& dir, const std::string& file, const std::string& metric,
         const std::string& sample, double value, double timestamp = 0) {
    MmapFile f(dir.file(file));
    double* slot = f.slot(encode_series_key(metric, sample, {}, {}, "help"));
    slot[0] = value;
    slot[1] = timestamp;
}

std::string render_dir(const TempDir& dir) {
    MultiprocessReader reader;
    Diagnostics diagnostics;
    return reader.render_directory(dir.path(), Format::kText, diagnostics);
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

TEST(Archive, TotalsAreUnchangedAndDeadFilesGo) {
    TempDir dir;
    put(dir, "counter_1.db", "reqs", "reqs_total", 3);
    put(dir, "counter_2.db", "reqs", "reqs_total", 4);
    put(dir, "histogram_2.db", "lat", "lat_bucket", 0);
    put(dir, "gauge_max_2.db", "peak", "peak", 9);
    put(dir, "gauge_max_1.db", "peak", "peak", 5);
    put(dir, "gauge_livesum_2.db", "busy", "busy", 1);
    put(dir, "gauge_all_2.db", "seen", "seen", 1);
    const std::string before = render_dir(dir);

    Diagnostics diagnostics;
    const ArchiveReport report = mark_process_dead(dir.path(), "2", diagnostics);
    EXPECT_TRUE(diagnostics.warnings.empty());
    EXPECT_EQ(report.removed, 1);
    EXPECT_EQ(report.folded, 3);
    EXPECT_FALSE(exists(dir.file("counter_2.db")));
    EXPECT_FALSE(exists(dir.file("gauge_livesum_2.db")));
    EXPECT_TRUE(exists(dir.file("counter_archive.db")));
    EXPECT_TRUE(exists(dir.file("gauge_all_2.db")));  // the pid label is its data

    const std::string after = render_dir(dir);
    EXPECT_NE(after.find("reqs_total 7.0"), std::string::npos) << after;
    EXPECT_NE(after.find("peak 9.0"), std::string::npos) << after;
    EXPECT_NE(before.find("busy 1.0"), std::string::npos) << before;
    EXPECT_EQ(after.find("busy"), std::string::npos) << after;  // live gauge of the dead is gone
    EXPECT_NE(after.find("seen{pid=\"2\"} 1.0"), std::string::npos) << after;
}

TEST(Archive, RepeatedDeathsAccumulateInOneArchive) {
    TempDir dir;
    for (int pid = 10; pid < 20; ++pid) {
        put(dir, "counter_" + std::to_string(pid) + ".db", "reqs", "reqs_total", 1);
        Diagnostics diagnostics;
        mark_process_dead(dir.path(), std::to_string(pid), diagnostics);
    }
    EXPECT_EQ(render_dir(dir),
              "# HELP reqs_total help\n# TYPE reqs_total counter\nreqs_total 10.0\n");
}

TEST(Archive, MostRecentKeepsTheLatestValue) {
    TempDir dir;
    put(dir, "gauge_mostrecent_1.db", "g", "g", 1, 100);
    put(dir, "gauge_mostrecent_2.db", "g", "g", 2, 50);
    Diagnostics diagnostics;
    mark_process_dead(dir.path(), "1", diagnostics);
    mark_process_dead(dir.path(), "2", diagnostics);
    EXPECT_EQ(render_dir(dir), "# HELP g help\n# TYPE g gauge\ng 1.0\n");
}

TEST(Archive, CorruptFileIsKeptAndReported) {
    TempDir dir;
    {
        std::ofstream out(dir.file("counter_3.db"), std::ios::binary);
        const uint32_t used = 1 << 20;  // more than the file holds
        out.write(reinterpret_cast<const char*>(&used), 4);
        out.write("\0\0\0\0", 4);
    }
    Diagnostics diagnostics;
    const ArchiveReport report = mark_process_dead(dir.path(), "3", diagnostics);
    EXPECT_EQ(report.folded, 0);
    EXPECT_TRUE(exists(dir.file("counter_3.db")));
    ASSERT_EQ(diagnostics.warnings.size(), 1u);
    EXPECT_NE(diagnostics.warnings[0].find("counter_3.db"), std::string::npos);
    EXPECT_FALSE(exists(dir.file("counter_archive.db")));
}

TEST(Archive, AnArchiveThatCannotGrowFoldsNothingAndKeepsTheFile) {
    TempDir dir;
    put(dir, "counter_4.db", "old", "old_total", 1);
    Diagnostics first;
    mark_process_dead(dir.path(), "4", first);  // the archive exists, 64 KiB
    // A dead process with more series than the archive can take without growing.
    const std::string big(30000, 'x');
    put(dir, "counter_5.db", "old", "old_total", 2);
    put(dir, "counter_5.db", big + "a", big + "a_total", 1);
    put(dir, "counter_5.db", big + "b", big + "b_total", 1);
    const std::string before = render_dir(dir);
    const pid_t child = ::fork();
    if (child == 0) {
        ::signal(SIGXFSZ, SIG_IGN);
        const rlimit rl{kInitialFileSize, kInitialFileSize};
        ::setrlimit(RLIMIT_FSIZE, &rl);
        Diagnostics diagnostics;
        const ArchiveReport report = mark_process_dead(dir.path(), "5", diagnostics);
        ::_exit(report.folded == 0 && diagnostics.warnings.size() == 1 ? 0 : 1);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_TRUE(exists(dir.file("counter_5.db")));
    EXPECT_EQ(render_dir(dir), before);  // nothing folded twice, nothing lost
}

TEST(Archive, RejectsPathLikeIds) {
    TempDir dir;
    Diagnostics diagnostics;
    mark_process_dead(dir.path(), "../x", diagnostics);
    mark_process_dead(dir.path(), "archive", diagnostics);
    EXPECT_EQ(diagnostics.warnings.size(), 2u);
}

}  // namespace
}  // namespace gpe
