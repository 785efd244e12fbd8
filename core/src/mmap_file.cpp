#include "gpe/mmap_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

namespace gpe {

namespace {

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

uint32_t read_u32(const char* p) {
    uint32_t v = 0;
    std::memcpy(&v, p, 4);
    return v;
}

// Gives the first `size` bytes of `fd` real storage. A mapped page of a
// sparse file that the filesystem cannot back (a full tmpfs) kills the
// process with SIGBUS at the first store; allocating first turns that into
// an error here. ftruncate alone would only make the file sparse.
void allocate(int fd, size_t size, const std::string& path, const char* what) {
    const int error = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
    if (error != 0) {
        errno = error;
        throw_errno(std::string(what) + " " + path);
    }
}

// Readers in other processes poll the header: publish it with one store.
void write_used(char* base, size_t used) {
    std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(base))
        .store(static_cast<uint32_t>(used), std::memory_order_release);
}

}  // namespace

namespace {
// See set_entry_layout: one layout per process, set at start.
std::atomic<EntryLayout> layout{EntryLayout::kValueAndTimestamp};
}  // namespace

void set_entry_layout(EntryLayout value) { layout.store(value, std::memory_order_relaxed); }

EntryLayout entry_layout() { return layout.load(std::memory_order_relaxed); }

Mapping::Mapping(int fd, size_t size) : size_(size) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw_errno("mmap");
    data_ = static_cast<char*>(p);
}

Mapping::Mapping(Mapping&& other) noexcept : data_(other.data_), size_(other.size_) {
    other.data_ = nullptr;
    other.size_ = 0;
}

Mapping::~Mapping() {
    if (data_) ::munmap(data_, size_);
}

FileIdentity read_used_region(const std::string& path, std::string& buffer) {
    FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) throw_errno("cannot open " + path);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat " + path);
    const auto file_size = static_cast<size_t>(st.st_size);
    const FileIdentity identity{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    if (file_size < kHeaderSize) {
        throw FormatError(file_size == 0 ? "file is empty"
                                         : "file is shorter than its 8-byte header");
    }
    char header[kHeaderSize];
    if (::pread(fd.get(), header, kHeaderSize, 0) != static_cast<ssize_t>(kHeaderSize)) {
        throw_errno("cannot read " + path);
    }
    const size_t used = read_u32(header);
    if (used == 0) {  // created, no entry written yet
        buffer.assign(header, kHeaderSize);
        return identity;
    }
    if (used < kHeaderSize || used > file_size) {
        throw FormatError("header says " + std::to_string(used) +
                          " bytes are used but the file has " + std::to_string(file_size));
    }
    buffer.resize(used);
    size_t done = 0;
    while (done < used) {
        const ssize_t n =
            ::pread(fd.get(), buffer.data() + done, used - done, static_cast<off_t>(done));
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("cannot read " + path);
        }
        if (n == 0) throw FormatError("file shrank while being read");
        done += static_cast<size_t>(n);
    }
    return identity;
}

namespace {

// Creates `path` complete - sized, header written - under a temporary name
// and renames it into place, so that readers never see an empty *.db file.
void create_complete(const std::string& path) {
    const std::string temporary = path + ".tmp-" + std::to_string(::getpid());
    FileDescriptor fd(::open(temporary.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) throw_errno("cannot create " + temporary);
    const uint32_t header[2] = {static_cast<uint32_t>(kHeaderSize), 0};
    try {
        allocate(fd.get(), kInitialFileSize, temporary, "cannot allocate");
    } catch (const std::system_error&) {
        ::unlink(temporary.c_str());
        throw;
    }
    if (::pwrite(fd.get(), header, sizeof header, 0) != static_cast<ssize_t>(sizeof header)) {
        const int error = errno;
        ::unlink(temporary.c_str());
        errno = error;
        throw_errno("cannot write " + temporary);
    }
    // link() fails if another process created the file meanwhile: theirs wins.
    if (::link(temporary.c_str(), path.c_str()) != 0 && errno != EEXIST) {
        const int error = errno;
        ::unlink(temporary.c_str());
        errno = error;
        throw_errno("cannot create " + path);
    }
    ::unlink(temporary.c_str());
}

}  // namespace

MmapFile::MmapFile(std::string path) : path_(std::move(path)) {
    fd_ = FileDescriptor(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
    if (fd_.get() < 0 && errno == ENOENT) {
        create_complete(path_);
        fd_ = FileDescriptor(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
    }
    if (fd_.get() < 0) throw_errno("cannot open " + path_);
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) throw_errno("cannot stat " + path_);
    capacity_ = static_cast<size_t>(st.st_size);
    if (capacity_ == 0) capacity_ = kInitialFileSize;
    if (capacity_ < kHeaderSize) throw FormatError("file is shorter than its 8-byte header");
    // Also an existing file: another writer may have left it sparse.
    allocate(fd_.get(), capacity_, path_, "cannot allocate");
    mappings_.emplace_back(fd_.get(), capacity_);
    used_ = read_u32(base());
    if (used_ == 0) {
        used_ = kHeaderSize;
        write_used(base(), used_);
        return;
    }
    if (used_ < kHeaderSize || used_ > capacity_) {
        throw FormatError("header says " + std::to_string(used_) +
                          " bytes are used but the file has " + std::to_string(capacity_));
    }
    const char* b = base();
    for_each_entry(std::string_view(b, used_), [&](std::string_view key, double, double) {
        // The value sits at the end of the entry, before the timestamp if any.
        const size_t entry_end = static_cast<size_t>(key.data() - b) - 4 + entry_size(key.size());
        positions_.emplace(std::string(key), entry_end - value_bytes());
    });
}

bool MmapFile::is_file_at_path() const {
    struct stat ours {};
    struct stat named {};
    return ::fstat(fd_.get(), &ours) == 0 && ::stat(path_.c_str(), &named) == 0 &&
           ours.st_dev == named.st_dev && ours.st_ino == named.st_ino;
}

double* MmapFile::find(std::string_view key) const {
    auto it = positions_.find(key);
    if (it == positions_.end()) return nullptr;
    return reinterpret_cast<double*>(base() + it->second);
}

double* MmapFile::slot(std::string_view key) {
    if (double* existing = find(key)) return existing;
    const size_t size = entry_size(key.size());
    if (used_ + size > capacity_) grow_to(used_ + size);
    char* p = base() + used_;
    const auto key_len = static_cast<int32_t>(key.size());
    std::memcpy(p, &key_len, 4);
    std::memcpy(p + 4, key.data(), key.size());
    const size_t tail = value_bytes();
    std::memset(p + 4 + key.size(), ' ', size - tail - 4 - key.size());
    std::memset(p + size - tail, 0, tail);
    const size_t value_offset = used_ + size - tail;
    used_ += size;
    write_used(base(), used_);  // after the entry, so readers never see a partial one
    positions_.emplace(std::string(key), value_offset);
    return reinterpret_cast<double*>(base() + value_offset);
}

void MmapFile::reserve(const std::vector<std::string_view>& keys) {
    size_t needed = used_;
    for (std::string_view key : keys) {
        if (find(key) == nullptr) needed += entry_size(key.size());
    }
    if (needed > capacity_) grow_to(needed);
}

void MmapFile::grow_to(size_t min_capacity) {
    size_t capacity = capacity_;
    while (capacity < min_capacity) capacity *= 2;
    allocate(fd_.get(), capacity, path_, "cannot grow");
    mappings_.emplace_back(fd_.get(), capacity);
    capacity_ = capacity;
}

}  // namespace gpe
