#include "gpe/multiprocess.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <system_error>
#include <vector>

#include "gpe/exemplar.hpp"
#include "gpe/mmap_file.hpp"
#include "gpe/source.hpp"

namespace gpe {

namespace {

// The entries of one file as resolved in earlier scrapes.
struct FileCache {
    struct Entry {
        SeriesCache::Key* key;
        uint32_t pid_labels;
    };
    FileIdentity identity;
    uint64_t cache_generation = 0;
    uint64_t last_used = 0;
    std::vector<Entry> entries;
};

// The descriptors of the DirectoryLocks held in this process. Process-wide
// because fork() is: the child handler must find every lock, whichever
// thread holds it.
class HeldLocks {
  public:
    static HeldLocks& instance() {
        static HeldLocks held;
        return held;
    }
    void add(int fd) {
        std::lock_guard guard(mutex_);
        fds_.push_back(fd);
    }
    void remove(int fd) {
        std::lock_guard guard(mutex_);
        std::erase(fds_, fd);
    }

  private:
    HeldLocks() { ::pthread_atfork(&before_fork, &in_parent, &in_child); }
    static void before_fork() { instance().mutex_.lock(); }
    static void in_parent() { instance().mutex_.unlock(); }
    // The child's copy of each descriptor becomes /dev/null: the lock file
    // is no longer open in the child (the parent's lock is untouched), and a
    // holder that goes on in the child later closes a harmless descriptor.
    static void in_child() {
        HeldLocks& held = instance();
        const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        for (const int fd : held.fds_) {
            if (null_fd < 0 || ::dup3(null_fd, fd, O_CLOEXEC) < 0) ::close(fd);
        }
        if (null_fd >= 0) ::close(null_fd);
        held.fds_.clear();
        held.mutex_.unlock();
    }

    std::mutex mutex_;
    std::vector<int> fds_;
};

}  // namespace

FileName parse_file_name(std::string_view path) {
    const size_t slash = path.rfind('/');
    const std::string_view base = slash == std::string_view::npos ? path : path.substr(slash + 1);
    std::vector<std::string_view> parts;
    for (size_t start = 0;;) {
        const size_t end = base.find('_', start);
        parts.push_back(base.substr(start, end == std::string_view::npos ? end : end - start));
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
    FileName name;
    name.type = parts[0];
    const std::optional<MetricType> type = parse_metric_type(name.type);
    const bool gauge = type == MetricType::gauge;
    if (!type || parts.size() < 2 || (gauge && parts.size() < 3)) return name;
    name.kind.type = *type;
    if (gauge) {
        name.mode = parts[1];
        name.kind.mode = parse_gauge_mode(name.mode).value_or(GaugeMode::all);
        // parts[2][:-3], as prometheus_client: the pid without ".db"
        name.pid = parts[2].substr(0, parts[2].size() >= 3 ? parts[2].size() - 3 : 0);
    }
    const size_t store_end = gauge ? name.type.size() + 1 + name.mode.size() : name.type.size();
    name.store = base.substr(0, store_end);
    name.process = base.substr(store_end + 1, base.size() - store_end - 1 - 3);
    name.valid = true;
    return name;
}

std::string lock_file_path(const std::string& directory) { return directory + "/.gpe.lock"; }

DirectoryLock::DirectoryLock(const std::string& directory, Mode mode) {
    const std::string path = lock_file_path(directory);
    fd_ = FileDescriptor(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (fd_.get() < 0 && mode == Mode::kShared) {
        // A reader of a directory it may not write: no writer could fold
        // files under it without the lock file either.
        fd_ = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (fd_.get() < 0) return;
    }
    if (fd_.get() < 0) {
        throw std::system_error(errno, std::generic_category(), "cannot open " + path);
    }
    // Registered before it is locked: a fork while flock() waits or after
    // it returns leaves no lock in the child.
    HeldLocks::instance().add(fd_.get());
    while (::flock(fd_.get(), mode == Mode::kExclusive ? LOCK_EX : LOCK_SH) != 0 &&
           errno == EINTR) {
    }
}

DirectoryLock::~DirectoryLock() {
    if (fd_.get() >= 0) HeldLocks::instance().remove(fd_.get());
}

std::vector<std::string> list_db_files(const std::string& directory) {
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(directory.c_str()), &::closedir);
    if (!dir) {
        throw std::system_error(errno, std::generic_category(), "cannot list " + directory);
    }
    std::vector<std::string> out;
    while (const dirent* entry = ::readdir(dir.get())) {
        const std::string_view name(entry->d_name);
        if (name.size() < 3 || name.front() == '.' || !name.ends_with(".db")) continue;
        out.push_back(concat(directory, "/", name));
    }
    return out;
}

struct MultiprocessReader::Impl {
    std::mutex mutex;
    SeriesCache cache;
    StringMap<FileCache> files;
    uint64_t scrapes = 0;
    size_t last_series = 0;
    std::string buffer;
    std::vector<SourceSample> samples;

    MergeResult merge(const std::vector<std::string>& paths, bool accumulate);
    // Reads one file into `samples`; false (with a warning) if it is skipped.
    bool read_file(const std::string& path, const FileName& name, Diagnostics& diagnostics);
    // Appends the exemplars of an exemplar file; a bad file or record is
    // skipped with a warning.
    void read_exemplars(const std::string& path, std::vector<SourceExemplar>& out,
                        Diagnostics& diagnostics);
};

void MultiprocessReader::Impl::read_exemplars(const std::string& path,
                                              std::vector<SourceExemplar>& out,
                                              Diagnostics& diagnostics) {
    size_t skipped = 0;
    try {
        read_exemplar_file(path, [&](std::string_view key, ExemplarValue&& exemplar) {
            try {
                ExemplarLabels::decode(exemplar.labels);  // rendered later: must be sound now
                out.push_back(SourceExemplar{cache.lookup(split_exemplar_key(key).second),
                                             std::move(exemplar)});
            } catch (const std::invalid_argument&) {
                ++skipped;
            }
        });
    } catch (const std::system_error& e) {
        if (e.code().value() != ENOENT) diagnostics.warn(concat("skipped ", path, ": ", e.what()));
    } catch (const FormatError& e) {
        diagnostics.warn(concat("skipped corrupt file ", path, ": ", e.what()));
    }
    if (skipped > 0) {
        diagnostics.warn(
            concat("skipped ", std::to_string(skipped), " corrupt exemplar(s) in ", path));
    }
}

bool MultiprocessReader::Impl::read_file(const std::string& path, const FileName& name,
                                         Diagnostics& diagnostics) {
    FileIdentity identity;
    try {
        identity = read_used_region(path, buffer);
    } catch (const std::system_error& e) {
        // Removed since the directory was listed (a dead process's file that
        // was just archived): nothing to read, nothing lost.
        if (e.code().value() != ENOENT) diagnostics.warn(concat("skipped ", path, ": ", e.what()));
        return false;
    } catch (const FormatError& e) {
        diagnostics.warn(concat("skipped corrupt file ", path, ": ", e.what()));
        return false;
    }
    FileCache& file = files[path];
    if (file.identity != identity || file.cache_generation != cache.generation()) {
        file.identity = identity;
        file.cache_generation = cache.generation();
        file.entries.clear();
    }
    file.last_used = scrapes;
    const bool gauge = name.kind.type == MetricType::gauge;
    samples.clear();
    size_t index = 0;
    try {
        for_each_entry(buffer, [&](std::string_view key, double value, double timestamp) {
            // A file deleted and created again can get the same inode: trust
            // a known entry only if its key is the same.
            if (index < file.entries.size() && file.entries[index].key->json != key) {
                file.entries.resize(index);
            }
            if (index == file.entries.size()) {
                SeriesCache::Key* parsed = cache.lookup(key);
                file.entries.push_back(FileCache::Entry{
                    parsed, gauge ? cache.labels_with_pid(*parsed, name.pid) : kNoLabels});
            }
            const FileCache::Entry& entry = file.entries[index++];
            samples.push_back(SourceSample{entry.key, entry.pid_labels, value, timestamp});
        });
    } catch (const std::exception& e) {  // FormatError, or a key that is not JSON
        diagnostics.warn(concat("skipped corrupt file ", path, ": ", e.what()));
        return false;
    }
    return true;
}

MergeResult MultiprocessReader::Impl::merge(const std::vector<std::string>& paths,
                                            bool accumulate) {
    cache.trim(last_series);  // before the merge: results point into the cache
    ++scrapes;
    Merger merger(cache);
    size_t series = 0;
    std::vector<SourceExemplar> exemplars;
    for (const auto& path : paths) {
        if (is_exemplar_file(path)) {
            read_exemplars(path, exemplars, merger.diagnostics());
            continue;
        }
        const FileName name = parse_file_name(path);
        if (!name.valid) {
            merger.diagnostics().warn(concat(
                "skipped ", path,
                ": not a multiprocess metrics file (expected {counter,histogram,summary}_<pid>.db "
                "or gauge_<mode>_<pid>.db)"));
            continue;
        }
        if (!read_file(path, name, merger.diagnostics())) continue;
        series += samples.size();
        merger.add_source(name.kind, samples, path);
    }
    std::erase_if(files, [this](const auto& item) { return item.second.last_used != scrapes; });
    last_series = series + exemplars.size();
    merger.add_exemplars(std::move(exemplars));
    return merger.finish(accumulate);
}

MultiprocessReader::MultiprocessReader() : impl_(std::make_unique<Impl>()) {}
MultiprocessReader::~MultiprocessReader() = default;

MultiprocessReader::Collected MultiprocessReader::merge_files(const std::vector<std::string>& paths,
                                                              bool accumulate) {
    std::unique_lock lock(impl_->mutex);
    MergeResult result = impl_->merge(paths, accumulate);
    return Collected{std::move(lock), std::move(result)};
}

MultiprocessReader::Collected MultiprocessReader::collect_directory(const std::string& directory,
                                                                    bool accumulate) {
    std::unique_lock lock(impl_->mutex);
    DirectoryLock directory_lock(directory, DirectoryLock::Mode::kShared);
    MergeResult result = impl_->merge(list_db_files(directory), accumulate);
    return Collected{std::move(lock), std::move(result)};
}

std::string MultiprocessReader::render_directory(const std::string& directory, Format format,
                                                 Diagnostics& diagnostics) {
    return DirectorySource(*this, directory).render(format, diagnostics);
}

}  // namespace gpe
