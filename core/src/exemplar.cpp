#include "gpe/exemplar.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace gpe {

namespace {

constexpr uint32_t kMagic = 0x58455047;  // "GPEX"
constexpr uint32_t kVersion = 1;
constexpr size_t kEndOffset = 16;  // u64: bytes of the file in use
constexpr size_t kFirstRecord = 24;
constexpr size_t kInitialSize = size_t{1} << 14;
// Encoded labels: at most 128 code points (4 bytes each) in at most 128
// pairs (a name has one at least), 4 bytes of lengths per pair.
constexpr size_t kMaxLabelBytes = 4 * kMaxExemplarRunes + 4 * kMaxExemplarRunes;
constexpr size_t kMinCapacity = 64;
// Sequence, value, timestamp, labels length and capacity, before the labels.
constexpr size_t kSlotHeader = 32;

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

size_t pad8(size_t n) { return (n + 7) & ~size_t{7}; }

uint32_t read_u32(const char* p) {
    uint32_t v = 0;
    std::memcpy(&v, p, 4);
    return v;
}

uint64_t load_word(const char* p, std::memory_order order) {
    // Read-only mappings too: a plain load, no read-modify-write.
    return __atomic_load_n(reinterpret_cast<const uint64_t*>(p), order == std::memory_order_acquire
                                                                     ? __ATOMIC_ACQUIRE
                                                                     : __ATOMIC_RELAXED);
}

void store_word(char* p, uint64_t value, std::memory_order order) {
    std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p)).store(value, order);
}

void allocate(int fd, size_t size, const std::string& path, const char* what) {
    const int error = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
    if (error != 0) {
        errno = error;
        throw_errno(std::string(what) + " " + path);
    }
}

// Created complete under a temporary name, then linked into place: readers
// never see a file without its headers.
void create_complete(const std::string& path) {
    const std::string temporary = path + ".tmp-" + std::to_string(::getpid());
    FileDescriptor fd(::open(temporary.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) throw_errno("cannot create " + temporary);
    char header[kFirstRecord] = {};
    const uint32_t words[4] = {static_cast<uint32_t>(kHeaderSize), 0, kMagic, kVersion};
    const uint64_t end = kFirstRecord;
    std::memcpy(header, words, sizeof words);
    std::memcpy(header + kEndOffset, &end, sizeof end);
    try {
        allocate(fd.get(), kInitialSize, temporary, "cannot allocate");
        if (::pwrite(fd.get(), header, sizeof header, 0) != static_cast<ssize_t>(sizeof header)) {
            throw_errno("cannot write " + temporary);
        }
        if (::link(temporary.c_str(), path.c_str()) != 0 && errno != EEXIST) {
            throw_errno("cannot create " + path);
        }
    } catch (const std::system_error&) {
        ::unlink(temporary.c_str());
        throw;
    }
    ::unlink(temporary.c_str());
}

void check_header(const char* base, size_t size, const std::string& path) {
    if (size < kFirstRecord || read_u32(base + 8) != kMagic || read_u32(base + 12) != kVersion) {
        throw FormatError(path + " is not an exemplar file of this version");
    }
}

struct RecordView {
    std::string_view key;
    size_t slot;  // offset of the sequence word
    size_t capacity;
    size_t next;
};

// The record at `pos`, or nullopt when it does not fit in `end`.
std::optional<RecordView> record_at(const char* base, size_t pos, size_t end) {
    if (pos + 8 > end) return std::nullopt;
    const size_t key_len = read_u32(base + pos);
    const size_t capacity = read_u32(base + pos + 4);
    const size_t slot = pos + 8 + pad8(key_len);
    const size_t next = slot + kSlotHeader + capacity;
    if (capacity % 8 != 0 || capacity > kMaxLabelBytes || next > end) return std::nullopt;
    return RecordView{std::string_view(base + pos + 8, key_len), slot, capacity, next};
}

// Every record of the used region [kFirstRecord, end).
template <typename Fn>
void for_each_record(const char* base, size_t end, const std::string& path, Fn&& fn) {
    for (size_t pos = kFirstRecord; pos < end;) {
        const std::optional<RecordView> record = record_at(base, pos, end);
        if (!record) {
            throw FormatError(concat(path, ": exemplar record at offset ", std::to_string(pos),
                                     " runs past the used size ", std::to_string(end)));
        }
        fn(*record);
        pos = record->next;
    }
}

size_t capacity_for(size_t label_bytes) {
    size_t capacity = kMinCapacity;
    while (capacity < label_bytes) capacity *= 2;
    return std::min(capacity, kMaxLabelBytes);
}

void append_u16_string(std::string& out, std::string_view text) {
    const auto len = static_cast<uint16_t>(text.size());
    out.append(reinterpret_cast<const char*>(&len), 2);
    out.append(text);
}

// Code points of `text`; std::invalid_argument if it is not UTF-8.
size_t count_runes(std::string_view text, const char* what) {
    size_t runes = 0;
    for (size_t i = 0; i < text.size(); ++runes) {
        if (static_cast<unsigned char>(text[i]) < 0x80) {  // ASCII: ids, mostly
            ++i;
            continue;
        }
        const std::optional<CodePoint> cp = decode_utf8(text.substr(i));
        if (!cp) throw std::invalid_argument(concat("exemplar ", what, " is not valid UTF-8"));
        i += cp->length;
    }
    return runes;
}

}  // namespace

bool is_exemplar_file(std::string_view path) {
    const size_t slash = path.rfind('/');
    const std::string_view base = slash == std::string_view::npos ? path : path.substr(slash + 1);
    return base.starts_with(kExemplarFilePrefix) && base.size() > kExemplarFilePrefix.size() &&
           base[kExemplarFilePrefix.size()] == '_' && base.ends_with(".db");
}

ExemplarLabels::ExemplarLabels(std::span<const LabelView> labels) {
    // A dict: sorted by name, a repeated name keeps its last value. Labels
    // given sorted (a trace's) are taken as they are: no copy per request.
    const auto by_name = [](const LabelView& a, const LabelView& b) { return a.first < b.first; };
    std::vector<LabelView> copy;
    if (!std::is_sorted(labels.begin(), labels.end(), by_name)) {
        copy.assign(labels.begin(), labels.end());
        std::stable_sort(copy.begin(), copy.end(), by_name);
        labels = copy;
    }
    // The last of the labels of a name, which the dict keeps.
    const auto kept = [&labels](size_t i) {
        return i + 1 == labels.size() || labels[i + 1].first != labels[i].first;
    };
    size_t bytes = 0, runes = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
        if (!kept(i)) continue;
        const auto [name, value] = labels[i];
        if (name.empty() || name.starts_with("__")) {
            throw std::invalid_argument(concat(name.empty() ? "Invalid" : "Reserved",
                                               " label metric name: ", valid_utf8(name)));
        }
        runes += count_runes(name, "label name") + count_runes(value, "label value");
        bytes += 4 + name.size() + value.size();
    }
    if (runes > kMaxExemplarRunes) {
        throw std::invalid_argument(concat("Exemplar labels have ", std::to_string(runes),
                                           " UTF-8 characters, exceeding the limit of 128"));
    }
    encoded_.reserve(bytes);
    for (size_t i = 0; i < labels.size(); ++i) {
        if (!kept(i)) continue;
        append_u16_string(encoded_, labels[i].first);
        append_u16_string(encoded_, labels[i].second);
    }
}

ExemplarLabels::ExemplarLabels(const std::vector<std::pair<std::string, std::string>>& labels)
    : ExemplarLabels(std::vector<LabelView>(labels.begin(), labels.end())) {}

std::vector<std::pair<std::string, std::string>> ExemplarLabels::decode(std::string_view encoded) {
    std::vector<std::pair<std::string, std::string>> out;
    auto next = [&encoded]() {
        uint16_t len = 0;
        if (encoded.size() < 2) throw std::invalid_argument("truncated exemplar labels");
        std::memcpy(&len, encoded.data(), 2);
        if (encoded.size() < 2u + len) throw std::invalid_argument("truncated exemplar labels");
        std::string text(encoded.substr(2, len));
        encoded.remove_prefix(2u + len);
        return text;
    };
    while (!encoded.empty()) {
        std::string name = next();
        out.emplace_back(std::move(name), next());
    }
    return out;
}

void ExemplarLabels::render(std::string_view encoded, std::string& out) {
    out.push_back('{');
    bool first = true;
    for (const auto& [name, value] : decode(encoded)) {
        if (!first) out.push_back(',');
        first = false;
        out += name;  // prometheus_client writes exemplar label names unescaped
        out += "=\"";
        for (char c : value) {
            const std::string_view escape = common_escape(c, /*quotes=*/true);
            if (escape.empty()) {
                out.push_back(c);
            } else {
                out += escape;
            }
        }
        out.push_back('"');
    }
    out.push_back('}');
}

// The capacity is the high half of the word a store rewrites: read as that word.
size_t ExemplarSlot::capacity() const {
    return static_cast<size_t>(load_word(record_ + 24, std::memory_order_relaxed) >> 32);
}

bool ExemplarSlot::store(std::string_view labels, double value, double timestamp) const {
    if (labels.size() > capacity()) return false;
    auto sequence = std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(record_));
    uint64_t s = sequence.load(std::memory_order_relaxed);
    if ((s & 1) != 0 || !sequence.compare_exchange_strong(s, s + 1, std::memory_order_acquire)) {
        return false;
    }
    // A sequence lock without fences (ThreadSanitizer models no fences):
    // every data word is stored with release and loaded with acquire, so a
    // reader that sees any new word also sees the odd sequence before it.
    store_word(record_ + 8, std::bit_cast<uint64_t>(value), std::memory_order_release);
    store_word(record_ + 16, std::bit_cast<uint64_t>(timestamp), std::memory_order_release);
    const uint64_t lengths = labels.size() | (uint64_t{capacity()} << 32);
    store_word(record_ + 24, lengths, std::memory_order_release);
    for (size_t i = 0; i < labels.size(); i += 8) {
        uint64_t word = 0;
        std::memcpy(&word, labels.data() + i, std::min<size_t>(8, labels.size() - i));
        store_word(record_ + kSlotHeader + i, word, std::memory_order_release);
    }
    sequence.store(s + 2, std::memory_order_release);
    return true;
}

std::optional<ExemplarValue> ExemplarSlot::load() const {
    const size_t capacity = this->capacity();
    for (int attempt = 0; attempt < 100; ++attempt) {
        const uint64_t before = load_word(record_, std::memory_order_acquire);
        if (before == 0) return std::nullopt;  // never written
        if ((before & 1) != 0) continue;
        ExemplarValue out;
        out.value = std::bit_cast<double>(load_word(record_ + 8, std::memory_order_acquire));
        out.timestamp = std::bit_cast<double>(load_word(record_ + 16, std::memory_order_acquire));
        const size_t len = std::min<size_t>(
            load_word(record_ + 24, std::memory_order_acquire) & 0xFFFFFFFF, capacity);
        out.labels.resize(pad8(len));
        for (size_t i = 0; i < len; i += 8) {
            const uint64_t word = load_word(record_ + kSlotHeader + i, std::memory_order_acquire);
            std::memcpy(out.labels.data() + i, &word, 8);
        }
        out.labels.resize(len);
        if (load_word(record_, std::memory_order_relaxed) == before) return out;
    }
    return std::nullopt;  // a writer kept it busy: skip it this time
}

ExemplarFile::ExemplarFile(std::string path) : path_(std::move(path)) {
    fd_ = FileDescriptor(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
    if (fd_.get() < 0 && errno == ENOENT) {
        create_complete(path_);
        fd_ = FileDescriptor(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
    }
    if (fd_.get() < 0) throw_errno("cannot open " + path_);
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) throw_errno("cannot stat " + path_);
    capacity_ = static_cast<size_t>(st.st_size);
    if (capacity_ < kFirstRecord) throw FormatError(path_ + " is not an exemplar file");
    allocate(fd_.get(), capacity_, path_, "cannot allocate");
    mappings_.emplace_back(fd_.get(), capacity_);
    check_header(base(), capacity_, path_);
    end_ = load_word(base() + kEndOffset, std::memory_order_acquire);
    if (end_ < kFirstRecord || end_ > capacity_) {
        throw FormatError(path_ + ": its header says " + std::to_string(end_) +
                          " bytes are used but it has " + std::to_string(capacity_));
    }
    for_each_record(base(), end_, path_, [&](const RecordView& record) {
        positions_.insert_or_assign(std::string(record.key), record.slot);
    });
}

bool ExemplarFile::is_file_at_path() const {
    struct stat ours {};
    struct stat named {};
    return ::fstat(fd_.get(), &ours) == 0 && ::stat(path_.c_str(), &named) == 0 &&
           ours.st_dev == named.st_dev && ours.st_ino == named.st_ino;
}

ExemplarSlot ExemplarFile::find(std::string_view key) const {
    auto it = positions_.find(key);
    return ExemplarSlot(it == positions_.end() ? nullptr : base() + it->second);
}

ExemplarSlot ExemplarFile::slot(std::string_view key, size_t label_bytes) {
    if (label_bytes > kMaxLabelBytes) {
        throw std::invalid_argument("exemplar labels of " + std::to_string(label_bytes) +
                                    " bytes exceed the limit of " + std::to_string(kMaxLabelBytes));
    }
    if (ExemplarSlot existing = find(key); existing && existing.capacity() >= label_bytes) {
        return existing;
    }
    const size_t capacity = capacity_for(label_bytes);
    const size_t size = 8 + pad8(key.size()) + kSlotHeader + capacity;
    if (end_ + size > capacity_) grow_to(end_ + size);
    char* p = base() + end_;
    std::memset(p, 0, size);
    const uint32_t header[2] = {static_cast<uint32_t>(key.size()), static_cast<uint32_t>(capacity)};
    std::memcpy(p, header, sizeof header);
    std::memcpy(p + 8, key.data(), key.size());
    const size_t slot = end_ + 8 + pad8(key.size());
    const auto capacity32 = static_cast<uint32_t>(capacity);
    std::memcpy(base() + slot + 28, &capacity32, 4);
    end_ += size;
    store_word(base() + kEndOffset, end_, std::memory_order_release);  // after the record
    positions_.insert_or_assign(std::string(key), slot);
    return ExemplarSlot(base() + slot);
}

void ExemplarFile::grow_to(size_t min_capacity) {
    size_t capacity = capacity_;
    while (capacity < min_capacity) capacity *= 2;
    allocate(fd_.get(), capacity, path_, "cannot grow");
    mappings_.emplace_back(fd_.get(), capacity);  // old mappings stay valid for their slots
    capacity_ = capacity;
}

void read_exemplar_file(const std::string& path,
                        const std::function<void(std::string_view, ExemplarValue&&)>& fn) {
    FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) throw_errno("cannot open " + path);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat " + path);
    const auto size = static_cast<size_t>(st.st_size);
    if (size < kFirstRecord) throw FormatError(path + " is not an exemplar file");
    void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (mapped == MAP_FAILED) throw_errno("cannot map " + path);
    const std::unique_ptr<void, std::function<void(void*)>> unmap(
        mapped, [size](void* p) { ::munmap(p, size); });
    const char* base = static_cast<const char*>(mapped);
    check_header(base, size, path);
    const size_t end = load_word(base + kEndOffset, std::memory_order_acquire);
    // A writer grows the file before it publishes the end: past our size is a
    // record appended after fstat, read next time.
    StringMap<size_t> latest;
    for_each_record(base, std::min(end, size), path, [&](const RecordView& record) {
        latest.insert_or_assign(std::string(record.key), record.slot);
    });
    for (const auto& [key, slot] : latest) {
        std::optional<ExemplarValue> exemplar =
            ExemplarSlot(const_cast<char*>(base) + slot).load();  // load() only reads
        if (exemplar) fn(key, std::move(*exemplar));
    }
}

std::string exemplar_key(std::string_view prefix, std::string_view series_key) {
    return concat(prefix, " ", series_key);
}

std::pair<std::string_view, std::string_view> split_exemplar_key(std::string_view key) {
    const size_t space = key.find(' ');
    if (space == std::string_view::npos) return {std::string_view(), key};
    return {key.substr(0, space), key.substr(space + 1)};
}

bool archive_exemplars(const std::string& directory, std::string_view pid, std::string& error) {
    const std::string path = concat(directory, "/", kExemplarFilePrefix, "_", pid, ".db");
    if (::access(path.c_str(), F_OK) != 0) return true;
    try {
        std::vector<std::pair<std::string, ExemplarValue>> dead;
        read_exemplar_file(path, [&](std::string_view key, ExemplarValue&& exemplar) {
            dead.emplace_back(std::string(key), std::move(exemplar));
        });
        ExemplarFile archive(concat(directory, "/", kExemplarFilePrefix, "_archive.db"));
        for (const auto& [key, exemplar] : dead) {
            const ExemplarSlot existing = archive.find(key);
            const std::optional<ExemplarValue> kept =
                existing ? existing.load() : std::optional<ExemplarValue>();
            // The most recent wins; an exemplar without a timestamp only over none.
            if (!kept || std::isnan(kept->timestamp) || exemplar.timestamp > kept->timestamp) {
                archive.slot(key, exemplar.labels.size())
                    .store(exemplar.labels, exemplar.value, exemplar.timestamp);
            }
        }
    } catch (const std::exception& e) {
        error = concat("could not archive ", path, ": ", e.what());
        return false;
    }
    ::unlink(path.c_str());
    return true;
}

}  // namespace gpe
