#include "gpe/value_store.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <utility>

#include "gpe/store_kind.hpp"

namespace gpe {

namespace {

// Whether `path` is memory-mapped in this process (by anyone).
bool mapped_by_this_process(const std::string& path) {
    char resolved[PATH_MAX];
    if (::realpath(path.c_str(), resolved) == nullptr) return false;  // does not exist yet
    std::ifstream maps("/proc/self/maps");
    const std::string_view target(resolved);
    std::string line;
    while (std::getline(maps, line)) {
        if (std::string_view(line).ends_with(target) && line.size() > target.size() &&
            line[line.size() - target.size() - 1] == ' ') {
            return true;
        }
    }
    return false;
}

}  // namespace

std::string file_prefix_for(std::string_view type, std::string_view multiprocess_mode) {
    const std::optional<MetricType> metric_type = parse_metric_type(type);
    if (!metric_type) {
        throw std::invalid_argument("metric type '" + std::string(type) +
                                    "' cannot be stored in multiprocess files");
    }
    if (metric_type != MetricType::gauge) return std::string(type);
    const std::optional<GaugeMode> mode = parse_gauge_mode(multiprocess_mode);
    if (!mode) {
        throw std::invalid_argument("invalid multiprocess mode '" + std::string(multiprocess_mode) +
                                    "'");
    }
    return std::string(store_name(Store{MetricType::gauge, *mode}));
}

ValueStore& ValueStore::instance() {
    static ValueStore store;  // see the class comment for why this is process-wide
    return store;
}

ValueStore::ValueStore()
    : pid_identity_(std::make_shared<ProcessIdentity>(ProcessIdentity::Private{}, "", true)) {
    identities_.push_back(pid_identity_);
    // Take the lock around fork so that no thread holds it in the child.
    ::pthread_atfork(&ValueStore::before_fork, &ValueStore::after_fork_in_parent,
                     &ValueStore::after_fork_in_child);
}

void ValueStore::before_fork() { instance().mutex_.lock(); }

void ValueStore::after_fork_in_parent() { instance().mutex_.unlock(); }

void ValueStore::after_fork_in_child() {
    ValueStore& store = instance();
    // Only the pid changed: named groups keep their files (their identifier
    // function decides whether the child is someone else).
    store.pid_identity_->generation_.fetch_add(1, std::memory_order_acq_rel);
    store.mutex_.unlock();
}

void ValueStore::set_directory(std::string directory) {
    std::lock_guard lock(mutex_);
    directory_ = std::move(directory);
    for (const auto& weak : identities_) {
        // Values destroyed before the change do not follow into the new directory.
        if (auto identity = weak.lock()) identity->retire_files_locked(true);
    }
}

void ValueStore::reset() {
    std::string directory;
    {
        std::lock_guard lock(mutex_);
        directory = directory_;
    }
    set_directory(std::move(directory));
}

void ValueStore::set_warning_handler(std::function<void(const std::string&)> handler) {
    std::lock_guard lock(mutex_);
    warn_ = std::move(handler);
}

void ValueStore::storage_failed_locked(const std::system_error& error) {
    storage_errors_.fetch_add(1, std::memory_order_relaxed);
    ++undelivered_errors_;
    std::string directory;
    try {
        directory = resolve_directory();
    } catch (const std::exception&) {
    }
    if (reported_.emplace(directory, error.code().value()).second) {
        undelivered_warnings_.push_back(
            "cannot store metrics in " + directory + ": " + error.what() +
            "; the values stay exact in this process's memory, but do not reach the files "
            "(gunicorn_exporter_storage_errors_total counts each one)");
    }
}

void ValueStore::deliver_reports() {
    std::vector<std::string> warnings;
    uint64_t errors = 0;
    Value* counter = nullptr;
    std::function<void(const std::string&)> warn;
    {
        std::lock_guard lock(mutex_);
        if (undelivered_errors_ == 0 && undelivered_warnings_.empty()) return;
        warnings.swap(undelivered_warnings_);
        errors = std::exchange(undelivered_errors_, 0);
        counter = error_counter_;
        warn = warn_;
    }
    for (const auto& message : warnings) {
        if (warn)
            warn(message);
        else
            std::fprintf(stderr, "gunicorn_prometheus_exporter: %s\n", message.c_str());
    }
    if (counter != nullptr) counter->inc(static_cast<double>(errors));
}

void ValueStore::count_storage_errors_in(Value* counter) {
    std::lock_guard lock(mutex_);
    error_counter_ = counter;
}

void ValueStore::add_identity_locked(const std::shared_ptr<ProcessIdentity>& identity) {
    std::erase_if(identities_, [](const auto& weak) { return weak.expired(); });
    identities_.push_back(identity);
}

std::string ValueStore::resolve_directory() const {
    if (!directory_.empty()) return directory_;
    const char* env = std::getenv("PROMETHEUS_MULTIPROC_DIR");
    if (env == nullptr || *env == '\0') env = std::getenv("prometheus_multiproc_dir");
    if (env == nullptr || *env == '\0') {
        throw std::runtime_error(
            "multiprocess mode is on but PROMETHEUS_MULTIPROC_DIR is not set and no directory was "
            "given");
    }
    return env;
}

std::shared_ptr<MmapFile> ValueStore::find_ours_locked(const std::string& path) const {
    std::shared_ptr<MmapFile> retired;
    for (const auto& weak : identities_) {
        const auto identity = weak.lock();
        if (!identity) continue;
        for (const auto& [prefix, file] : identity->files_) {
            if (file->path() == path) return file;
        }
        for (const auto& file : identity->retired_) {
            if (!retired && file->path() == path && file->is_file_at_path()) retired = file;
        }
    }
    return retired;
}

std::shared_ptr<MmapFile> ValueStore::open_locked(std::string_view prefix, std::string_view name) {
    const std::string directory = resolve_directory();
    std::string path = concat(directory, "/", prefix, "_", name, ".db");
    if (auto file = find_ours_locked(path)) return file;
    if (mapped_by_this_process(path)) {
        // prometheus_client's own values of this process write this file
        // (metrics created before native values were enabled). Two writers
        // would corrupt it: use a process id of our own instead.
        const std::string ours = concat(directory, "/", prefix, "_", name, "-native.db");
        if (warn_) {
            warn_("metrics were created before native values were enabled; " + path +
                  " belongs to prometheus_client in this process, writing " + ours + " instead");
        }
        path = ours;
        if (auto file = find_ours_locked(path)) return file;
    }
    try {
        return std::make_shared<MmapFile>(path);
    } catch (const FormatError& e) {
        // A corrupt file of a former process with our pid: keep it for
        // inspection, start a fresh one, and say so.
        const std::string aside = path + ".corrupt";
        std::rename(path.c_str(), aside.c_str());
        if (warn_) warn_("set aside corrupt file " + path + " as " + aside + ": " + e.what());
        return std::make_shared<MmapFile>(path);
    }
}

std::shared_ptr<ExemplarFile> ValueStore::open_exemplars_locked(std::string_view name) {
    const std::string path =
        concat(resolve_directory(), "/", kExemplarFilePrefix, "_", name, ".db");
    for (const auto& weak : identities_) {
        const auto identity = weak.lock();
        if (!identity) continue;
        if (identity->exemplars_ && identity->exemplars_->path() == path) {
            return identity->exemplars_;
        }
        for (const auto& file : identity->retired_exemplars_) {
            if (file->path() == path && file->is_file_at_path()) return file;
        }
    }
    try {
        return std::make_shared<ExemplarFile>(path);
    } catch (const FormatError& e) {
        const std::string aside = path + ".corrupt";
        std::rename(path.c_str(), aside.c_str());
        if (warn_) warn_("set aside corrupt file " + path + " as " + aside + ": " + e.what());
        return std::make_shared<ExemplarFile>(path);
    }
}

const std::shared_ptr<ProcessIdentity>& ProcessIdentity::pid() {
    return ValueStore::instance().pid_identity_;
}

std::shared_ptr<ProcessIdentity> ProcessIdentity::named(std::string name) {
    auto identity = std::make_shared<ProcessIdentity>(Private{}, std::move(name), false);
    ValueStore& store = ValueStore::instance();
    std::lock_guard lock(store.mutex_);
    store.add_identity_locked(identity);
    return identity;
}

ProcessIdentity::ProcessIdentity(Private, std::string name, bool follows_pid)
    : follows_pid_(follows_pid), name_(std::move(name)), pid_(::getpid()) {}

std::string ProcessIdentity::name() {
    std::lock_guard lock(ValueStore::instance().mutex_);
    return follows_pid_ ? std::to_string(::getpid()) : name_;
}

void ProcessIdentity::rename(std::string name) {
    if (follows_pid_) throw std::logic_error("the pid group follows the pid; it cannot be renamed");
    {
        std::lock_guard lock(ValueStore::instance().mutex_);
        if (name == name_) return;
        retire_files_locked(false);
        name_ = std::move(name);
        bind_all_locked();
    }
    ValueStore::instance().deliver_reports();
}

void ProcessIdentity::close_files() {
    std::lock_guard lock(ValueStore::instance().mutex_);
    retire_files_locked(true);
}

void ProcessIdentity::retire_files_locked(bool forget_destroyed) {
    for (auto& [prefix, file] : files_) {
        if (std::find(retired_.begin(), retired_.end(), file) == retired_.end()) {
            retired_.push_back(std::move(file));
        }
    }
    files_.clear();
    if (exemplars_) retired_exemplars_.push_back(std::move(exemplars_));
    if (forget_destroyed) {
        std::erase_if(created_, [](const Created& created) { return created.value == nullptr; });
        for (size_t i = 0; i < created_.size(); ++i) created_[i].value->index_ = i;
    }
    generation_.fetch_add(1, std::memory_order_acq_rel);
}

void ProcessIdentity::forget_parent_files_locked() {
    if (!follows_pid_ || pid_ == ::getpid()) return;
    pid_ = ::getpid();
    files_.clear();
    retired_.clear();
    exemplars_.reset();
    retired_exemplars_.clear();
}

MmapFile& ProcessIdentity::file_for(std::string_view prefix) {
    forget_parent_files_locked();
    if (auto it = files_.find(prefix); it != files_.end()) return *it->second;
    const std::string name = follows_pid_ ? std::to_string(pid_) : name_;
    auto file = ValueStore::instance().open_locked(prefix, name);
    MmapFile& ref = *file;
    files_.emplace(std::string(prefix), std::move(file));
    return ref;
}

double* ProcessIdentity::slot_locked(std::string_view prefix, std::string_view key,
                                     double* memory) {
    try {
        return file_for(prefix).slot(key);
    } catch (const std::system_error& e) {
        ValueStore::instance().storage_failed_locked(e);
        return memory;
    }
}

void ProcessIdentity::bind_all_locked() {
    const uint64_t generation = generation_.load(std::memory_order_acquire);
    for (const Created& created : created_) {
        double unused[2] = {0.0, 0.0};  // a destroyed value's entry is still created
        double* memory = created.value != nullptr ? created.value->memory_ : unused;
        double* slot = slot_locked(created.prefix, created.key, memory);
        if (created.value != nullptr) created.value->bind_locked(slot, generation);
    }
}

double* ProcessIdentity::bind(std::string_view prefix, std::string_view key, double* memory,
                              uint64_t& generation_out) {
    double* slot = nullptr;
    {
        std::lock_guard lock(ValueStore::instance().mutex_);
        generation_out = generation_.load(std::memory_order_acquire);
        if (follows_pid_ && pid_ != ::getpid()) {
            // First update in a forked child: every inherited value gets its
            // slot in this process's files now, in creation order
            // (prometheus_client does the same), so e.g. an inherited `all`
            // gauge shows this worker with 0.
            bind_all_locked();
        }
        slot = slot_locked(prefix, key, memory);
    }
    ValueStore::instance().deliver_reports();
    return slot;
}

ExemplarSlot ProcessIdentity::exemplar_slot(std::string_view prefix, std::string_view key,
                                            size_t label_bytes, bool create,
                                            uint64_t& generation_out) {
    ExemplarSlot slot;
    {
        std::lock_guard lock(ValueStore::instance().mutex_);
        generation_out = generation_.load(std::memory_order_acquire);
        if (follows_pid_ && pid_ != ::getpid()) {
            bind_all_locked();  // as bind(): the first update in a forked child
            forget_parent_files_locked();
        }
        try {
            if (!exemplars_ && create) {
                exemplars_ = ValueStore::instance().open_exemplars_locked(
                    follows_pid_ ? std::to_string(pid_) : name_);
            }
            const std::string record_key = exemplar_key(prefix, key);
            if (exemplars_) {
                slot = create ? exemplars_->slot(record_key, label_bytes)
                              : exemplars_->find(record_key);
            }
        } catch (const std::system_error& e) {
            ValueStore::instance().storage_failed_locked(e);
        }
    }
    ValueStore::instance().deliver_reports();
    return slot;
}

size_t ProcessIdentity::add(Value* value) {
    std::lock_guard lock(ValueStore::instance().mutex_);
    created_.push_back(Created{value->prefix(), value->key(), value});
    return created_.size() - 1;
}

void ProcessIdentity::remove(size_t index) {
    std::lock_guard lock(ValueStore::instance().mutex_);
    created_[index].value = nullptr;
}

Value::Value(std::string prefix, std::string key, std::shared_ptr<ProcessIdentity> identity)
    : prefix_(std::move(prefix)),
      key_(std::move(key)),
      identity_(std::move(identity)),
      most_recent_(has_timestamp(parse_store(prefix_).value_or(Store{}))) {
    rebind();
    index_ = identity_->add(this);
}

Value::~Value() {
    identity_->remove(index_);
    ValueStore& store = ValueStore::instance();
    std::lock_guard lock(store.mutex_);
    if (store.error_counter_ == this) store.error_counter_ = nullptr;
}

void Value::bind_locked(double* slot, uint64_t generation) {
    slot_.store(slot, std::memory_order_relaxed);
    generation_.store(generation, std::memory_order_release);
}

void Value::rebind() {
    uint64_t generation = 0;
    double* s = identity_->bind(prefix_, key_, memory_, generation);
    slot_.store(s, std::memory_order_relaxed);
    generation_.store(generation, std::memory_order_release);
}

}  // namespace gpe

namespace gpe {

bool Value::set_exemplar(const ExemplarLabels& labels, double value, double timestamp) {
    const size_t bytes = labels.encoded().size();
    ExemplarSlot slot(exemplar_.load(std::memory_order_acquire));
    if (!slot || exemplar_generation_.load(std::memory_order_acquire) != identity_->generation() ||
        slot.capacity() < bytes) {
        uint64_t generation = 0;
        slot = identity_->exemplar_slot(prefix_, key_, bytes, /*create=*/true, generation);
        if (!slot) return false;
        exemplar_.store(slot.record(), std::memory_order_relaxed);
        exemplar_generation_.store(generation, std::memory_order_release);
    }
    return slot.store(labels.encoded(), value, timestamp);
}

std::optional<ExemplarValue> Value::exemplar() {
    ExemplarSlot slot(exemplar_.load(std::memory_order_acquire));
    if (!slot || exemplar_generation_.load(std::memory_order_acquire) != identity_->generation()) {
        uint64_t generation = 0;
        slot = identity_->exemplar_slot(prefix_, key_, 0, /*create=*/false, generation);
    }
    if (!slot) return std::nullopt;
    return slot.load();
}

}  // namespace gpe
