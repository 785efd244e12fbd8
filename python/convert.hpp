// Conversions of merge results to Python, and the render/collect calls of
// every source binding (GIL released while the core works).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>

#include "gpe/merge.hpp"
#include "gpe/source.hpp"

namespace nb = nanobind;

// [(name, help, type, [(sample_name, [(label, value), ...], value), ...]), ...]
// for prometheus_client Metric objects built in Python.
nb::list families_to_python(const gpe::MergeResult& result);

// (families, warnings) of what `collect()` returns, called without the GIL.
template <typename Collect>
nb::tuple collected_to_python(Collect&& collect) {
    std::optional<gpe::Collected> collected;
    {
        nb::gil_scoped_release release;
        collected.emplace(collect());
    }
    return nb::make_tuple(families_to_python(collected->result),
                          collected->result.diagnostics.warnings);
}

// (body as bytes, warnings) of source.render(), called without the GIL.
nb::tuple render_to_python(gpe::Source& source, bool openmetrics);
