#include "gpe/mmap_file.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "temp_dir.hpp"

namespace gpe {
namespace {

using testing::TempDir;

struct Read {
    std::string key;
    double value;
    double timestamp;
};

std::vector<Read> read_all(const std::string& path) {
    std::string buffer;
    read_used_region(path, buffer);
    std::vector<Read> out;
    for_each_entry(buffer, [&](std::string_view key, double value, double timestamp) {
        out.push_back(Read{std::string(key), value, timestamp});
    });
    return out;
}

TEST(MmapFile, WritesPrometheusClientLayout) {
    TempDir dir;
    const std::string path = dir.file("counter_1.db");
    {
        MmapFile file(path);
        double* slot = file.slot("abc");
        slot[0] = 2.5;
        slot[1] = 7.0;
    }
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    ASSERT_EQ(bytes.size(), kInitialFileSize);
    uint32_t used = 0;
    std::memcpy(&used, bytes.data(), 4);
    // 8 header + 4 length + "abc" + 1 space (to 8-byte alignment) + 16 values
    EXPECT_EQ(used, 8u + 4 + 3 + 1 + 16);
    int32_t len = 0;
    std::memcpy(&len, bytes.data() + 8, 4);
    EXPECT_EQ(len, 3);
    EXPECT_EQ(bytes.substr(12, 4), "abc ");
    double value = 0;
    std::memcpy(&value, bytes.data() + 16, 8);
    EXPECT_EQ(value, 2.5);
}

TEST(MmapFile, ValueOnlyLayoutOfPrometheusClient017) {
    set_entry_layout(EntryLayout::kValueOnly);
    TempDir dir;
    const std::string path = dir.file("counter_1.db");
    {
        MmapFile file(path);
        file.slot("abc")[0] = 2.5;
        file.slot("defg")[0] = 4;
    }
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    uint32_t used = 0;
    std::memcpy(&used, bytes.data(), 4);
    // header 8; "abc": 4 + 3 + 1 space + 8; "defg": 4 + 4 + 8 spaces (Python pads a full 8) + 8
    EXPECT_EQ(used, 8u + 16 + 24);
    const auto entries = read_all(path);
    set_entry_layout(EntryLayout::kValueAndTimestamp);
    ASSERT_EQ(entries.size(), 2u);
    EXPECT_EQ(entries[0].value, 2.5);
    EXPECT_EQ(entries[1].key, "defg");
    EXPECT_EQ(entries[1].value, 4);
    EXPECT_EQ(entries[1].timestamp, 0);
}

TEST(MmapFile, ReopenKeepsEntriesAndSlots) {
    TempDir dir;
    const std::string path = dir.file("counter_1.db");
    {
        MmapFile file(path);
        file.slot("a")[0] = 1;
        file.slot("b")[0] = 2;
    }
    MmapFile again(path);
    EXPECT_EQ(again.find("a")[0], 1);
    EXPECT_EQ(again.slot("b")[0], 2);
    again.slot("c")[0] = 3;
    const auto entries = read_all(path);
    ASSERT_EQ(entries.size(), 3u);
    EXPECT_EQ(entries[2].key, "c");
    EXPECT_EQ(entries[2].value, 3);
}

TEST(MmapFile, GrowsPastFirstSizeWithoutLosingValuesOrSlots) {
    TempDir dir;
    const std::string path = dir.file("counter_1.db");
    MmapFile file(path);
    double* first = file.slot("first");
    *first = 42;
    const std::string padding(200, 'x');
    for (int i = 0; i < 2000; ++i) file.slot(padding + std::to_string(i))[0] = i;
    EXPECT_GT(file.capacity(), kInitialFileSize);
    *first += 1;  // a pointer taken before growth still writes the file
    const auto entries = read_all(path);
    ASSERT_EQ(entries.size(), 2001u);
    EXPECT_EQ(entries[0].value, 43);
    EXPECT_EQ(entries[2000].value, 1999);
}

TEST(ReadUsedRegion, RejectsEmptyTruncatedAndOverlongFiles) {
    TempDir dir;
    std::string buffer;
    const std::string empty = dir.file("empty.db");
    std::ofstream(empty).close();
    EXPECT_THROW(read_used_region(empty, buffer), FormatError);

    const std::string overlong = dir.file("overlong.db");
    {
        std::ofstream out(overlong, std::ios::binary);
        const uint32_t used = 4096;
        out.write(reinterpret_cast<const char*>(&used), 4);
        out.write("\0\0\0\0", 4);
    }
    EXPECT_THROW(read_used_region(overlong, buffer), FormatError);
}

TEST(ForEachEntry, RejectsEntryRunningPastUsed) {
    std::string data(8, '\0');
    const int32_t len = 1000;
    data.append(reinterpret_cast<const char*>(&len), 4);
    data.append(20, 'k');
    EXPECT_THROW(for_each_entry(data, [](std::string_view, double, double) {}), FormatError);
}

TEST(MmapFile, CorruptExistingFileIsAFormatError) {
    TempDir dir;
    const std::string path = dir.file("counter_1.db");
    {
        std::ofstream out(path, std::ios::binary);
        std::string bytes(kInitialFileSize, '\0');
        const uint32_t used = 64;
        std::memcpy(bytes.data(), &used, 4);
        const int32_t len = 999;
        std::memcpy(bytes.data() + 8, &len, 4);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    EXPECT_THROW(MmapFile{path}, FormatError);
}

}  // namespace
}  // namespace gpe
