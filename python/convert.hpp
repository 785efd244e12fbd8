#pragma once

#include <nanobind/nanobind.h>

#include "gpe/merge.hpp"

namespace nb = nanobind;

// [(name, help, type, [(sample_name, [(label, value), ...], value), ...]), ...]
// for prometheus_client Metric objects built in Python.
nb::list families_to_python(const gpe::MergeResult& result);
