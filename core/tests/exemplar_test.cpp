#include "gpe/exemplar.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gpe/archive.hpp"
#include "gpe/multiprocess.hpp"
#include "gpe/series_key.hpp"
#include "gpe/value_store.hpp"
#include "temp_dir.hpp"

namespace gpe {
namespace {

using testing::TempDir;
using Pairs = std::vector<std::pair<std::string, std::string>>;

std::string rendered(const ExemplarLabels& labels) {
    std::string out;
    ExemplarLabels::render(labels.encoded(), out);
    return out;
}

TEST(ExemplarLabels, AreSortedEscapedAndDecodedBack) {
    const ExemplarLabels labels(Pairs{{"trace_id", "abc"}, {"a", "q\"b\\c\nd"}, {"trace_id", "x"}});
    EXPECT_EQ(rendered(labels), R"({a="q\"b\\c\nd",trace_id="x"})");
    EXPECT_EQ(ExemplarLabels::decode(labels.encoded()),
              (Pairs{{"a", "q\"b\\c\nd"}, {"trace_id", "x"}}));
}

TEST(ExemplarLabels, AreLimitedTo128CodePointsAsInPrometheusClient) {
    const std::string u_umlaut = "\xc3\xbc";  // one code point, two bytes
    std::string value;
    for (int i = 0; i < 127; ++i) value += u_umlaut;
    EXPECT_NO_THROW(ExemplarLabels(Pairs{{"t", value}}));  // 128 code points, 255 bytes
    value += u_umlaut;
    try {
        ExemplarLabels(Pairs{{"t", value}});
        FAIL() << "129 code points accepted";
    } catch (const std::invalid_argument& e) {
        EXPECT_STREQ(e.what(),
                     "Exemplar labels have 129 UTF-8 characters, exceeding the limit of 128");
    }
    EXPECT_THROW(ExemplarLabels(Pairs{{"", "x"}}), std::invalid_argument);
    EXPECT_THROW(ExemplarLabels(Pairs{{"__reserved", "x"}}), std::invalid_argument);
    EXPECT_THROW(ExemplarLabels(Pairs{{"t", "\xff"}}), std::invalid_argument);
    EXPECT_THROW(ExemplarLabels::decode(std::string("\x05\x00"
                                                    "ab",
                                                    4)),
                 std::invalid_argument);
}

TEST(ExemplarFile, LooksEmptyToPrometheusClientAndKeepsItsRecords) {
    TempDir dir;
    const std::string path = dir.file("exemplars_1.db");
    const ExemplarLabels small(Pairs{{"trace_id", "1"}});
    {
        ExemplarFile file(path);
        ASSERT_TRUE(
            file.slot("counter k1", small.encoded().size()).store(small.encoded(), 2.0, 100.5));
    }
    // prometheus_client reads the used size of the header: 8, no entry.
    std::string buffer;
    read_used_region(path, buffer);
    size_t entries = 0;
    for_each_entry(buffer, [&](std::string_view, double, double) { ++entries; });
    EXPECT_EQ(entries, 0u);

    ExemplarFile reopened(path);  // a process with the same pid later: records found again
    const auto kept = reopened.find("counter k1").load();
    ASSERT_TRUE(kept);
    EXPECT_EQ(kept->labels, small.encoded());
    EXPECT_EQ(kept->value, 2.0);
    EXPECT_EQ(kept->timestamp, 100.5);
    EXPECT_FALSE(reopened.find("counter k2"));
}

TEST(ExemplarFile, ABiggerLabelSetGetsANewRecordThatReadersTake) {
    TempDir dir;
    const std::string path = dir.file("exemplars_1.db");
    ExemplarFile file(path);
    const ExemplarLabels small(Pairs{{"t", "1"}});
    const ExemplarLabels big(Pairs{{"t", std::string(120, 'x')}});
    file.slot("k", small.encoded().size()).store(small.encoded(), 1, 1);
    const ExemplarSlot grown = file.slot("k", big.encoded().size());
    EXPECT_GE(grown.capacity(), big.encoded().size());
    grown.store(big.encoded(), 2, 2);
    file.slot("k", small.encoded().size()).store(small.encoded(), 3, 3);  // fits the new one
    std::vector<ExemplarValue> read;
    read_exemplar_file(path, [&](std::string_view key, ExemplarValue&& e) {
        EXPECT_EQ(key, "k");
        read.push_back(std::move(e));
    });
    ASSERT_EQ(read.size(), 1u);
    EXPECT_EQ(read[0].value, 3);
    EXPECT_EQ(read[0].labels, small.encoded());
}

TEST(ExemplarFile, GrowsPastItsFirstAllocation) {
    TempDir dir;
    ExemplarFile file(dir.file("exemplars_1.db"));
    const ExemplarLabels labels(Pairs{{"trace_id", std::string(32, 'a')}});
    std::vector<ExemplarSlot> slots;
    for (int i = 0; i < 2000; ++i) {
        slots.push_back(file.slot("key " + std::to_string(i), labels.encoded().size()));
    }
    for (int i = 0; i < 2000; ++i) slots[i].store(labels.encoded(), i, i);  // old mappings too
    int count = 0;
    read_exemplar_file(dir.file("exemplars_1.db"), [&](std::string_view key, ExemplarValue&& e) {
        EXPECT_EQ(key, "key " + std::to_string(static_cast<int>(e.value)));
        ++count;
    });
    EXPECT_EQ(count, 2000);
}

TEST(ExemplarFile, ReadersNeverSeeAHalfWrittenExemplar) {
    TempDir dir;
    const std::string path = dir.file("exemplars_1.db");
    ExemplarFile file(path);
    const ExemplarSlot slot = file.slot("k", 200);
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int w = 0; w < 3; ++w) {
        writers.emplace_back([&, w] {
            for (int i = 0; !stop; ++i) {
                // Both labels and the value say the same number: a torn read would not.
                const std::string n = std::to_string(w * 1000000 + i);
                const ExemplarLabels labels(Pairs{{"a", n}, {"b", n + std::string(i % 90, 'z')}});
                slot.store(labels.encoded(), std::stod(n), 1.0);
            }
        });
    }
    int checked = 0;
    for (int round = 0; round < 3000; ++round) {
        read_exemplar_file(path, [&](std::string_view, ExemplarValue&& e) {
            const Pairs pairs = ExemplarLabels::decode(e.labels);
            ASSERT_EQ(pairs.size(), 2u);
            EXPECT_EQ(pairs[0].second, pairs[1].second.substr(0, pairs[0].second.size()));
            EXPECT_EQ(std::stod(pairs[0].second), e.value);
            ++checked;
        });
    }
    stop = true;
    for (auto& t : writers) t.join();
    EXPECT_GT(checked, 0);
}

TEST(ExemplarFile, AForeignFileIsAFormatError) {
    TempDir dir;
    const std::string path = dir.file("exemplars_1.db");
    std::ofstream(path) << std::string(64, 'x');
    EXPECT_THROW(ExemplarFile{path}, FormatError);
    EXPECT_THROW(read_exemplar_file(path, [](std::string_view, ExemplarValue&&) {}), FormatError);
}

class ExemplarMergeTest : public ::testing::Test {
  protected:
    void SetUp() override { ValueStore::instance().set_directory(dir_.path()); }
    void TearDown() override { ValueStore::instance().set_directory(""); }

    std::string openmetrics() {
        Diagnostics diagnostics;
        std::string out = reader_.render_directory(dir_.path(), Format::kOpenMetrics, diagnostics);
        for (const auto& warning : diagnostics.warnings) ADD_FAILURE() << warning;
        return out;
    }

    // In a child process: the counter's value and exemplar, then exit.
    void in_child(double amount, const std::string& trace, double timestamp) {
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            Value counter("counter", key_);
            counter.inc(amount);
            const bool stored =
                counter.set_exemplar(ExemplarLabels(Pairs{{"trace_id", trace}}), amount, timestamp);
            ::_exit(stored ? 0 : 1);
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        children_.push_back(std::to_string(pid));
    }

    TempDir dir_;
    MultiprocessReader reader_;
    const std::string key_ = encode_series_key("req", "req_total", {"m"}, {"GET"}, "Requests");
    std::vector<std::string> children_;
};

TEST_F(ExemplarMergeTest, TheMostRecentAcrossProcessesAndTheArchiveWins) {
    in_child(1, "older", 10.0);
    in_child(2, "newest", 30.0);
    in_child(4, "middle", 20.0);
    const std::string expected = "req_total{m=\"GET\"} 7.0 # {trace_id=\"newest\"} 2.0 30.0\n";
    EXPECT_NE(openmetrics().find(expected), std::string::npos) << openmetrics();
    // Text: unchanged, no exemplar.
    Diagnostics diagnostics;
    const std::string text = reader_.render_directory(dir_.path(), Format::kText, diagnostics);
    EXPECT_NE(text.find("req_total{m=\"GET\"} 7.0\n"), std::string::npos) << text;

    for (const std::string& pid : children_) {
        Diagnostics archived;
        mark_process_dead(dir_.path(), pid, archived);
        EXPECT_TRUE(archived.warnings.empty());
        EXPECT_NE(::access(dir_.file("exemplars_archive.db").c_str(), F_OK), -1);
        EXPECT_EQ(::access(dir_.file("exemplars_" + pid + ".db").c_str(), F_OK), -1);
    }
    EXPECT_NE(openmetrics().find(expected), std::string::npos) << openmetrics();
    in_child(8, "later", 40.0);  // a live process with a newer one
    EXPECT_NE(openmetrics().find("req_total{m=\"GET\"} 15.0 # {trace_id=\"later\"} 8.0 40.0\n"),
              std::string::npos)
        << openmetrics();
}

TEST_F(ExemplarMergeTest, BucketsCarryTheirOwnAndNoTimestampIsWrittenWithout) {
    const std::string bucket = encode_series_key("lat", "lat_bucket", {"le"}, {"0.5"}, "Latency");
    const std::string other = encode_series_key("lat", "lat_bucket", {"le"}, {"+Inf"}, "Latency");
    Value in_bucket("histogram", bucket);
    Value inf("histogram", other);
    Value sum("histogram", encode_series_key("lat", "lat_sum", {}, {}, "Latency"));
    in_bucket.inc(1);
    inf.inc(1);
    sum.inc(3.25);
    ASSERT_TRUE(in_bucket.set_exemplar(ExemplarLabels(Pairs{{"t", "a"}}), 0.25, std::nan("")));
    const std::string out = openmetrics();
    EXPECT_NE(out.find("lat_bucket{le=\"0.5\"} 1.0 # {t=\"a\"} 0.25\n"), std::string::npos) << out;
    EXPECT_NE(out.find("lat_bucket{le=\"+Inf\"} 2.0\n"), std::string::npos) << out;
    const auto own = in_bucket.exemplar();
    ASSERT_TRUE(own);
    EXPECT_TRUE(std::isnan(own->timestamp));
    EXPECT_FALSE(inf.exemplar());
}

TEST_F(ExemplarMergeTest, ACorruptExemplarFileIsSkippedWithAWarning) {
    Value counter("counter", key_);
    counter.inc(1);
    counter.set_exemplar(ExemplarLabels(Pairs{{"trace_id", "ok"}}), 1, 5.0);
    std::ofstream(dir_.file("exemplars_99999.db")) << std::string(40, '\x01');
    Diagnostics diagnostics;
    const std::string out =
        reader_.render_directory(dir_.path(), Format::kOpenMetrics, diagnostics);
    EXPECT_NE(out.find("# {trace_id=\"ok\"} 1.0 5.0\n"), std::string::npos) << out;
    ASSERT_EQ(diagnostics.warnings.size(), 1u);
    EXPECT_NE(diagnostics.warnings[0].find("exemplars_99999.db"), std::string::npos);
}

}  // namespace
}  // namespace gpe
