// Problems that did not stop an operation (a skipped file, a foreign key...),
// collected for the caller to log or show.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "gpe/strings.hpp"

namespace gpe {

struct Diagnostics {
    std::vector<std::string> warnings;
    // Messages name foreign data: they are made valid UTF-8 to be shown anywhere.
    void warn(std::string_view message) { warnings.push_back(valid_utf8(message)); }
};

}  // namespace gpe
