#include "gpe/archive.hpp"

#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <vector>

#include "gpe/exemplar.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/store_kind.hpp"
#include "gpe/strings.hpp"

namespace gpe {

namespace {

bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

struct Entry {
    std::string_view key;
    double value;
    double timestamp;
};

// Every entry, or FormatError before anything was folded.
std::vector<Entry> parse_all(std::string_view data) {
    std::vector<Entry> entries;
    for_each_entry(data, [&](std::string_view key, double value, double timestamp) {
        entries.push_back(Entry{key, value, timestamp});
    });
    return entries;
}

void fold_into(MmapFile& archive, const std::vector<Entry>& entries, Fold fold) {
    for (const auto& [key, value, timestamp] : entries) {
        const bool is_new = archive.find(key) == nullptr;
        double* slot = archive.slot(key);
        switch (fold) {
            case Fold::sum:
                slot[0] += value;
                break;
            case Fold::min:
                if (is_new || value < slot[0]) slot[0] = value;
                break;
            case Fold::max:
                if (is_new || value > slot[0]) slot[0] = value;
                break;
            case Fold::mostrecent:
                if (entry_layout() == EntryLayout::kValueOnly) {  // no timestamps to compare
                    slot[0] = value;
                } else if (timestamp > slot[1]) {
                    slot[0] = value;
                    slot[1] = timestamp;
                }
                break;
            case Fold::keep:
            case Fold::drop:
                break;  // never folded
        }
    }
}

}  // namespace

ArchiveReport mark_process_dead(const std::string& directory, std::string_view pid,
                                Diagnostics& diagnostics) {
    ArchiveReport report;
    if (pid.empty() || pid == kArchiveId || pid.find('/') != std::string_view::npos) {
        diagnostics.warn("mark_process_dead: invalid process id '" + std::string(pid) + "'");
        return report;
    }
    const DirectoryLock lock(directory, DirectoryLock::Mode::kExclusive);

    const std::string suffix = concat("_", pid, ".db");
    std::string buffer;
    for (const Store store : kStores) {
        const Fold fold = fold_rule(store);
        const std::string_view prefix = store_name(store);
        const std::string path = concat(directory, "/", prefix, suffix);
        if (fold == Fold::drop) {
            if (::unlink(path.c_str()) == 0) ++report.removed;
            continue;
        }
        if (fold == Fold::keep || !file_exists(path)) continue;
        try {
            read_used_region(path, buffer);
            const std::vector<Entry> entries = parse_all(buffer);
            MmapFile archive(concat(directory, "/", prefix, "_", kArchiveId, ".db"));
            std::vector<std::string_view> keys;
            keys.reserve(entries.size());
            for (const Entry& entry : entries) keys.push_back(entry.key);
            archive.reserve(keys);  // all of the file or nothing: never folded twice
            fold_into(archive, entries, fold);
        } catch (const std::exception& e) {
            // Keep the file: it is skipped by readers if corrupt, and nothing
            // is lost if the archive could not be written.
            diagnostics.warn("could not archive " + path + ": " + e.what());
            continue;
        }
        if (::unlink(path.c_str()) == 0) ++report.folded;
    }
    std::string error;
    if (!archive_exemplars(directory, pid, error)) diagnostics.warn(error);
    return report;
}

}  // namespace gpe
