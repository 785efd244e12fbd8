// The multiprocess file format from untrusted bytes: a *.db file written by
// any process (or left half-written by a crash) is read by the directory
// reader (read_used_region, for_each_entry, the series keys, the merge and
// the rendering) and opened again by a writer of the same pid.
//
// Input: one byte of settings (bit 0: value-only layout; bits 1-3: the file
// name's type and mode), then the file's content.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <system_error>

#include "fuzz_util.hpp"
#include "gpe/exposition.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/multiprocess.hpp"

namespace {

constexpr const char* kStores[] = {"counter",   "histogram",     "summary",   "gauge_all",
                                   "gauge_min", "gauge_livesum", "gauge_max", "gauge_mostrecent"};

void write_file(const std::string& path, std::string_view content) {
    gpe::FileDescriptor fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) gpe::fuzz::violated("cannot create the input file");
    size_t done = 0;
    while (done < content.size()) {
        const ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
        if (n <= 0) gpe::fuzz::violated("cannot write the input file");
        done += static_cast<size_t>(n);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static gpe::fuzz::ScratchDir dir;
    if (size == 0) return 0;
    const uint8_t settings = data[0];
    const std::string_view content = gpe::fuzz::as_view(data + 1, size - 1);
    gpe::set_entry_layout((settings & 1) ? gpe::EntryLayout::kValueOnly
                                         : gpe::EntryLayout::kValueAndTimestamp);
    const std::string path = dir.path() + "/" + kStores[(settings >> 1) & 7] + "_4242.db";
    write_file(path, content);

    // The file reader alone.
    std::string buffer;
    try {
        gpe::read_used_region(path, buffer);
        size_t entries = 0;
        gpe::for_each_entry(buffer, [&](std::string_view key, double, double) {
            GPE_FUZZ_CHECK(key.data() >= buffer.data() &&
                           key.data() + key.size() <= buffer.data() + buffer.size());
            ++entries;
        });
        GPE_FUZZ_CHECK(buffer.size() >= gpe::kHeaderSize);
    } catch (const gpe::FormatError&) {
    }

    // The directory reader: merge and render, as a scrape does.
    {
        gpe::MultiprocessReader reader;
        gpe::MultiprocessReader::Collected collected = reader.merge_files({path});
        std::string out;
        gpe::render(collected.result,
                    (settings & 0x10) ? gpe::Format::kOpenMetrics : gpe::Format::kText, out);
    }

    // A writer of the same pid opening the file again, and appending to it.
    try {
        gpe::MmapFile file(path);
        double* slot = file.slot(R"(["fuzz", "fuzz_total", {}, "help"])");
        *slot += 1;
        GPE_FUZZ_CHECK(file.find(R"(["fuzz", "fuzz_total", {}, "help"])") == slot);
    } catch (const gpe::FormatError&) {
    } catch (const std::system_error&) {
    }
    ::unlink(path.c_str());
    return 0;
}
