// Names of files in the multiprocess directory (anyone who can write there
// chooses them): parse_file_name must say invalid or give parts that lie
// inside the name.
#include <cstdint>

#include "fuzz_util.hpp"
#include "gpe/multiprocess.hpp"
#include "gpe/store_kind.hpp"

namespace {

bool inside(std::string_view part, std::string_view whole) {
    return part.empty() || (part.data() >= whole.data() &&
                            part.data() + part.size() <= whole.data() + whole.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view path = gpe::fuzz::as_view(data, size);
    const gpe::FileName name = gpe::parse_file_name(path);
    if (name.valid) {
        GPE_FUZZ_CHECK(gpe::parse_metric_type(name.type) == name.kind.type);
        GPE_FUZZ_CHECK(inside(name.type, path) && inside(name.mode, path) &&
                       inside(name.store, path) && inside(name.process, path) &&
                       inside(name.pid, path));
    }
    return 0;
}
