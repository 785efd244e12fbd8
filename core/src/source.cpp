#include "gpe/source.hpp"

namespace gpe {

std::string Source::render(Format format, Diagnostics& diagnostics) {
    Collected collected = collect();
    std::string out;
    gpe::render(collected.result, format, out);
    diagnostics = std::move(collected.result.diagnostics);
    return out;
}

}  // namespace gpe
