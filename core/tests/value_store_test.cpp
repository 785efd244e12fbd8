#include "gpe/value_store.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <vector>

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

}  // namespace
}  // namespace gpe
