#include "gpe/value_store.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <thread>
#include <vector>

#include "gpe/exposition.hpp"
#include "gpe/multiprocess.hpp"
#include "gpe/series_key.hpp"
#include "temp_dir.hpp"

namespace gpe {
namespace {

using testing::TempDir;

class ValueStoreTest : public ::testing::Test {
  protected:
    void SetUp() override { ValueStore::instance().set_directory(dir_.path()); }
    void TearDown() override { ValueStore::instance().set_directory(""); }

    double read_value(const std::string& file, const std::string& key) {
        std::string buffer;
        read_used_region(dir_.file(file), buffer);
        double found = -1;
        for_each_entry(buffer, [&](std::string_view k, double v, double) {
            if (k == key) found = v;
        });
        return found;
    }

    TempDir dir_;
};

TEST(FilePrefix, NamesFilesLikePrometheusClient) {
    EXPECT_EQ(file_prefix_for("counter", ""), "counter");
    EXPECT_EQ(file_prefix_for("gauge", "livesum"), "gauge_livesum");
    EXPECT_THROW(file_prefix_for("gauge", "median"), std::invalid_argument);
    EXPECT_THROW(file_prefix_for("info", ""), std::invalid_argument);
}

TEST_F(ValueStoreTest, IncSetGetGoThroughTheFile) {
    const std::string key = encode_series_key("c", "c_total", {}, {}, "h");
    Value value("counter", key);
    value.inc(2);
    value.inc(0.5);
    EXPECT_EQ(value.get(), 2.5);
    EXPECT_EQ(read_value("counter_" + std::to_string(::getpid()) + ".db", key), 2.5);
    Value gauge("gauge_mostrecent", key);
    gauge.set(4, 123.0);
    EXPECT_EQ(gauge.get(), 4);
    EXPECT_EQ(gauge.timestamp(), 123.0);
}

TEST_F(ValueStoreTest, ConcurrentIncrementsAreNotLost) {
    Value value("counter", encode_series_key("c", "c_total", {}, {}, "h"));
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 100000; ++i) value.inc(1);
        });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(value.get(), 400000);
}

// For the ThreadSanitizer build (.ci/tsan.sh) as much as for the result:
// workers' threads create series (files grow) and increment while two
// threads scrape the directory through one shared reader, as the agent's
// HTTP threads do.
TEST_F(ValueStoreTest, ScrapesWhileThreadsCreateAndIncrementSeries) {
    constexpr int kWriters = 2;
    constexpr int kSeries = 300;
    MultiprocessReader reader;
    std::atomic<bool> writing{true};
    std::vector<std::thread> scrapers;
    for (int t = 0; t < 2; ++t) {
        scrapers.emplace_back([&] {
            while (writing.load()) {
                Diagnostics diagnostics;
                reader.render_directory(dir_.path(), Format::kText, diagnostics);
                EXPECT_TRUE(diagnostics.warnings.empty());
            }
        });
    }
    std::vector<std::thread> writers;
    for (int t = 0; t < kWriters; ++t) {
        writers.emplace_back([t] {
            for (int i = 0; i < kSeries; ++i) {
                Value value("counter", encode_series_key("c", "c_total", {"series"},
                                                         {std::to_string(i)}, "h"));
                value.inc(1);
                Value own("counter",
                          encode_series_key("w", "w_total", {"writer", "series"},
                                            {std::to_string(t), std::to_string(i)}, "h"));
                own.inc(2);
            }
        });
    }
    for (auto& writer : writers) writer.join();
    writing.store(false);
    for (auto& scraper : scrapers) scraper.join();

    Diagnostics diagnostics;
    const std::string text = reader.render_directory(dir_.path(), Format::kText, diagnostics);
    EXPECT_NE(text.find("c_total{series=\"299\"} 2.0\n"), std::string::npos);
    EXPECT_NE(text.find("w_total{series=\"299\",writer=\"1\"} 2.0\n"), std::string::npos);
}

TEST_F(ValueStoreTest, ForkedChildWritesItsOwnFile) {
    const std::string key = encode_series_key("c", "c_total", {}, {}, "h");
    Value value("counter", key);
    value.inc(5);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        value.inc(1);  // created in the parent, written to the child's file
        ::_exit(value.get() == 1 ? 0 : 1);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_EQ(value.get(), 5);
    EXPECT_EQ(read_value("counter_" + std::to_string(::getpid()) + ".db", key), 5);
    EXPECT_EQ(read_value("counter_" + std::to_string(child) + ".db", key), 1);
}

TEST_F(ValueStoreTest, ChangingDirectoryMovesValues) {
    const std::string key = encode_series_key("c", "c_total", {}, {}, "h");
    Value value("counter", key);
    value.inc(1);
    TempDir other;
    ValueStore::instance().set_directory(other.path());
    value.inc(1);  // a fresh file in the new directory starts at zero
    EXPECT_EQ(value.get(), 1);
    ValueStore::instance().set_directory(dir_.path());
    EXPECT_EQ(value.get(), 1);  // back to the first directory's file
}

TEST_F(ValueStoreTest, NamedIdentitiesWriteTheirOwnFiles) {
    // prometheus_client's test: MultiProcessValue(lambda: 123) and
    // MultiProcessValue(lambda: 456) side by side in one process.
    const std::string key = encode_series_key("c", "c_total", {}, {}, "h");
    Value first("counter", key, ProcessIdentity::named("123"));
    Value second("counter", key, ProcessIdentity::named("456"));
    Value by_pid("counter", key);
    first.inc(1);
    second.inc(2);
    by_pid.inc(4);
    EXPECT_EQ(read_value("counter_123.db", key), 1);
    EXPECT_EQ(read_value("counter_456.db", key), 2);
    EXPECT_EQ(read_value("counter_" + std::to_string(::getpid()) + ".db", key), 4);
    EXPECT_EQ(first.identity().name(), "123");
    EXPECT_EQ(by_pid.identity().name(), std::to_string(::getpid()));
}

TEST_F(ValueStoreTest, RenameMovesEveryValueInCreationOrder) {
    auto identity = ProcessIdentity::named("0");
    const std::string a = encode_series_key("a", "a_total", {}, {}, "h");
    const std::string b = encode_series_key("b", "b_total", {}, {}, "h");
    Value va("counter", a, identity);
    Value vb("counter", b, identity);
    va.inc(2);
    identity->rename("1");
    // Both entries exist in the new file at once, in creation order, zeroed.
    std::string buffer;
    read_used_region(dir_.file("counter_1.db"), buffer);
    std::vector<std::string> keys;
    for_each_entry(buffer, [&](std::string_view k, double v, double) {
        keys.emplace_back(k);
        EXPECT_EQ(v, 0);
    });
    EXPECT_EQ(keys, (std::vector<std::string>{a, b}));
    va.inc(1);
    EXPECT_EQ(va.get(), 1);
    EXPECT_EQ(read_value("counter_0.db", a), 2);
    EXPECT_EQ(read_value("counter_1.db", a), 1);
    identity->rename("0");  // back to the first file, which kept its value
    EXPECT_EQ(va.get(), 2);
    EXPECT_EQ(identity->name(), "0");
    EXPECT_THROW(ProcessIdentity::pid()->rename("x"), std::logic_error);
}

TEST_F(ValueStoreTest, SameNameSharesOneFile) {
    // Two groups with one name must append to one mapping, or the second
    // would overwrite the first's entries.
    const std::string a = encode_series_key("a", "a_total", {}, {}, "h");
    const std::string b = encode_series_key("b", "b_total", {}, {}, "h");
    const std::string c = encode_series_key("c", "c_total", {}, {}, "h");
    auto first = ProcessIdentity::named("w");
    Value va("counter", a, first);
    Value vb("counter", b, ProcessIdentity::named("w"));
    Value vc("counter", c, first);  // appended after b, not over it
    va.inc(1);
    vb.inc(2);
    vc.inc(3);
    EXPECT_EQ(read_value("counter_w.db", a), 1);
    EXPECT_EQ(read_value("counter_w.db", b), 2);
    EXPECT_EQ(read_value("counter_w.db", c), 3);
}

TEST_F(ValueStoreTest, NamedIdentityKeepsItsFileAcrossFork) {
    const std::string key = encode_series_key("c", "c_total", {}, {}, "h");
    auto identity = ProcessIdentity::named("fixed");
    Value named("counter", key, identity);
    Value by_pid("counter", key);
    named.inc(1);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        named.inc(1);   // still counter_fixed.db: the name did not change
        by_pid.inc(1);  // the child's own pid file
        ::_exit(named.get() == 2 && by_pid.get() == 1 ? 0 : 1);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_EQ(read_value("counter_fixed.db", key), 2);
    EXPECT_EQ(read_value("counter_" + std::to_string(child) + ".db", key), 1);
}

TEST_F(ValueStoreTest, ClosedFilesReopenInTheCurrentDirectory) {
    const std::string key = encode_series_key("c", "c_total", {}, {}, "h");
    auto identity = ProcessIdentity::named("7");
    Value value("counter", key, identity);
    value.inc(3);
    TempDir other;
    ValueStore::instance().set_directory(other.path());
    identity->close_files();
    value.inc(1);
    EXPECT_EQ(value.get(), 1);
    EXPECT_EQ(read_value("counter_7.db", key), 3);  // the first directory's file is untouched
    std::string buffer;
    read_used_region(other.file("counter_7.db"), buffer);
    double found = -1;
    for_each_entry(buffer, [&](std::string_view, double v, double) { found = v; });
    EXPECT_EQ(found, 1);
}

// Mappings of `path` in this process.
int mappings_of(const std::string& path) {
    std::ifstream maps("/proc/self/maps");
    int count = 0;
    for (std::string line; std::getline(maps, line);) {
        if (line.ends_with(" " + path)) ++count;
    }
    return count;
}

TEST_F(ValueStoreTest, SwitchingNamesBackAndForthKeepsOneMappingPerFile) {
    auto identity = ProcessIdentity::named("0");
    Value value("counter", encode_series_key("c", "c_total", {}, {}, "h"), identity);
    for (int i = 0; i < 20; ++i) {
        identity->rename(i % 2 ? "0" : "1");
        value.inc(1);
    }
    EXPECT_EQ(value.get(), 10);
    EXPECT_EQ(mappings_of(dir_.file("counter_0.db")), 1);
    EXPECT_EQ(mappings_of(dir_.file("counter_1.db")), 1);
}

TEST_F(ValueStoreTest, AFileRemovedAfterCloseIsCreatedAgain) {
    // prometheus_client's tests close the files, then mark_process_dead()
    // removes them; a value used again must not write into the removed file.
    const std::string key = encode_series_key("c", "c_total", {}, {}, "h");
    auto identity = ProcessIdentity::named("9");
    Value value("counter", key, identity);
    value.inc(1);
    identity->close_files();
    ASSERT_EQ(::unlink(dir_.file("counter_9.db").c_str()), 0);
    value.inc(2);
    EXPECT_EQ(read_value("counter_9.db", key), 2);
}

// Runs `body` in a forked child whose files cannot grow past `limit` bytes
// (RLIMIT_FSIZE: the same EFBIG a full filesystem gives as ENOSPC, without
// a mount); the child's exit code is body's result.
int with_file_size_limit(size_t limit, const std::function<int()>& body) {
    const pid_t child = ::fork();
    if (child == 0) {
        ::signal(SIGXFSZ, SIG_IGN);  // an error from the call, not a signal
        const rlimit rl{limit, limit};
        ::setrlimit(RLIMIT_FSIZE, &rl);
        ::_exit(body());
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST_F(ValueStoreTest, AValueThatCannotBeStoredStaysExactInMemory) {
    const std::string small = encode_series_key("c", "c_total", {}, {}, "h");
    const std::string big(40000, 'k');  // two of these do not fit in 64 KiB
    const int code = with_file_size_limit(kInitialFileSize, [&] {
        std::vector<std::string> warnings;
        ValueStore::instance().set_warning_handler(
            [&](const std::string& message) { warnings.push_back(message); });
        Value errors("counter", encode_series_key("e", "e_total", {}, {}, "h"));
        ValueStore::instance().count_storage_errors_in(&errors);
        Value stored("counter", small);
        Value first("counter", big + "1");
        Value second("counter", big + "2");  // the file cannot grow: in memory
        Value third("counter", big + "3");
        stored.inc(1);
        second.inc(2.5);
        second.inc(0.5);
        third.inc(7);
        if (second.get() != 3 || third.get() != 7 || stored.get() != 1) return 1;
        if (ValueStore::instance().storage_errors() != 2) return 2;
        if (errors.get() != 2) return 3;     // counted in a slot made while there was room
        if (warnings.size() != 1) return 4;  // one warning per directory and cause
        if (warnings[0].find(dir_.path()) == std::string::npos) return 5;
        if (warnings[0].find("File too large") == std::string::npos) return 6;
        ValueStore::instance().count_storage_errors_in(nullptr);
        return 0;
    });
    EXPECT_EQ(code, 0);
}

}  // namespace
}  // namespace gpe
